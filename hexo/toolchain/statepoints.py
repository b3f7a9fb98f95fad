"""Make an application's IR migratable: statepoints with live values at every call site that
can lead to a migration point.

A migration resumes a frame at the return address of one of its calls, so the compiler must
say, for that return address, where every value still needed afterwards lives. LLVM 14 gives
exactly that for `llvm.experimental.gc.statepoint` calls with the values in a "deopt" operand
bundle (a plain stackmap after the call describes a later PC; see ENVIRONMENT.md). This pass
works on the textual IR of the linked application, before it is retargeted, so both ISAs
compile the same statepoints with the same ids and the same values in the same order.

Rules (docs/formats.md, section 4, repeats them for users):
- Migration points are calls to `void hexo_check_migrate(void)`, placed by hand or, with
  `auto_points`, at the entry of every defined function.
- A function *reaches* a migration point when it calls hexo_check_migrate, calls a function
  that reaches one, or makes an indirect call while some address-taken function reaches one
  (every indirect call may target every address-taken function: no type filtering, because
  C code casts function pointers freely). Only call sites in reaching functions whose callee
  may reach are rewritten; library (declared) functions never reach one.
- Variadic-typed calls are never rewritten: LLVM 14 refuses statepoints around non-void
  variadic callees and loses the x86-64 vector-register count for void ones. Application
  variadic definitions are refused anyway (build.check_portable), so such a call can only
  reach library code, except an unprototyped call or an indirect variadic call while an
  address-taken function reaches a migration point: those are rejected with their location.
- Also rejected on a path to a migration point: setjmp (returns_twice), variable-length
  arrays and alloca(), musttail/invoke/callbr, operand bundles, and passing a reaching
  function to library code (qsort comparators, atexit, constructors): library frames would
  sit between application frames at the migration point.
- Live values: block-level backward dataflow over SSA values; a value is live after a call
  when some path from the call uses it. Each travels through a stack slot of its own across
  the call (`_Slots`), one slot per scalar part of an aggregate, so the record names the one
  place the code reads it from afterwards. Stack objects (static allocas) are recorded when
  they may be within their lifetime (forward dataflow over lifetime markers), so two objects
  that codegen may fold into one slot never appear at the same site.
- Every statepoint ends its IR block (`_retarget_phis`), so instruction selection cannot
  share a machine value across it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MIGRATION_POINT = "hexo_check_migrate"
GC_STRATEGY = "statepoint-example"
_SETJMP = {"setjmp", "_setjmp", "__setjmp", "sigsetjmp", "__sigsetjmp", "savectx", "vfork",
           "getcontext"}


class MigratableError(Exception):
    """The program cannot be made migratable; the message lists every reason with its
    source location."""


# --- tokens --------------------------------------------------------------------------------

_TOKEN = re.compile(r'''
    (?P<lvar>%"[^"]*"|%[-a-zA-Z$._0-9]+)
  | (?P<gvar>@"[^"]*"|@[-a-zA-Z$._0-9]+)
  | (?P<meta>!"[^"]*"|![-a-zA-Z$._0-9]*)
  | (?P<group>\#[0-9]+)
  | (?P<str>c?"[^"]*")
  | (?P<word>[-a-zA-Z$._0-9+]+)
  | (?P<punct>\.\.\.|[()\[\]{}<>,=*:])
  | (?P<ws>\s+|;.*)
''', re.X)


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str


def tokenize(text: str) -> list[Tok]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise MigratableError(f"cannot read IR near: {text[pos:pos + 40]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append(Tok(m.lastgroup, m[0]))
    return out


def _text(toks: list[Tok]) -> str:
    out = ""
    for t in toks:
        if out and not (t.text in ",)]}>*" or out[-1] in "([{<"):
            out += " "
        out += t.text
    return out


# --- types ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Type:
    kind: str                      # int float ptr void named struct array vector func other
    name: str = ""                 # iN/double..., the %name of a named struct
    elems: tuple = ()              # struct members, array/vector element, func ret + params
    count: int = 0                 # array/vector length, int bits, pointer address space
    packed: bool = False
    vararg: bool = False

    def __str__(self) -> str:
        k = self.kind
        if k == "ptr":
            space = f" addrspace({self.count})" if self.count else ""
            return f"{self.elems[0]}{space}*"
        if k == "struct":
            body = "{ " + ", ".join(map(str, self.elems)) + " }" if self.elems else "{}"
            return f"<{body}>" if self.packed else body
        if k == "array":
            return f"[{self.count} x {self.elems[0]}]"
        if k == "vector":
            return f"<{self.count} x {self.elems[0]}>"
        if k == "func":
            params = [str(p) for p in self.elems[1:]] + (["..."] if self.vararg else [])
            return f"{self.elems[0]} ({', '.join(params)})"
        return self.name

    def mangle(self) -> str:
        """The suffix LLVM expects in an overloaded intrinsic's name for this type."""
        k = self.kind
        if k == "ptr":
            return f"p{self.count}" + self.elems[0].mangle()
        if k == "array":
            return f"a{self.count}" + self.elems[0].mangle()
        if k == "named":
            return "s_" + self.name[1:].strip('"') + "s"
        if k == "struct":
            return "sl_" + "".join(e.mangle() for e in self.elems) + "s"
        if k == "vector":
            return f"v{self.count}" + self.elems[0].mangle()
        if k == "func":
            return ("f_" + "".join(e.mangle() for e in self.elems)
                    + ("vararg" if self.vararg else "") + "f")
        if k == "void":
            return "isVoid"
        return {"half": "f16", "bfloat": "bf16", "float": "f32", "double": "f64",
                "x86_fp80": "f80", "fp128": "f128"}.get(self.name, self.name)


_FLOATS = {"half", "bfloat", "float", "double", "x86_fp80", "fp128", "ppc_fp128"}
VOID = Type("void", "void")


def parse_type(toks: list[Tok], i: int) -> tuple[Type, int]:
    t = toks[i]
    if t.kind == "lvar":
        ty, i = Type("named", t.text), i + 1
    elif t.text == "{" or (t.text == "<" and toks[i + 1].text == "{"):
        packed = t.text == "<"
        i += 2 if packed else 1
        elems = []
        while toks[i].text != "}":
            e, i = parse_type(toks, i)
            elems.append(e)
            if toks[i].text == ",":
                i += 1
        i += 2 if packed else 1
        ty = Type("struct", elems=tuple(elems), packed=packed)
    elif t.text in ("[", "<"):
        n = int(toks[i + 1].text)
        e, i = parse_type(toks, i + 3)
        ty, i = Type("array" if t.text == "[" else "vector", elems=(e,), count=n), i + 1
    elif t.kind == "word":
        w = t.text
        if re.fullmatch(r"i[0-9]+", w):
            ty = Type("int", w, count=int(w[1:]))
        elif w in _FLOATS:
            ty = Type("float", w)
        elif w == "void":
            ty = VOID
        elif w == "ptr":
            ty = Type("ptr", "ptr", (Type("int", "i8", count=8),))
        else:
            ty = Type("other", w)
        i += 1
    else:
        raise MigratableError(f"expected a type, found {t.text!r}")
    while i < len(toks):
        t = toks[i]
        if t.text == "*":
            ty, i = Type("ptr", elems=(ty,)), i + 1
        elif t.text == "addrspace" and toks[i + 4 - 1].text == ")" and toks[i + 4].text == "*":
            ty, i = Type("ptr", elems=(ty,), count=int(toks[i + 2].text)), i + 5
        elif t.text == "(":
            i += 1
            params, vararg = [], False
            while toks[i].text != ")":
                if toks[i].text == "...":
                    vararg, i = True, i + 1
                else:
                    p, i = parse_type(toks, i)
                    params.append(p)
                if toks[i].text == ",":
                    i += 1
            ty, i = Type("func", elems=(ty, *params), vararg=vararg), i + 1
        else:
            break
    return ty, i


class Layout:
    """Sizes and alignments of IR types (the x86-64 data layout the shared IR is made for;
    aarch64 agrees on every type that passes build.check_portable)."""

    def __init__(self, named: dict[str, Type]):
        self.named = named

    def size_align(self, ty: Type) -> tuple[int, int]:
        k = ty.kind
        if k == "int":
            store = (ty.count + 7) // 8
            align = min(8, 1 << max(0, (store - 1).bit_length()))
            return -(-store // align) * align, align
        if k == "float":
            return {"half": (2, 2), "bfloat": (2, 2), "float": (4, 4), "double": (8, 8),
                    "x86_fp80": (16, 16), "fp128": (16, 16)}.get(ty.name, (16, 16))
        if k == "ptr":
            return 8, 8
        if k == "named":
            if ty.name not in self.named:
                raise MigratableError(f"size of opaque type {ty.name} is unknown")
            return self.size_align(self.named[ty.name])
        if k == "array":
            s, a = self.size_align(ty.elems[0])
            return s * ty.count, a
        if k == "vector":
            s = self.store_size(ty.elems[0]) * ty.count
            a = 1 << max(0, (s - 1).bit_length())
            return -(-s // a) * a, a
        if k == "struct":
            off, top = 0, 1
            for e in ty.elems:
                s, a = self.size_align(e)
                a = 1 if ty.packed else a
                off = -(-off // a) * a + s
                top = max(top, a)
            return -(-off // top) * top, top
        raise MigratableError(f"size of type {ty} is unknown")

    def store_size(self, ty: Type) -> int:
        if ty.kind == "int":
            return (ty.count + 7) // 8
        if ty.kind == "vector":
            return self.store_size(ty.elems[0]) * ty.count
        return self.size_align(ty)[0]


# --- module structure ----------------------------------------------------------------------

@dataclass
class Instr:
    line: int                       # index of its (first) line in the module
    toks: list[Tok]
    name: str | None                # the value it defines
    op: str
    dbg: str | None = None          # its !DILocation
    span: int = 1                   # lines it occupies


@dataclass
class Block:
    label: str
    instrs: list[Instr] = field(default_factory=list)

    def succs(self) -> list[str]:
        last = self.instrs[-1]
        return [last.toks[j + 1].text for j, t in enumerate(last.toks)
                if t.text == "label" and j + 1 < len(last.toks)]


@dataclass
class Function:
    name: str
    header: int                     # line index of "define ... {"
    end: int                        # line index of "}"
    params: list[tuple[str, Type]]
    blocks: list[Block]
    dbg: str | None

    def instrs(self):
        for b in self.blocks:
            yield from b.instrs


_DEF = re.compile(r"^\s*(%\"[^\"]*\"|%[-a-zA-Z$._0-9]+)\s*=\s*")
_LABEL = re.compile(r'^("[^"]*"|[-a-zA-Z$._0-9]+):(\s*;.*)?$')


def _opcode(toks: list[Tok], start: int) -> str:
    w = toks[start].text if start < len(toks) else ""
    return "call" if w in ("tail", "musttail", "notail") else w


def _global_name(tok: str) -> str:
    return tok[1:].strip('"')


def parse_function(lines: list[str], start: int) -> Function:
    htoks = tokenize(lines[start])
    i = 1
    while htoks[i].kind != "gvar":
        i += 1
    name = _global_name(htoks[i].text)
    j, params = i + 2, []
    while htoks[j].text != ")":
        if htoks[j].text == "...":
            j += 1
        else:
            ty, j = parse_type(htoks, j)
            depth = 0
            while not (depth == 0 and htoks[j].text in (",", ")")):
                depth += htoks[j].text in "([{<"
                depth -= htoks[j].text in ")]}>"
                if depth == 0 and htoks[j].kind == "lvar":
                    params.append((htoks[j].text, ty))
                j += 1
        if htoks[j].text == ",":
            j += 1
    dbg = None
    for k, t in enumerate(htoks):
        if t.text == "!dbg":
            dbg = htoks[k + 1].text
    numbered = [int(p[1:]) for p, _ in params if p[1:].isdigit()]
    entry = f"%{max(numbered) + 1 if numbered else 0}"
    blocks = [Block(entry)]
    k = start + 1
    while lines[k] != "}":
        text = lines[k].strip()
        if not text or text.startswith(";"):
            k += 1
            continue
        lm = _LABEL.match(text)
        if lm:
            label = "%" + lm[1]
            if blocks[-1].instrs:
                blocks.append(Block(label))
            else:
                blocks[-1].label = label
            k += 1
            continue
        n, toks = 1, tokenize(text)
        while sum((t.text == "[") - (t.text == "]") for t in toks) > 0:
            toks += tokenize(lines[k + n])
            n += 1
        dm = _DEF.match(text)
        iname = dm[1] if dm else None
        toks, attached = _strip_metadata(toks)
        blocks[-1].instrs.append(Instr(k, toks, iname, _opcode(toks, 2 if iname else 0),
                                       attached.get("!dbg"), n))
        k += n
    return Function(name, start, k, params, blocks, dbg)


def _strip_metadata(toks: list[Tok]) -> tuple[list[Tok], dict[str, str]]:
    """An instruction's tokens without its trailing `, !kind !N` attachments."""
    depth = 0
    for k, t in enumerate(toks):
        depth += t.text in "([{<"
        depth -= t.text in ")]}>"
        if depth == 0 and t.text == "," and k + 1 < len(toks) and toks[k + 1].kind == "meta":
            rest = toks[k + 1:]
            return toks[:k], {rest[j].text: rest[j + 1].text for j in range(0, len(rest) - 1, 3)}
    return toks, {}


@dataclass
class Call:
    """A parsed call instruction."""
    instr: Instr
    tail: str                       # "", "tail", "musttail", "notail"
    cc: list[Tok]                   # calling convention tokens
    ret: Type
    fnty: Type                      # the call's function type
    callee: list[Tok]
    args: list[list[Tok]]           # each: type, attributes, value
    direct: str | None              # name of a directly called global
    bundles: bool
    group: str | None               # "#N" of call-site attributes
    dbg: str | None


_CC = {"ccc", "fastcc", "coldcc", "cc", "webkit_jscc", "anyregcc", "preserve_mostcc",
       "preserve_allcc", "swiftcc", "swifttailcc", "cfguard_checkcc", "tailcc"}
_FMF = {"fast", "nnan", "ninf", "nsz", "arcp", "contract", "afn", "reassoc"}
_RETATTR = {"noundef", "zeroext", "signext", "inreg", "noalias", "nonnull", "dereferenceable",
            "dereferenceable_or_null", "align"}


def _split_top(toks: list[Tok], i: int, close: str) -> tuple[list[list[Tok]], int]:
    """The comma-separated groups from toks[i] up to the matching `close`."""
    groups, cur, depth = [], [], 0
    while True:
        t = toks[i]
        if depth == 0 and t.text == close:
            if cur:
                groups.append(cur)
            return groups, i + 1
        if depth == 0 and t.text == ",":
            groups.append(cur)
            cur = []
        else:
            depth += t.text in "([{<"
            depth -= t.text in ")]}>"
            cur.append(t)
        i += 1


def parse_call(ins: Instr) -> Call:
    toks = ins.toks
    i = 2 if ins.name else 0
    tail = ""
    if toks[i].text in ("tail", "musttail", "notail"):
        tail, i = toks[i].text, i + 1
    i += 1                                                      # "call"
    while toks[i].text in _FMF:
        i += 1
    cc = []
    if toks[i].text in _CC:
        cc.append(toks[i])
        i += 1
        if cc[0].text == "cc":
            cc.append(toks[i])
            i += 1
    while toks[i].text in _RETATTR:
        i += 1
        if toks[i].text == "(":
            i += 3
        elif toks[i - 1].text == "align":
            i += 1
    if toks[i].text == "addrspace":
        i += 4
    ty, i = parse_type(toks, i)
    start = i
    if toks[i].kind == "word" and toks[i + 1].text == "(":     # a constant expression
        _, i = _split_top(toks, i + 2, ")")
    while toks[i].text != "(":
        i += 1
    callee = toks[start:i]
    args, i = _split_top(toks, i + 1, ")")
    group, bundles = None, False
    while i < len(toks):
        t = toks[i]
        if t.kind == "group":
            group = t.text
        elif t.text == "[":
            bundles = True
        i += 1
    if ty.kind == "func":
        fnty = ty
    else:
        fnty = Type("func", elems=(ty, *[parse_type(a, 0)[0] for a in args]))
    direct = None
    if len(callee) == 1 and callee[0].kind == "gvar":
        direct = _global_name(callee[0].text)
    elif callee and callee[0].text in ("bitcast", "addrspacecast"):
        g = [t for t in callee if t.kind == "gvar"]
        direct = _global_name(g[0].text) if len(g) == 1 else None
    return Call(ins, tail, cc, fnty.elems[0], fnty, callee, args, direct, bundles, group,
                ins.dbg)


# --- debug locations -----------------------------------------------------------------------

_META = re.compile(r"^(![0-9]+) = (?:distinct )?!(DI[A-Za-z]+)\((.*)\)\s*$")
_FIELD = re.compile(r'(\w+): ("(?:[^"\\]|\\.)*"|[^,]+)')


class DebugInfo:
    """Source locations from -gline-tables-only metadata."""

    def __init__(self, lines: list[str]):
        self.nodes: dict[str, tuple[str, dict[str, str]]] = {}
        self.next_id = 0
        for line in lines:
            if not line.startswith("!"):
                continue
            m = _META.match(line)
            if m:
                self.nodes[m[1]] = (m[2], {k: v.strip() for k, v in _FIELD.findall(m[3])})
            n = re.match(r"^!([0-9]+) =", line)
            if n:
                self.next_id = max(self.next_id, int(n[1]) + 1)

    def file_of(self, scope: str | None) -> str:
        seen = 0
        while scope and scope in self.nodes and seen < 64:
            kind, f = self.nodes[scope]
            if "file" in f and f["file"] in self.nodes:
                return self.nodes[f["file"]][1].get("filename", "?").strip('"')
            scope, seen = f.get("scope"), seen + 1
        return "?"

    def where(self, dbg: str | None, fallback: str | None = None) -> tuple[str, int]:
        """(file, line) of a !DILocation or !DISubprogram reference."""
        for ref in (dbg, fallback):
            if ref in self.nodes:
                kind, f = self.nodes[ref]
                scope = f.get("scope") if kind == "DILocation" else ref
                return self.file_of(scope), int(f.get("line", "0"))
        return "?", 0


# --- the pass ------------------------------------------------------------------------------

@dataclass
class LiveValue:
    ir: str                 # IR value (with a field path for parts of aggregates)
    type: str               # "int", "float", "pointer", "vector" or "alloca"
    ir_type: str
    size: int               # bytes of the value (allocas: of the pointer)
    alloca_size: int = 0    # bytes of the stack object
    slot: bool = False      # the record locates the stack slot the value travels through

    def as_dict(self) -> dict:
        d = {"type": self.type, "ir_type": self.ir_type, "size": self.size, "ir": self.ir}
        if self.type == "alloca":
            d["alloca_size"] = self.alloca_size
        if self.slot:
            d["slot"] = True
        return d


@dataclass
class Site:
    id: int
    function: str
    callee: str             # a function name, or "<indirect>"
    file: str
    line: int
    values: list[LiveValue]

    def as_dict(self) -> dict:
        return {"id": self.id, "function": self.function, "callee": self.callee,
                "source": f"{self.file.rsplit('/', 1)[-1]}:{self.line}",
                "values": [v.as_dict() for v in self.values]}


@dataclass
class Result:
    ir: str
    sites: list[Site]
    reaching: list[str]     # functions that can reach a migration point

    def side_table(self) -> dict:
        return {"sites": [s.as_dict() for s in self.sites], "reaching": self.reaching}


def _insert_auto_points(lines: list[str], dbg: DebugInfo, skip: set[str]) -> list[str]:
    """A call to hexo_check_migrate after the static allocas of every function's entry,
    except in functions in `skip`."""
    out, extra = [], []
    declared = any(re.match(rf"^declare .*@{MIGRATION_POINT}\(", ln) for ln in lines)
    k = 0
    while k < len(lines):
        line = lines[k]
        out.append(line)
        k += 1
        if not (line.startswith("define ") and line.endswith("{")):
            continue
        name = _global_name(next(t.text for t in tokenize(line) if t.kind == "gvar"))
        if name in skip:
            continue
        sp = re.search(r"!dbg (![0-9]+)", line)
        while lines[k].strip() == "" or _LABEL.match(lines[k].strip()) \
                or re.match(r"^\s*%\S+ = alloca ", lines[k]):
            out.append(lines[k])
            k += 1
        loc = ""
        if sp and sp[1] in dbg.nodes:
            node = f"!{dbg.next_id}"
            dbg.next_id += 1
            extra.append(f"{node} = !DILocation(line: {dbg.nodes[sp[1]][1].get('line', '0')}, "
                         f"scope: {sp[1]})")
            loc = f", !dbg {node}"
        out.append(f"  call void @{MIGRATION_POINT}(){loc}")
    if not declared:
        out.append(f"declare void @{MIGRATION_POINT}()")
    return out + extra


def instrument(ir: str, auto_points: bool = False) -> Result:
    """Rewrite the linked application IR; raises MigratableError listing what cannot be
    made migratable. Automatic points are not put into functions that library code calls
    back (qsort comparators...), which cannot host a migration point."""
    lines = ir.split("\n")
    dbg = DebugInfo(lines)
    if auto_points:
        skip = _Pass(lines, dbg).library_callbacks()
        lines = _insert_auto_points(lines, dbg, set(skip))
        dbg = DebugInfo(lines)
    return _Pass(lines, dbg).run()


class _Pass:
    def __init__(self, lines: list[str], dbg: DebugInfo):
        self.lines = lines
        self.dbg = dbg
        self.named: dict[str, Type] = {}
        self.funcs: dict[str, Function] = {}
        self.declared: dict[str, str] = {}          # name -> attribute group
        self.groups: dict[str, str] = {}
        self.problems: list[str] = []
        k = 0
        while k < len(lines):
            line = lines[k]
            if line.startswith("define "):
                f = parse_function(lines, k)
                self.funcs[f.name] = f
                k = f.end
            elif line.startswith("declare "):
                self._declare(line)
            elif line.startswith("attributes #"):
                g, body = line[len("attributes "):].split(" = ", 1)
                self.groups[g] = body
            elif line.startswith("%") and " = type " in line:
                name, body = line.split(" = type ", 1)
                if body.strip() != "opaque":
                    self.named[name] = parse_type(tokenize(body), 0)[0]
            k += 1
        self.layout = Layout(self.named)
        self.calls: dict[str, list[Call]] = {}
        self.addr_taken: set[str] = set()
        for f in self.funcs.values():
            self.calls[f.name] = []
            for ins in f.instrs():
                callee_pos = None
                if ins.op == "call":
                    c = parse_call(ins)
                    self.calls[f.name].append(c)
                    if c.direct:
                        callee_pos = [id(t) for t in c.callee]
                for t in ins.toks:
                    if t.kind == "gvar" and (callee_pos is None or id(t) not in callee_pos):
                        self.addr_taken.add(_global_name(t.text))
        for line in self.lines:
            if line.startswith("@"):
                for t in tokenize(line.split("=", 1)[1]):
                    if t.kind == "gvar":
                        self.addr_taken.add(_global_name(t.text))

    def library_callbacks(self) -> dict[str, str]:
        """Application functions that library code may call: name -> where it is handed
        over (passed to a declared function, or a constructor/destructor)."""
        out = {}
        for name, cs in self.calls.items():
            f = self.funcs[name]
            for c in cs:
                if c.direct in self.declared and not c.direct.startswith("llvm."):
                    for a in c.args:
                        for t in a:
                            g = _global_name(t.text) if t.kind == "gvar" else None
                            if g in self.funcs or g == MIGRATION_POINT:
                                out.setdefault(g, f"{self.where(f, c.dbg)}: passes '{g}' to "
                                                  f"library function '{c.direct}'")
        for line in self.lines:
            if line.startswith(("@llvm.global_ctors", "@llvm.global_dtors")):
                for t in tokenize(line):
                    g = _global_name(t.text) if t.kind == "gvar" else None
                    if g in self.funcs:
                        out.setdefault(g, f"'{g}' is a constructor or destructor")
        return out

    def _declare(self, line: str) -> None:
        toks = tokenize(line)
        g = next(j for j, t in enumerate(toks) if t.kind == "gvar")
        self.declared[_global_name(toks[g].text)] = next(
            (t.text for t in toks[g:] if t.kind == "group"), "")

    def where(self, f: Function, dbgref: str | None) -> str:
        file, line = self.dbg.where(dbgref, f.dbg)
        return f"{file}:{line}: function '{f.name}'"

    # call graph ---------------------------------------------------------------------------
    def run(self) -> Result:
        calls, addr_taken = self.calls, self.addr_taken
        targets = {MIGRATION_POINT}
        indirect_ok = False
        changed = True
        while changed:
            changed = False
            indirect_ok = bool(addr_taken & targets)
            for name, cs in calls.items():
                if name in targets:
                    continue
                if any(self._may_reach(c, targets, indirect_ok) for c in cs):
                    targets.add(name)
                    changed = True
        reaching = [n for n in self.funcs if n in targets]
        self._reject(calls, reaching, targets, indirect_ok)
        if self.problems:
            raise MigratableError("cannot be made migratable for cross-ISA migration:\n  "
                                  + "\n  ".join(self.problems))
        out = list(self.lines)
        sites: list[Site] = []
        fnty_decls: dict[str, Type] = {}
        result_decls: dict[str, Type] = {}
        for name in reaching:
            f = self.funcs[name]
            chosen = [c for c in calls[name] if self._may_reach(c, targets, indirect_ok)
                      and not c.fnty.vararg]
            if not chosen:
                continue
            live = Liveness(f, self.layout, self.named)
            slots = _Slots(f, live, self.named)
            block_of = {ins.line: b for b in f.blocks for ins in b.instrs}
            last_piece: dict[str, str] = {}
            for c in sorted(chosen, key=lambda c: c.instr.line):
                site_id = len(sites) + 1
                objects, operands, values = live.at(c.instr)
                before, slot_operands, slot_values, after = slots.around(site_id, values)
                file, line = self.dbg.where(c.dbg, f.dbg)
                callee = c.direct or "<indirect>"
                sites.append(Site(site_id, f.name, callee, file, line, objects + slot_values))
                piece = f"hexo.after.{site_id}"
                new = (before + self._statepoint(c, site_id, operands + slot_operands,
                                                 fnty_decls, result_decls)
                       + [f"  br label %{piece}", f"{piece}:"] + after)
                last_piece[block_of[c.instr.line].label] = f"%{piece}"
                out[c.instr.line] = "\n".join(new)
            slots.rewrite(out)
            _retarget_phis(f, last_piece, out)
            out[f.header] = _with_gc(out[f.header])
        for m, fnty in fnty_decls.items():
            out.append(f"declare token @{_quote(f'llvm.experimental.gc.statepoint.{m}')}"
                       f"(i64, i32, {fnty}*, i32, i32, ...)")
        for m, ret in result_decls.items():
            out.append(f"declare {ret} @{_quote(f'llvm.experimental.gc.result.{m}')}(token)")
        return Result("\n".join(out), sites, reaching)

    def _may_reach(self, c: Call, targets: set[str], indirect_ok: bool) -> bool:
        if c.direct is not None:
            return c.direct in targets
        if c.callee and c.callee[0].text == "asm":
            return False
        return indirect_ok

    def _reject(self, calls, reaching, targets, indirect_ok) -> None:
        for name in reaching:
            f = self.funcs[name]
            for b_index, b in enumerate(f.blocks):
                for ins in b.instrs:
                    where = self.where(f, ins.dbg)
                    if ins.op == "alloca" and (b_index or not _static_alloca(ins)):
                        self.problems.append(f"{where}: variable-length array or alloca() in a "
                                             f"function on a path to a migration point")
                    elif ins.op in ("invoke", "callbr"):
                        self.problems.append(f"{where}: {ins.op} on a path to a migration point")
            for c in calls[name]:
                where = self.where(f, c.dbg)
                callee = c.direct or ""
                groups = self.groups.get(c.group or "", "") + self.groups.get(
                    self.declared.get(callee, ""), "")
                if callee in _SETJMP or "returns_twice" in groups:
                    self.problems.append(f"{where}: calls {callee or 'a function'}, which returns "
                                         f"twice like setjmp, on a path to a migration point")
                    continue
                if callee == "llvm.stacksave":
                    self.problems.append(f"{where}: variable-length array on a path to a "
                                         f"migration point")
                if not self._may_reach(c, targets, indirect_ok):
                    continue
                if c.fnty.vararg:
                    what = (f"unprototyped call of '{callee}'" if callee
                            else "indirect call through a variadic or unprototyped pointer")
                    self.problems.append(f"{where}: {what} may reach a migration point; give "
                                         f"the function a prototype")
                elif c.tail == "musttail" or c.bundles:
                    self.problems.append(f"{where}: musttail call or operand bundle on a path to "
                                         f"a migration point")
        for name, how in self.library_callbacks().items():
            if name in targets:
                self.problems.append(f"{how}, which reaches a migration point (library frames "
                                     f"cannot be migrated)")

    def _statepoint(self, c: Call, site_id: int, operands: list[str], fnty_decls,
                    result_decls) -> list[str]:
        fnty = c.fnty
        m = Type("ptr", elems=(fnty,)).mangle()
        fnty_decls[m] = fnty
        cc = (" " + " ".join(t.text for t in c.cc)) if c.cc else ""
        tok = f"%hexo.sp.{site_id}"
        args = "".join(f", {_text(a)}" for a in c.args)
        dbg = f", !dbg {c.dbg}" if c.dbg else ""
        deopt = ", ".join(operands)
        out = [f"  {tok} = call{cc} token (i64, i32, {fnty}*, i32, i32, ...) "
               f"@{_quote(f'llvm.experimental.gc.statepoint.{m}')}(i64 {site_id}, i32 0, "
               f"{fnty}* {_text(c.callee)}, i32 {len(c.args)}, i32 0{args}, i32 0, i32 0) "
               f"[ \"deopt\"({deopt}) ]{dbg}"]
        if c.instr.name:
            rm = c.ret.mangle()
            result_decls[rm] = c.ret
            out.append(f"  {c.instr.name} = call {c.ret} "
                       f"@{_quote(f'llvm.experimental.gc.result.{rm}')}(token {tok}){dbg}")
        return out


class _Slots:
    """Every SSA value live across a statepoint travels through a stack slot of its own:
    stored before the call, reloaded after it, and the record locates the slot. Left to
    itself the register allocator may keep a value in a callee-saved register and a spill
    slot at once, or reload it later from a copy no record names; going through memory at
    every statepoint leaves one location per value, the one the transform rewrites.

    The pass demotes each such value to a variable (store after its definition, load before
    each use); `opt -mem2reg` then rebuilds SSA form, with the reloaded values flowing to
    every use after a statepoint."""

    def __init__(self, f: Function, live: "Liveness", named: dict[str, Type]):
        self.f, self.live, self.named = f, live, named
        self.index: dict[str, int] = {}
        self.slots: dict[str, Type] = {}

    def _var(self, v: str) -> tuple[str, Type]:
        j = self.index.setdefault(v, len(self.index))
        return f"%hexo.var.{j}", self.live.type_of(v)

    def around(self, site_id: int, values: list[str]):
        """Code before the statepoint, its slot operands and live values, code after it."""
        before, operands, described, after = [], [], [], []
        for v in values:
            var, ty = self._var(v)
            j = self.index[v]
            cur = f"%hexo.cur.{site_id}.{j}"
            before.append(f"  {cur} = load {ty}, {ty}* {var}")
            agg = "undef"
            for k, (path, leaf) in enumerate(_leaves(ty, self.named)):
                slot = f"%hexo.slot.{j}.{k}"
                self.slots[slot] = leaf
                part = cur
                if path:
                    part = f"%hexo.part.{site_id}.{j}.{k}"
                    before.append(f"  {part} = extractvalue {ty} {cur}, "
                                  f"{', '.join(map(str, path))}")
                before.append(f"  store {leaf} {part}, {leaf}* {slot}")
                operands.append(f"{leaf}* {slot}")
                described.append(LiveValue(v + "".join(f".{p}" for p in path), _category(leaf),
                                           str(leaf), self.live.layout.store_size(leaf),
                                           slot=True))
                back = f"%hexo.back.{site_id}.{j}.{k}"
                after.append(f"  {back} = load {leaf}, {leaf}* {slot}")
                if path:
                    nxt = f"%hexo.agg.{site_id}.{j}.{k}"
                    after.append(f"  {nxt} = insertvalue {ty} {agg}, {leaf} {back}, "
                                 f"{', '.join(map(str, path))}")
                    agg = nxt
                else:
                    agg = back
            after.append(f"  store {ty} {agg}, {ty}* {var}")
        return before, operands, described, after

    def rewrite(self, out: list[str]) -> None:
        """Demote the routed values: variables and slots in the entry block, a store after
        each definition, a load before each use (for phis: at the end of the predecessor).
        Uses are rewritten first, so that the stores keep naming the defined values."""
        if not self.index:
            return
        f, live = self.f, self.live
        names = {v: re.compile(re.escape(v) + r"(?![-a-zA-Z$._0-9])") for v in self.index}
        incoming_pairs = {v: re.compile(r"\[\s*" + re.escape(v) + r'\s*,\s*(%[-\w$."]+)\s*\]')
                          for v in self.index}
        entry = [f"  %hexo.var.{j} = alloca {live.type_of(v)}" for v, j in self.index.items()]
        entry += [f"  {slot} = alloca {ty}" for slot, ty in self.slots.items()]
        params = dict(f.params)
        loads = 0

        def load(v: str) -> tuple[str, str]:
            nonlocal loads
            loads += 1
            var, ty = self._var(v)
            return f"%hexo.use.{loads}", f"  %hexo.use.{loads} = load {ty}, {ty}* {var}"

        terminators = {b.label: b.instrs[-1] for b in f.blocks}
        for b in f.blocks:
            for ins in b.instrs:
                if ins.op == "phi":
                    for v, pair in incoming_pairs.items():
                        def incoming(m, v=v):
                            name, code = load(v)
                            term = terminators[live._block_name(m[1])]
                            out[term.line] = code + "\n" + out[term.line]
                            return f"[ {name}, {m[1]} ]"
                        out[ins.line] = pair.sub(incoming, out[ins.line])
                    continue
                for v in sorted(live._uses[id(ins)] & self.index.keys()):
                    name, code = load(v)
                    out[ins.line] = code + "\n" + names[v].sub(name, out[ins.line])
        for v in self.index:
            var, ty = self._var(v)
            store = f"  store {ty} {v}, {ty}* {var}"
            if v in params:
                entry.append(store)
                continue
            ins = live.defs[v]
            if ins.op == "phi":
                block = next(b for b in f.blocks if ins in b.instrs)
                first = next(i for i in block.instrs if i.op != "phi")
                out[first.line] = store + "\n" + out[first.line]
            else:
                last = ins.line + ins.span - 1
                out[last] = out[last] + "\n" + store
        first = f.blocks[0].instrs[0].line
        out[first] = "\n".join(entry) + "\n" + out[first]


def _retarget_phis(f: Function, last_piece: dict[str, str], out: list[str]) -> None:
    """Every statepoint ends its block, so that instruction selection, which works one block
    at a time, cannot share a machine value (such as a materialized constant address) across
    it: such a value would live in a register no record describes. The successors' phis
    must then name the last piece of a split block instead of its original label."""
    by_label = {b.label: b for b in f.blocks}
    for label, piece in last_piece.items():
        pattern = re.compile(rf"(,\s*){re.escape(label)}(\s*\])")
        for succ in set(by_label[label].succs()):
            for ins in by_label[succ].instrs:
                if ins.op != "phi":
                    break
                out[ins.line] = pattern.sub(rf"\g<1>{piece}\g<2>", out[ins.line])


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[-a-zA-Z$._0-9]+", name) else f'"{name}"'


def _with_gc(header: str) -> str:
    if " gc " in header:
        return header
    m = re.search(r"( !\w+ ![0-9]+)*\s*\{$", header)
    return header[:m.start()] + f' gc "{GC_STRATEGY}"' + header[m.start():]


def _static_alloca(ins: Instr) -> bool:
    """`alloca T[, iN <constant>][, align A]`: a fixed-size object."""
    groups, _ = _split_top(ins.toks + [Tok("punct", "\0")], 3, "\0")
    return all(len(g) != 2 or g[1].kind == "word" for g in groups[1:])


class Liveness:
    """Live SSA values and stack objects after each call site of one function."""

    def __init__(self, f: Function, layout: Layout, named: dict[str, Type]):
        self.f = f
        self.layout = layout
        self.named = named
        self.values: dict[str, Type] = dict(f.params)
        self.order: dict[str, int] = {n: i for i, (n, _) in enumerate(f.params)}
        self.defs: dict[str, Instr] = {}
        for ins in f.instrs():
            if ins.name:
                self.defs[ins.name] = ins
                self.order[ins.name] = len(self.order)
        self.allocas = [ins.name for ins in f.blocks[0].instrs if ins.op == "alloca"]
        self.labels = {b.label: b for b in f.blocks}
        self._uses = {id(ins): self._instr_uses(ins) for ins in f.instrs()}
        self._dataflow()
        self._lifetimes()

    def type_of(self, name: str) -> Type:
        if name not in self.values:
            ins = self.defs[name]
            self.values[name] = _result_type(ins, self)
        return self.values[name]

    def _is_value(self, text: str) -> bool:
        return text in self.order

    def _instr_uses(self, ins: Instr) -> set[str]:
        """Values the instruction needs; lifetime markers and debug intrinsics need none at
        run time, so they do not keep a value alive."""
        if ins.op == "phi" or (ins.op == "call" and any(
                t.kind == "gvar" and t.text.startswith(("@llvm.lifetime.", "@llvm.dbg."))
                for t in ins.toks)):
            return set()
        return {t.text for t in ins.toks[2 if ins.name else 0:]
                if t.kind == "lvar" and self._is_value(t.text)}

    def _phi_uses(self, b: Block) -> dict[str, set[str]]:
        """pred label -> values the phis of `b` take from it."""
        out: dict[str, set[str]] = {}
        for ins in b.instrs:
            if ins.op != "phi":
                break
            toks, k = ins.toks, 0
            while k < len(toks):
                if toks[k].text != "[":
                    k += 1
                    continue
                pair, k = _split_top(toks, k + 1, "]")
                vals = {t.text for t in pair[0] if t.kind == "lvar" and self._is_value(t.text)}
                out.setdefault(self._block_name(pair[-1][-1].text), set()).update(vals)
        return out

    def _block_name(self, label: str) -> str:
        return label if label in self.labels else self.f.blocks[0].label

    def _dataflow(self) -> None:
        f = self.f
        succ = {b.label: [self._block_name(s) for s in b.succs()] for b in f.blocks}
        phi_in = {b.label: self._phi_uses(b) for b in f.blocks}
        gen, kill = {}, {}
        for b in f.blocks:
            g, k = set(), set()
            for ins in reversed(b.instrs):
                if ins.name:
                    g.discard(ins.name)
                    k.add(ins.name)
                g |= self._uses[id(ins)]
            gen[b.label], kill[b.label] = g, k
        live_in = {b.label: set() for b in f.blocks}
        live_out = {b.label: set() for b in f.blocks}
        changed = True
        while changed:
            changed = False
            for b in reversed(f.blocks):
                out = set()
                for s in succ[b.label]:
                    phis = {i.name for i in self.labels[s].instrs if i.op == "phi"}
                    out |= live_in[s] - phis
                    out |= phi_in[s].get(b.label, set())
                new_in = gen[b.label] | (out - kill[b.label])
                if out != live_out[b.label] or new_in != live_in[b.label]:
                    live_out[b.label], live_in[b.label] = out, new_in
                    changed = True
        self.live_after: dict[int, set[str]] = {}
        for b in f.blocks:
            live = set(live_out[b.label])
            for ins in reversed(b.instrs):
                if ins.op == "call":
                    self.live_after[id(ins)] = set(live)
                if ins.name:
                    live.discard(ins.name)
                live |= self._uses[id(ins)]

    def _base_alloca(self, name: str) -> str | None:
        seen = 0
        while name in self.defs and seen < 32:
            ins = self.defs[name]
            if ins.op == "alloca":
                return name
            if ins.op not in ("bitcast", "getelementptr", "addrspacecast"):
                return None
            ops = [t.text for t in ins.toks[3:] if t.kind == "lvar" and self._is_value(t.text)]
            if not ops:
                return None
            name, seen = ops[0], seen + 1
        return None

    def _lifetimes(self) -> None:
        """Stack objects that may be within their lifetime at each call (forward dataflow)."""
        f = self.f
        marks: dict[int, tuple[bool, str]] = {}
        marked = set()
        for ins in f.instrs():
            if ins.op == "call":
                g = [t.text for t in ins.toks if t.kind == "gvar"]
                if g and g[0].startswith(("@llvm.lifetime.start", "@llvm.lifetime.end")):
                    ops = [t.text for t in ins.toks if t.kind == "lvar" and self._is_value(t.text)]
                    a = self._base_alloca(ops[-1]) if ops else None
                    if a:
                        marks[id(ins)] = ("start" in g[0], a)
                        marked.add(a)
        self.unmarked = [a for a in self.allocas if a not in marked]
        preds: dict[str, list[str]] = {b.label: [] for b in f.blocks}
        for b in f.blocks:
            for s in b.succs():
                preds[self._block_name(s)].append(b.label)
        state_in = {b.label: set() for b in f.blocks}
        state_out = {b.label: set() for b in f.blocks}

        def walk(b: Block, cur: set[str], record: bool) -> set[str]:
            for ins in b.instrs:
                if record and ins.op == "call":
                    self.in_lifetime[id(ins)] = set(cur)
                m = marks.get(id(ins))
                if m:
                    (cur.add if m[0] else cur.discard)(m[1])
            return cur

        changed = True
        while changed:
            changed = False
            for b in f.blocks:
                cur = set().union(*(state_out[p] for p in preds[b.label]))
                state_in[b.label] = set(cur)
                out = walk(b, cur, False)
                if out != state_out[b.label]:
                    state_out[b.label] = out
                    changed = True
        self.in_lifetime: dict[int, set[str]] = {}
        for b in f.blocks:
            walk(b, set(state_in[b.label]), True)

    def at(self, ins: Instr) -> tuple[list[LiveValue], list[str], list[str]]:
        """After call `ins`: the stack objects that may be in use (as live values, and as
        deopt operands) and the SSA values that are live."""
        live = self.live_after[id(ins)] - {ins.name}
        objs = set(self.unmarked) | self.in_lifetime[id(ins)] | (live & set(self.allocas))
        objects, operands = [], []
        for a in sorted(objs, key=self.order.__getitem__):
            size, _ = self._alloca_size(self.defs[a])
            objects.append(LiveValue(a, "alloca", str(self.type_of(a)), 8, size))
            operands.append(f"{self.type_of(a)} {a}")
        return objects, operands, sorted(live - set(self.allocas), key=self.order.__getitem__)

    def _alloca_size(self, ins: Instr) -> tuple[int, Type]:
        ty, i = parse_type(ins.toks, 3)
        size = self.layout.size_align(ty)[0]
        if i < len(ins.toks) and ins.toks[i].text == "," and ins.toks[i + 1].kind == "word" \
                and ins.toks[i + 1].text != "align":
            size *= int(ins.toks[i + 2].text)
        return size, ty


def _category(ty: Type) -> str:
    return {"int": "int", "float": "float", "ptr": "pointer", "vector": "vector"}.get(ty.kind,
                                                                                       ty.kind)


def _leaves(ty: Type, named: dict[str, Type], path=()):
    """(index path, scalar type) of every scalar inside a first-class aggregate."""
    if ty.kind == "named":
        ty = named[ty.name]
        if ty.kind not in ("struct", "array"):
            yield path, ty
            return
    if ty.kind == "struct":
        for i, e in enumerate(ty.elems):
            yield from _leaves(e, named, path + (i,))
    elif ty.kind == "array":
        for i in range(ty.count):
            yield from _leaves(ty.elems[0], named, path + (i,))
    else:
        yield path, ty


_CMP = {"icmp", "fcmp"}
_CASTS = {"trunc", "zext", "sext", "fptrunc", "fpext", "fptoui", "fptosi", "uitofp", "sitofp",
          "ptrtoint", "inttoptr", "bitcast", "addrspacecast"}
_BINOPS = {"add", "sub", "mul", "udiv", "sdiv", "urem", "srem", "shl", "lshr", "ashr", "and",
           "or", "xor", "fadd", "fsub", "fmul", "fdiv", "frem", "fneg", "freeze"}
_FLAGS = {"nuw", "nsw", "exact", "inbounds", "volatile", "atomic"} | _FMF


def _result_type(ins: Instr, live: Liveness) -> Type:
    """The type of the value an instruction defines."""
    toks, op = ins.toks, ins.op
    i = 3
    while i < len(toks) and toks[i].text in _FLAGS:
        i += 1
    if op == "alloca":
        return Type("ptr", elems=(parse_type(toks, i)[0],))
    if op == "call":
        return parse_call(ins).ret
    if op in _CASTS:
        k = max(j for j, t in enumerate(toks) if t.text == "to")
        return parse_type(toks, k + 1)[0]
    if op in _CMP:
        ty, _ = parse_type(toks, i + 1)
        return Type("vector", elems=(Type("int", "i1", count=1),), count=ty.count) \
            if ty.kind == "vector" else Type("int", "i1", count=1)
    if op in _BINOPS or op in ("phi", "load", "select", "va_arg", "atomicrmw"):
        if op == "select":
            _, j = parse_type(toks, i)
            while toks[j].text != ",":
                j += 1
            return parse_type(toks, j + 1)[0]
        if op == "atomicrmw":
            while toks[i].text != ",":
                i += 1
            return parse_type(toks, i + 1)[0]
        if op == "va_arg":
            k = max(j for j, t in enumerate(toks) if t.text == ",")
            return parse_type(toks, k + 1)[0]
        return parse_type(toks, i)[0]
    if op == "getelementptr":
        src, j = parse_type(toks, i)
        base, j = parse_type(toks, j + 1)
        idx = _split_top(toks + [Tok("punct", "\0")], j, "\0")[0]
        ty = src
        for g in idx[2:]:
            ty = _step(ty, g, live.named)
        result = Type("ptr", elems=(ty,), count=base.count if base.kind == "ptr" else 0)
        if base.kind == "vector":
            return Type("vector", elems=(Type("ptr", elems=(ty,)),), count=base.count)
        for g in idx[1:]:
            gt, _ = parse_type(g, 0)
            if gt.kind == "vector":
                return Type("vector", elems=(result,), count=gt.count)
        return result
    if op == "extractvalue":
        ty, j = parse_type(toks, i)
        path = [int(t.text) for t in toks[j:] if t.kind == "word" and t.text.isdigit()]
        for p in path:
            ty = live.named.get(ty.name, ty) if ty.kind == "named" else ty
            ty = ty.elems[p] if ty.kind == "struct" else ty.elems[0]
        return ty
    if op == "insertvalue":
        return parse_type(toks, i)[0]
    if op == "extractelement":
        return parse_type(toks, i)[0].elems[0]
    if op == "insertelement":
        return parse_type(toks, i)[0]
    if op == "shufflevector":
        v, j = parse_type(toks, i)
        k = max(j for j, t in enumerate(toks) if t.text == ",")
        mask, _ = parse_type(toks, k + 1)
        return Type("vector", elems=v.elems, count=mask.count)
    if op == "cmpxchg":
        k = max(j for j, t in enumerate(toks) if t.text == ",")
        ty, _ = parse_type(toks, k + 1)
        return Type("struct", elems=(ty, Type("int", "i1", count=1)))
    if op == "landingpad":
        return parse_type(toks, i)[0]
    raise MigratableError(f"cannot type the result of {op}: {_text(toks)}")


def _step(ty: Type, idx: list[Tok], named) -> Type:
    if ty.kind == "named":
        ty = named[ty.name]
    if ty.kind == "struct":
        return ty.elems[int(idx[-1].text)]
    return ty.elems[0]
