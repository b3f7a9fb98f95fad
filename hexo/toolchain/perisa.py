"""Functions compiled per ISA: the parts of C whose IR bakes in one ISA's ABI.

`va_arg` lowering and the va_list type (variadic definitions, va_copy, functions taking a
va_list), long double (x87 80-bit on x86-64, IEEE 128-bit on aarch64), functions that call
setjmp, and float _Complex arguments between such code (or the C library) and the rest
cannot share one IR between ISAs. Such functions, and long double globals, are
taken out of the shared IR and compiled from each ISA's own IR of the same source, like the
C library. Each ISA's copy keeps a counter (`hexo_migration_deferred`, kept by the library
OS) raised while its frame is on the stack: a migration request then waits for the first
migration point outside every such frame, so no migration ever has to describe one. The
counter is reset to its entry value at every return and after every return from setjmp, so a
longjmp across such frames leaves it right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import sysroot
from .sysroot import ToolchainError, run
from .targets import TARGETS

DEFER_COUNTER = "hexo_migration_deferred"
RETURNS_TWICE = ("setjmp", "_setjmp", "sigsetjmp", "__sigsetjmp")

_DEFINE = re.compile(r'^define [^@]*@("?[^("]+"?)\(.*?(!dbg (![0-9]+))?\s*\{$', re.M)
_SUBPROGRAM = re.compile(r'^(![0-9]+) = distinct !DISubprogram\(name: "[^"]*".*?file: (![0-9]+)'
                         r'.*?line: ([0-9]+)', re.M)
_FILE = re.compile(r'^(![0-9]+) = !DIFile\(filename: "([^"]*)"', re.M)
_STRUCT = re.compile(r'^(%[-\w.$"]+) = type (.*)$', re.M)
_GLOBAL = re.compile(r'^@("?[^ "]+"?) = ([^\n]*)$', re.M)
_VA_LIST = ("@llvm.va_start", "@llvm.va_copy", "@llvm.va_end", " va_arg ", "__va_list_tag")


@dataclass
class Split:
    """The result: the shared IR, each ISA's object of per-ISA code, and what went there."""
    shared: Path
    objects: dict[str, Path]
    functions: list[dict]           # {"name", "where", "why"}
    globals: list[str]              # long double globals


def _long_double_types(ir: str) -> list[str]:
    """x86_fp80 and every struct type that contains it, directly or through another."""
    found = ["x86_fp80"]
    structs = {m[1]: m[2] for m in _STRUCT.finditer(ir)}
    for _ in range(len(structs) + 1):
        more = [n for n, body in structs.items()
                if n not in found and any(t in body for t in found)]
        if not more:
            break
        found += more
    return found


def _why(body: str, long_double: list[str]) -> str | None:
    if any(v in body for v in _VA_LIST):
        return "handles a va_list"
    if any(re.search(re.escape(t) + r"[\s,*)\]}]", body) for t in long_double):
        return "uses long double"
    if re.search(r"call [^\n]*@(" + "|".join(RETURNS_TWICE) + r")\(", body):
        return "calls setjmp"
    return None


def _float_complex_calls(body: str) -> set[str]:
    """Functions `body` calls with a float _Complex argument or result. x86-64 packs one in
    an SSE register, aarch64 passes two floats: a call between the shared IR and code
    compiled per ISA (or the C library) would hand over the wrong registers."""
    calls = (re.search(r"call [^@\n]*@([-\w.$]+)\(", line)
             for line in body.splitlines() if "<2 x float>" in line)
    return {c[1] for c in calls if c and not c[1].startswith("llvm.")}


def select(ir: str) -> tuple[list[dict], list[str]]:
    """The per-ISA functions of the linked x86-64 IR (name, file:line, reason) and the long
    double globals."""
    files = {m[1]: m[2] for m in _FILE.finditer(ir)}
    lines = {m[1]: f"{files.get(m[2], '?')}:{m[3]}" for m in _SUBPROGRAM.finditer(ir)}
    long_double = _long_double_types(ir)
    defs, whys, complex_calls = {}, {}, {}
    for body in re.split(r"^(?=define )", ir, flags=re.M):
        d = _DEFINE.match(body)
        if not d:
            continue
        name, body = d[1].strip('"'), body[:body.find("\n}\n") + 1 or None]
        defs[name] = lines.get(d[3], "?:0")
        complex_calls[name] = _float_complex_calls(body)
        if why := _why(body, long_double):
            whys[name] = why
    # float _Complex calls must not cross between shared and per-ISA code, either way
    crossing = "passes float _Complex to or from code compiled per ISA or the C library"
    changed = True
    while changed:
        changed = False
        for caller, callees in complex_calls.items():
            for callee in callees:
                if (caller in whys) == (callee in whys) and callee in defs:
                    continue
                moved = callee if caller in whys else caller
                if moved in defs and moved not in whys:
                    whys[moved], changed = crossing, True
    funcs = [{"name": n, "where": w, "why": whys[n]} for n, w in defs.items() if n in whys]
    globs = [g[1].strip('"') for g in _GLOBAL.finditer(ir)
             if not g[2].startswith("external ") and not g[1].startswith('"llvm.')
             and any(re.search(re.escape(t) + r"[\s,*)\]}]", g[2]) for t in long_double)]
    return funcs, globs


def _extract(ir: Path, names: list[str], globs: list[str], out: Path, delete: bool) -> None:
    run(["llvm-extract", "-S", *(["--delete"] if delete else []),
         *[f"--func={n}" for n in names], *[f"--glob={g}" for g in globs], str(ir),
         "-o", str(out)], "separating the code compiled per ISA")


def _declared(ir: str) -> set[str]:
    names = set(re.findall(r'^declare [^@]*@("?[^("]+"?)\(', ir, re.M))
    names |= {m[1] for m in _GLOBAL.finditer(ir) if m[2].startswith("external ")}
    return {n.strip('"') for n in names}


def _defined(ir: str) -> set[str]:
    names = {m[1] for m in _DEFINE.finditer(ir)}
    names |= {m[1] for m in _GLOBAL.finditer(ir) if not m[2].startswith("external ")}
    return {n.strip('"') for n in names}


def mark_declarations(ir: str, names: set[str]) -> str:
    """`ir` with the declarations of `names` carrying the "hexo-per-isa" attribute: the
    live-value pass then knows them for application code, not the C library."""
    def mark(m: re.Match) -> str:
        return m[0] + ' "hexo-per-isa"' if m[1].strip('"') in names else m[0]
    return re.sub(r'^declare [^@\n]*@("?[^("\n]+"?)\(.*$', mark, ir, flags=re.M)


def defer_migration(ir: str) -> str:
    """`ir` with every defined function raising the deferral counter while it runs."""
    out, inside = [], False
    for line in ir.splitlines():
        if line.startswith("define "):
            inside = True
            out += [line,
                    f"  %hexo.defer.entry = load volatile i32, i32* @{DEFER_COUNTER}, align 4",
                    "  %hexo.defer.inside = add i32 %hexo.defer.entry, 1",
                    f"  store volatile i32 %hexo.defer.inside, i32* @{DEFER_COUNTER}, align 4"]
            continue
        if inside and re.match(r"\s+ret\b", line):
            out.append(f"  store volatile i32 %hexo.defer.entry, i32* @{DEFER_COUNTER}, align 4")
        out.append(line)
        if inside and re.search(r"call [^\n]*@(" + "|".join(RETURNS_TWICE) + r")\(", line):
            out.append(f"  store volatile i32 %hexo.defer.inside, i32* @{DEFER_COUNTER}, align 4")
        if line == "}":
            inside = False
    if f"@{DEFER_COUNTER} =" not in ir:
        out.append(f"@{DEFER_COUNTER} = external dso_local global i32, align 4")
    return "\n".join(out) + "\n"


def _extract_own(src: Path, names: list[str], globs: list[str], shared_defs: set[str],
                 out: Path) -> str:
    """One ISA's copy of the per-ISA code from `src`, that ISA's IR of the application. Its
    optimizer may have inlined a static per-ISA helper the other kept, or kept one (or a
    constant table) that the other inlined: what its copy still defines goes in, and so does
    any application symbol the copy uses that the shared IR lacks."""
    text = src.read_text()
    funcs = {m[1].strip('"') for m in _DEFINE.finditer(text)}
    own = {m[1].strip('"'): m[2] for m in _GLOBAL.finditer(text)
           if not m[2].startswith("external ")}
    want = {n for n in names if n in funcs} | {g for g in globs if g in own}
    while True:
        _extract(src, sorted(want & funcs), sorted(want - funcs), out, delete=False)
        part = out.read_text()
        extra = (_declared(part) & (funcs | set(own))) - shared_defs - want
        if not extra:
            return part
        mutable = sorted(g for g in extra if g in own and " constant " not in f" {own[g]} ")
        if mutable:
            raise ToolchainError(f"the functions compiled per ISA use state that only one "
                                 f"ISA's compile has: {', '.join(mutable)} (a hexo defect)")
        want |= extra


def split(linked: Path, ir_of_isa, work: Path) -> Split | None:
    """Take the per-ISA code out of `linked` (the x86-64 IR of the whole application) and
    compile it for every ISA; `ir_of_isa(isa)` gives the linked IR of the same sources for
    another ISA. None when the application has no such code."""
    funcs, globs = select(linked.read_text())
    if not funcs and not globs:
        return None
    names = [f["name"] for f in funcs]
    shared = work / "app-shared.ll"
    _extract(linked, names, globs, shared, delete=True)
    shared.write_text(mark_declarations(shared.read_text(), set(names)))
    shared_defs = _defined(shared.read_text())
    objects = {}
    for isa in TARGETS:
        src = linked if isa == "x86_64" else ir_of_isa(isa)
        part = work / isa / "perisa.ll"
        part.parent.mkdir(exist_ok=True)
        text = _extract_own(src, names, globs, shared_defs, part)
        part.write_text(defer_migration(text))
        obj = part.with_suffix(".o")
        run(["llc", "-O2", "-filetype=obj", f"-mtriple={TARGETS[isa].llc_triple}",
             *TARGETS[isa].llc_flags, "-relocation-model=static", "-function-sections",
             "-data-sections", "--fp-contract=off", str(part), "-o", str(obj)],
            f"generating {isa} code of the functions compiled per ISA")
        objects[isa] = obj
    return Split(shared, objects, funcs, globs)


def compile_for(sources: list[Path], isa: str, flags: list[str], work: Path) -> Path:
    """The linked IR of `sources` compiled for `isa` (the same flags as the shared IR)."""
    sr = sysroot.ensure(isa)
    lls = []
    for i, src in enumerate(sources):
        ll = work / isa / f"{i}-{src.stem}.ll"
        ll.parent.mkdir(exist_ok=True)
        run(["clang", *sr.cflags(), *flags, "-S", "-emit-llvm", str(src), "-o", str(ll)],
            f"compiling {src} for {isa}")
        lls.append(str(ll))
    linked = work / isa / "app-own.ll"
    run(["llvm-link", "-S", *lls, "-o", str(linked)], f"linking the {isa} application IR")
    return linked
