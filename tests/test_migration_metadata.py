"""`hexo build --migratable`: statepoints in the shared IR, stackmap records and call-frame
rules per ISA, checked against LLVM's own tools (opt -verify, llvm-readobj, llvm-objdump)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from hexo.image import Image
from hexo.toolchain import livevalues, stackmaps

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run

ISAS = ("x86_64", "aarch64")

# Recursion, pointers into outer frames, a stack array live across calls, doubles live across
# calls, function pointers (one of them reaches a migration point), heap structures, and a
# non-void variadic call (printf) in a function that reaches a migration point.
PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
void hexo_check_migrate(void);
struct node { long v; struct node *next; };

__attribute__((noinline)) static long walk(int depth, long *outer, double *acc)
{
    long local[4] = { depth, depth * 2, depth * 3, depth * 4 };
    double x = *acc * 1.5 + depth;
    if (depth == 0) {
        hexo_check_migrate();
        *outer += 1;
        return local[1] + (long)x;
    }
    long below = walk(depth - 1, outer, acc);
    *acc = x * 0.5 + (double)(below % 7);
    return below + local[depth % 4] + (long)x;
}

static long sq(long x) { return x * x; }
static long cu(long x) { hexo_check_migrate(); return x * x * x; }

__attribute__((noinline)) static long apply(long (*f)(long), long x) { return f(x) + 1; }

int main(int argc, char **argv)
{
    long counter = 0;
    double acc = 1.0, h = 0.5;
    long (*ops[2])(long) = { sq, cu };
    struct node *list = NULL;
    for (int r = 0; r < 12; r++) {
        struct node *n = malloc(sizeof *n);
        n->v = apply(ops[r & 1], r);
        n->next = list;
        list = n;
        h = h * 1.25 + (double)walk(r % 5, &counter, &acc);
        printf("round %d h=%.3f\n", r, h);
        hexo_check_migrate();
    }
    long sum = 0;
    for (struct node *n = list; n; n = n->next)
        sum += n->v;
    printf("counter=%ld sum=%ld acc=%.9f h=%.9f\n", counter, sum, acc, h);
    return 0;
}
"""


class Built:
    def __init__(self, image: Path, work: Path):
        self.image = image
        self.work = work
        self.img = Image(image)
        self.meta = {isa: json.loads(self.img.payload(f"meta.{isa}")) for isa in ISAS}
        self.table = json.loads((work / "sites.json").read_text())

    def elf(self, isa: str) -> Path:
        return self.work / isa / "final.elf"


def _build(out: Path, *args) -> Built:
    work = out.with_suffix(".work")
    p = run([HEXO, "build", *args, "-o", out, "--keep-build-dir", work])
    assert p.returncode == 0, p.stderr
    return Built(out, work)


@pytest.fixture(scope="session")
def prog(tmp_path_factory) -> Built:
    d = tmp_path_factory.mktemp("migprog")
    (d / "prog.c").write_text(PROGRAM)
    return _build(d / "prog.hexo", d / "prog.c", "--migratable")


@pytest.fixture(scope="session")
def cg(tmp_path_factory) -> Built:
    d = tmp_path_factory.mktemp("migcg")
    return _build(d / "cg.hexo", "--workload", "npb-cg", "--class", "S", "--migratable")


@pytest.fixture(scope="session")
def auto(tmp_path_factory) -> Built:
    d = tmp_path_factory.mktemp("migauto")
    (d / "prog.c").write_text(PROGRAM)
    return _build(d / "auto.hexo", d / "prog.c", "--auto-points")


BUILDS = ["prog", "cg", "auto"]


@pytest.mark.parametrize("which", BUILDS)
def test_instrumented_ir_passes_opt_verify(request, which):
    b = request.getfixturevalue(which)
    ir = b.work / "app-migratable.ll"
    assert "llvm.experimental.gc.statepoint" in ir.read_text()
    p = run(["opt", "-verify", "-disable-output", ir])
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("which", BUILDS)
def test_both_isas_have_the_same_sites_and_value_counts(request, which):
    b = request.getfixturevalue(which)
    shapes = {isa: {s["id"]: [v["type"] for v in s["values"]] for s in b.meta[isa]["sites"]}
              for isa in ISAS}
    assert shapes["x86_64"] == shapes["aarch64"]
    assert set(shapes["x86_64"]) == {s["id"] for s in b.table["sites"]}
    mig = b.img.manifest["migration"]
    assert mig["call_sites"] == len(b.table["sites"]) > 0
    for isa in ISAS:
        assert b.meta[isa]["format"] == "hexo-migration-meta"
        assert b.meta[isa]["version"] == [1, 3]


@pytest.mark.parametrize("which", BUILDS)
def test_locations_hold_across_the_call(request, which):
    """Registers are callee-saved ones (never aarch64's x30), memory is in the frame, and
    stack objects are addressed, not loaded, on both ISAs."""
    b = request.getfixturevalue(which)
    for isa in ISAS:
        abi = b.meta[isa]["abi"]
        for s in b.meta[isa]["sites"]:
            for v in s["values"]:
                if v["kind"] == "register":
                    assert v["reg"] in abi["callee_saved"] and v["reg"] != 30, (isa, s, v)
                else:
                    assert v["kind"] in ("direct", "indirect") and \
                        v["reg"] in (abi["sp"], abi["fp"]), (isa, s, v)
                assert v["type"] != "alloca" or v["kind"] == "direct", (isa, s, v)


def _after_calls(elf: Path) -> set[int]:
    """Addresses right after every call instruction, per llvm-objdump."""
    out = subprocess.run(["llvm-objdump", "-d", "--no-show-raw-insn", str(elf)],
                         capture_output=True, text=True, check=True).stdout
    insns = []
    for line in out.splitlines():
        m = re.match(r"^\s+([0-9a-f]+):\s+(\S+)", line)
        if m:
            insns.append((int(m[1], 16), m[2]))
    return {insns[i + 1][0] for i, (_, op) in enumerate(insns[:-1])
            if op in ("call", "callq", "bl", "blr")}


@pytest.mark.parametrize("which", BUILDS)
def test_every_return_address_follows_a_call_instruction(request, which):
    b = request.getfixturevalue(which)
    for isa in ISAS:
        after = _after_calls(b.elf(isa))
        ras = [s["ra"] for s in b.meta[isa]["sites"]]
        assert ras and all(ra in after for ra in ras), isa
        by_name = {s["function"] for s in b.meta[isa]["sites"]}
        assert "main" in by_name


@pytest.mark.parametrize("which", BUILDS)
def test_every_live_value_has_one_home_in_the_frame(request, which):
    """Live values travel through stack slots: none is left in a register, where the register
    allocator could also keep a second copy no record names."""
    b = request.getfixturevalue(which)
    for isa in ISAS:
        abi = b.meta[isa]["abi"]
        values = [v for s in b.meta[isa]["sites"] for v in s["values"] if v["type"] != "alloca"]
        assert any(v["type"] == "float" for v in values), isa
        for v in values:
            assert v["kind"] in ("indirect", "constant") and (
                v["kind"] == "constant" or v["reg"] in (abi["sp"], abi["fp"])), (isa, v)


def test_stack_objects_and_frames(prog):
    for isa in ISAS:
        m = prog.meta[isa]
        abi = m["abi"]
        walk = [s for s in m["sites"] if s["function"] == "walk"]
        assert {s["callee"] for s in walk} == {"walk", "hexo_check_migrate"}
        for s in walk:
            objs = [v for v in s["values"] if v["type"] == "alloca"]
            assert [(v["kind"], v["alloca_size"]) for v in objs] == [("direct", 32)]
            assert objs[0]["reg"] in (abi["sp"], abi["fp"])
        main = [s for s in m["sites"] if s["function"] == "main"]
        sizes = sorted(v["alloca_size"] for s in main for v in s["values"]
                       if v["type"] == "alloca" and s["callee"] == "walk")
        assert 8 in sizes            # counter and acc, whose addresses walk() receives
        for s in m["sites"]:
            assert s["cfa"][0] in (abi["fp"], abi["sp"])
            saved = dict(map(tuple, s["saved"]))
            assert abi["ra"] in saved and saved[abi["ra"]] < 0
            assert all(r in abi["callee_saved"] or r == abi["ra"] for r in saved)
            assert s["callee"] != "printf"
        assert m["symbols"]["hexo_main_return"] and m["symbols"]["hexo_check_migrate"]


_DWARF_REG = {**{n: i for i, n in enumerate(
    ["RAX", "RDX", "RCX", "RBX", "RSI", "RDI", "RBP", "RSP"] + [f"R{i}" for i in range(8, 16)]
    + ["RIP"])}, **{f"W{i}": i for i in range(31)}, "WSP": 31,
    **{f"B{i}": 64 + i for i in range(32)}}


def _dwarfdump_rows(elf: Path) -> list[tuple[int, int, list]]:
    """(start, end, [(pc, cfa, saved)]) per FDE, from llvm-dwarfdump's unwind rows."""
    text = subprocess.run(["llvm-dwarfdump", "--debug-frame", str(elf)], capture_output=True,
                          text=True, check=True).stdout
    fdes = []
    for line in text.splitlines():
        if m := re.search(r"FDE cie=\w+ pc=([0-9a-f]+)\.\.\.([0-9a-f]+)", line):
            fdes.append((int(m[1], 16), int(m[2], 16), []))
        elif (m := re.match(r"\s+0x([0-9a-f]+): CFA=(\w+?)([+-]\d+)?(?:: (.*))?$", line)) \
                and fdes:
            saved = sorted([_DWARF_REG[r], int(o)]
                           for r, o in re.findall(r"(\w+)=\[CFA([+-]\d+)\]", m[4] or ""))
            fdes[-1][2].append((int(m[1], 16), [_DWARF_REG[m[2]], int(m[3] or 0)], saved))
    return fdes


@pytest.mark.parametrize("which", ["prog", "cg"])
def test_frame_rules_match_llvm_dwarfdump(request, which):
    b = request.getfixturevalue(which)
    for isa in ISAS:
        fdes = _dwarfdump_rows(b.elf(isa))
        for s in b.meta[isa]["sites"]:
            pc = s["ra"] - 1
            rows = next(r for lo, hi, r in fdes if lo <= pc < hi)
            _, cfa, saved = [r for r in rows if r[0] <= pc][-1]
            assert (s["cfa"], s["saved"]) == (cfa, saved), (isa, s["id"])


def test_indirect_calls_are_sites_when_a_target_reaches_a_migration_point(prog):
    callees = {(s["function"], s["callee"]) for s in prog.table["sites"]}
    assert ("apply", "<indirect>") in callees
    assert ("main", "apply") in callees
    assert "cu" in prog.table["reaching"] and "sq" not in prog.table["reaching"]


def test_metadata_loader_indexes_by_return_address(prog):
    for isa in ISAS:
        md = stackmaps.load(prog.img.payload(f"meta.{isa}"))
        assert md.isa == isa
        for s in md.raw["sites"]:
            assert md.by_ra[s["ra"]] is s and s in md.by_id[s["id"]]
    with pytest.raises(stackmaps.StackMapError):
        stackmaps.load(json.dumps({"format": "other"}).encode())


def test_disagreeing_isas_are_refused(prog):
    a = json.loads(json.dumps(prog.meta))
    assert stackmaps.check_isas(a) == []
    a["aarch64"]["sites"][0]["values"].append({"kind": "register", "reg": 19, "offset": 0,
                                               "loc_size": 4, "type": "int", "size": 4})
    assert any("values" in p for p in stackmaps.check_isas(a))
    a["x86_64"]["sites"].pop()
    assert any("not on" in p for p in stackmaps.check_isas(a))


# --- the parser against llvm-readobj --------------------------------------------------------

_LOC = {
    "Register": (r"Register R#(\d+)", stackmaps.REGISTER),
    "Direct": (r"Direct R#(\d+) \+ (-?\d+)", stackmaps.DIRECT),
    "Indirect": (r"Indirect \[R#(\d+) \+ (-?\d+)\]", stackmaps.INDIRECT),
    "ConstantIndex": (r"ConstantIndex #(\d+) \((-?\d+)\)", stackmaps.CONSTANT_INDEX),
    "Constant": (r"Constant (-?\d+)", stackmaps.CONSTANT),
}


def _readobj(path: Path) -> dict:
    """llvm-readobj --stackmap output as plain data."""
    text = subprocess.run(["llvm-readobj", "--stackmap", str(path)], capture_output=True,
                          text=True, check=True).stdout
    out = {"functions": [], "constants": [], "records": []}
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"Function address: (\d+), stack size: (\d+), callsite record "
                         r"count: (\d+)", line):
            out["functions"].append(tuple(map(int, m.groups())))
        elif m := re.match(r"#\d+: (-?\d+)$", line):
            out["constants"].append(int(m[1]) & (2 ** 64 - 1))
        elif m := re.match(r"Record ID: (\d+), instruction offset: (\d+)", line):
            out["records"].append({"id": int(m[1]), "offset": int(m[2]), "locs": [],
                                   "live": []})
        elif m := re.match(r"#\d+: (\w+) (.*), size: (\d+)", line):
            pattern, kind = _LOC[m[1]]
            g = re.match(pattern, f"{m[1]} {m[2]}").groups()
            if kind == stackmaps.REGISTER:
                loc = (kind, int(m[3]), int(g[0]), 0)
            elif kind in (stackmaps.DIRECT, stackmaps.INDIRECT):
                loc = (kind, int(m[3]), int(g[0]), int(g[1]))
            elif kind == stackmaps.CONSTANT_INDEX:
                loc = (kind, int(m[3]), 0, int(g[0]))
            else:
                loc = (kind, int(m[3]), 0, int(g[0]) & 0xffffffff)
            out["records"][-1]["locs"].append(loc)
        elif m := re.match(r"\d+ live-outs: \[(.*)\]", line):
            out["records"][-1]["live"] = [(int(r), int(s)) for r, s in
                                          re.findall(r"R#(\d+) \((\d+)-bytes\)", m[1])]
    return out


def _ours(data: bytes) -> dict:
    sm = stackmaps.parse(data)
    return {"functions": [tuple(f) for f in sm.functions], "constants": list(sm.constants),
            "records": [{"id": r.id, "offset": r.offset, "live": list(r.liveouts),
                         "locs": [(loc.kind, loc.size, loc.reg,
                                   loc.offset & 0xffffffff if loc.kind == stackmaps.CONSTANT
                                   else loc.offset) for loc in r.locations]}
                        for r in sm.records]}


STACKMAP_IR = """
declare void @llvm.experimental.stackmap(i64, i32, ...)
declare void @llvm.experimental.patchpoint.void(i64, i32, i8*, i32, ...)
declare void @g(i64)
define i64 @f(i64 %a, double %d) {
  %s = alloca [3 x i64]
  %p = getelementptr [3 x i64], [3 x i64]* %s, i64 0, i64 0
  call void @g(i64 0)
  call void (i64, i32, ...) @llvm.experimental.stackmap(i64 77, i32 0, i64 1234567890123,
      i32 -5, i64 %a, double %d, [3 x i64]* %s)
  %b = add i64 %a, 1
  PATCHPOINT
  call void @g(i64 %b)
  %c = mul i64 %b, %a
  ret i64 %c
}
"""
PATCHPOINT = ("call void (i64, i32, i8*, i32, ...) @llvm.experimental.patchpoint.void("
              "i64 78, i32 16, i8* null, i32 0, i64 %b)")


@pytest.mark.parametrize("isa,triple", [("x86_64", "x86_64-unknown-none-elf"),
                                        ("aarch64", "aarch64-none-elf")])
def test_parser_matches_llvm_readobj_on_handwritten_records(tmp_path, isa, triple):
    from elftools.elf.elffile import ELFFile
    ll, obj = tmp_path / "sm.ll", tmp_path / "sm.o"
    # llc 14 crashes on an x86-64 patchpoint with live-outs; aarch64 gives them.
    ll.write_text(STACKMAP_IR.replace("PATCHPOINT", PATCHPOINT if isa == "aarch64" else ""))
    p = run(["llc", "-O2", f"-mtriple={triple}", "-filetype=obj", ll, "-o", obj])
    assert p.returncode == 0, p.stderr
    with open(obj, "rb") as f:
        ours = _ours(stackmaps.section_data(ELFFile(f)))
    theirs = _readobj(obj)
    assert ours == theirs
    kinds = {loc[0] for r in ours["records"] for loc in r["locs"]}
    assert {stackmaps.CONSTANT, stackmaps.CONSTANT_INDEX, stackmaps.DIRECT} <= kinds
    assert ours["constants"] == [1234567890123]
    if isa == "aarch64":
        assert any(r["live"] for r in ours["records"])


@pytest.mark.parametrize("which", ["prog", "cg"])
def test_parser_matches_llvm_readobj_on_builds(request, which):
    """app.o directly; the final ELF, where the records sit inside .rodata (llvm-readobj
    cannot find them there), against app.o with the functions' linked addresses."""
    from elftools.elf.elffile import ELFFile
    b = request.getfixturevalue(which)
    for isa in ISAS:
        obj = _readobj(b.work / isa / "app.o")
        with open(b.work / isa / "app.o", "rb") as f:
            assert _ours(stackmaps.section_data(ELFFile(f))) == obj
        assert len(obj["records"]) == len(b.table["sites"])
        with open(b.elf(isa), "rb") as f:
            elf = ELFFile(f)
            final = _ours(stackmaps.section_data(elf))
            symtab = elf.get_section_by_name(".symtab")
            at = symtab.get_symbol_by_name("__LLVM_StackMaps")[0]["st_value"]
            funcs = {s["st_value"] for s in symtab.iter_symbols()
                     if s["st_info"]["type"] == "STT_FUNC"}
        lo, hi = b.img.manifest["layout"]["areas"]["rodata"]
        assert lo <= at < hi                    # kept by the link, as read-only data
        assert final["records"] == obj["records"]
        assert [f[1:] for f in final["functions"]] == [f[1:] for f in obj["functions"]]
        assert all(f[0] in funcs for f in final["functions"])


def test_parser_refuses_damaged_sections():
    with pytest.raises(stackmaps.StackMapError, match="version"):
        stackmaps.parse(bytes([2]) + bytes(15))
    with pytest.raises(stackmaps.StackMapError, match="truncated"):
        stackmaps.parse(bytes([3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]) + bytes(10))


# --- liveness against an independent search -------------------------------------------------

_VALUE = re.compile(r'%(?:"[^"]*"|[-a-zA-Z$._0-9]+)')
_LABEL = re.compile(r'^("[^"]*"|[-a-zA-Z$._0-9]+):')


def _functions(ir: str) -> dict[str, list[tuple[str, list[tuple]]]]:
    """Defined functions of textual IR: name -> blocks (label, instructions), each
    instruction (defined value, opcode, values it uses, successor labels, phi pairs)."""
    out = {}
    for body in re.findall(r"^define [^\n]*\{\n.*?^\}", ir, re.M | re.S):
        header, *lines = body.split("\n")[:-1]
        name = re.search(r"@([-\w.$]+)\(", header)[1]
        params = [v for v in _VALUE.findall(header.split("(", 1)[1])]
        nums = [int(v[1:]) for v in params if v[1:].isdigit()]
        blocks = [(f"%{max(nums) + 1 if nums else 0}", [])]
        pending = ""
        for line in lines:
            text = pending + " " + (line.split(";", 1)[0] if '"' not in line else line)
            if text.count("[") > text.count("]"):       # a switch spans several lines
                pending = text
                continue
            text, pending = text.strip(), ""
            lab = _LABEL.match(text)
            if lab:
                blocks.append(("%" + lab[1], []))
                continue
            if not text:
                continue
            text = re.sub(r",\s*!\w+ !\d+", "", text)
            d = re.match(r"(%[-\w.$]+) = ", text)
            rhs = text[d.end():] if d else text
            op = "call" if rhs.split()[0] in ("tail", "call", "notail", "musttail") else \
                rhs.split()[0]
            succs = re.findall(r"label (%[-\w.$]+)", rhs)
            pairs = re.findall(r"\[ ([^\[\]]*?), (%[-\w.$]+) \]", rhs) if op == "phi" else []
            marker = op == "call" and re.search(r"@llvm\.(lifetime|dbg)\.", rhs)
            uses = set() if op == "phi" or marker else set(_VALUE.findall(rhs)) - set(succs)
            blocks[-1][1].append((d[1] if d else None, op, uses, succs,
                                  [(v.split()[-1], lab) for v, lab in pairs]))
        out[name] = (params, blocks)
    return out


def _live_by_search(blocks, start_block: int, start_index: int, v: str) -> bool:
    """Is `v` used on some path from the given point before being defined again?"""
    index = {label: k for k, (label, _) in enumerate(blocks)}
    todo, seen = [(start_block, start_index)], set()
    while todo:
        b, i = todo.pop()
        label, instrs = blocks[b]
        stop = False
        for name, op, uses, _, _ in instrs[i:]:
            if op == "phi":
                continue
            if v in uses:
                return True
            if name == v:
                stop = True
                break
        if stop:
            continue
        for s in instrs[-1][3]:
            phis = [ins for ins in blocks[index[s]][1] if ins[1] == "phi"]
            if any((v, label) in ins[4] for ins in phis):
                return True
            if any(ins[0] == v for ins in phis) or s in seen:
                continue
            seen.add(s)
            todo.append((index[s], 0))
    return False


@pytest.mark.parametrize("which", ["prog", "cg"])
def test_dataflow_liveness_agrees_with_a_per_use_search(request, which, tmp_path):
    b = request.getfixturevalue(which)
    table = livevalues.instrument(b.work / "app.ll", tmp_path / "out.ll", tmp_path / "t.json",
                                  auto_points=False, dump_liveness=True)
    funcs = _functions((b.work / "app.ll").read_text())
    checked = 0
    for fname, (params, blocks) in funcs.items():
        values = params + [ins[0] for _, instrs in blocks for ins in instrs if ins[0]]
        calls = iter(table["liveness"][fname])
        for k, (_, instrs) in enumerate(blocks):
            for i, (name, op, _, _, _) in enumerate(instrs):
                if op != "call":
                    continue
                expect = {v for v in values if v != name and _live_by_search(blocks, k, i + 1, v)}
                assert set(next(calls)) == expect, (fname, k, i)
                checked += 1
        assert next(calls, None) is None, fname
    assert checked >= 10


# --- what cannot be made migratable --------------------------------------------------------

REJECTED = {
    "setjmp": ("#include <setjmp.h>\nvoid hexo_check_migrate(void);\njmp_buf jb;\n"
               "int main(void) {\n  if (setjmp(jb)) return 1;\n  hexo_check_migrate();\n"
               "  return 0;\n}\n", "bad.c:4: function 'main' calls setjmp"),
    "callback": ("#include <stdlib.h>\nvoid hexo_check_migrate(void);\n"
                 "static int cmp(const void *a, const void *b) {\n  hexo_check_migrate();\n"
                 "  return *(const int *)a - *(const int *)b;\n}\n"
                 "int main(void) {\n  int v[3] = {3, 1, 2};\n  qsort(v, 3, sizeof v[0], cmp);\n"
                 "  return v[0];\n}\n",
                 "bad.c:9: function 'main': passes 'cmp' to library function 'qsort'"),
}


@pytest.mark.parametrize("flags", [[], ["--migratable"]], ids=["default", "explicit"])
@pytest.mark.parametrize("case", sorted(REJECTED))
def test_unmigratable_code_is_refused_with_its_location(tmp_path, case, flags):
    code, message = REJECTED[case]
    src = tmp_path / "bad.c"
    src.write_text(code)
    p = run([HEXO, "build", src, "-o", tmp_path / "bad.hexo", *flags])
    assert p.returncode == 1
    assert "cannot be made migratable" in p.stderr and message in p.stderr, p.stderr
    assert ("--no-migratable builds one" in p.stderr) == (not flags), p.stderr
    assert not (tmp_path / "bad.hexo").exists()


def test_no_migratable_builds_what_cannot_be_made_migratable(tmp_path):
    src = tmp_path / "cb.c"
    src.write_text(REJECTED["callback"][0])
    p = run([HEXO, "build", src, "-o", tmp_path / "cb.hexo", "--no-migratable"])
    assert p.returncode == 0, p.stderr
    p = run([UHYVE, "run", tmp_path / "cb.hexo"])
    assert p.returncode == 1, p.stderr                    # main returns v[0] after the sort


def test_unprototyped_call_is_resolved_against_its_definition(tmp_path):
    (tmp_path / "a.c").write_text("int step();\nint main(void) {\n  return step(3);\n}\n")
    (tmp_path / "b.c").write_text("void hexo_check_migrate(void);\n"
                                  "int step(int n) { hexo_check_migrate(); return n; }\n")
    b = _build(tmp_path / "x.hexo", tmp_path / "a.c", tmp_path / "b.c", "--migratable")
    assert any(r.endswith("a.c:3: function 'main': call of 'step'")
               for r in b.table["resolved_calls"]), b.table["resolved_calls"]
    assert {(s["function"], s["callee"]) for s in b.table["sites"]} >= {("main", "step")}


def test_auto_points_skip_library_callbacks(tmp_path):
    src = tmp_path / "cb.c"
    src.write_text(REJECTED["callback"][0].replace("  hexo_check_migrate();\n", ""))
    b = _build(tmp_path / "cb.hexo", src, "--auto-points")
    assert {s["function"] for s in b.table["sites"]} == {"main"}
    assert "cmp" not in b.table["reaching"]


CALLED_BACK = r"""
#include <stdio.h>
#include <stdlib.h>
static int key(int v) { return (v * 37) % 101; }
static int cmp(const void *a, const void *b) { return key(*(const int *)a) - key(*(const int *)b); }
int main(int argc, char **argv) {
  int v[64], rounds = argc > 1 ? atoi(argv[1]) : 4, n = 60 + rounds;
  long sum = 0;
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < n; i++) { v[i] = i * (r + 3); sum += key(v[i]); }
    qsort(v, n, sizeof v[0], cmp);
    printf("round %d: %d %d %d sum %ld\n", r, v[0], v[31], v[n - 1], sum);
  }
  return 0;
}
"""


@needs_kvm
@pytest.mark.kvm
def test_auto_points_skip_what_library_callbacks_call(tmp_path):
    """A point in key(), which main calls too, would make the qsort comparator reach one (the
    build was refused, as Lua's signal handler calling lua_sethook was): functions that
    callbacks call get none either; main's still move the job across ISAs."""
    src = tmp_path / "cb.c"
    src.write_text(CALLED_BACK)
    b = _build(tmp_path / "cb.hexo", src, "--auto-points")
    points = {s["function"] for s in b.table["sites"] if s["callee"] == "hexo_check_migrate"}
    assert "main" in points and not {"cmp", "key"} & points
    unmoved = run([UHYVE, "run", b.image, "--isa", "x86_64"])
    assert unmoved.returncode == 0 and unmoved.stdout.count("round") == 4, unmoved.stderr
    (tmp_path / "run").mkdir(mode=0o700)
    env = {**os.environ, "HEXO_RUN_DIR": str(tmp_path / "run")}
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", b.image, "--isa", "x86_64", "--checkpoint-at", "3",
             "--checkpoint-dir", ck, "--to", "aarch64"], env=env)
    assert p.returncode == 0 and f"checkpointed to {ck}" in p.stderr, p.stderr
    moved = run([UHYVE, "restore", ck], env=env, timeout=300)
    assert (p.stdout + moved.stdout, moved.returncode) == (unmoved.stdout, 0), moved.stderr


def test_auto_points_put_a_migration_point_in_every_function(auto, prog):
    points = {s["function"] for s in auto.table["sites"] if s["callee"] == "hexo_check_migrate"}
    assert {"main", "walk", "apply", "sq", "cu"} <= points
    assert len(auto.table["sites"]) > len(prog.table["sites"])


def test_builds_are_migratable_unless_told_not_to_be(images):
    img = Image(images.get("npb-cg", "S"))
    assert {"meta.x86_64", "meta.aarch64"} <= set(img.entries) and "migration" in img.manifest
    img = Image(images.plain("npb-cg", "S"))
    assert not any(n.startswith("meta.") for n in img.entries)
    assert "migration" not in img.manifest


# --- the migratable builds still run -------------------------------------------------------

def _run(image: Path, isa: str, *args) -> str:
    p = run([UHYVE, "run", image, "--isa", isa, "--", *args], timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


@needs_kvm
@pytest.mark.slow
def test_migratable_npb_cg_verifies_on_kvm_and_emulated_aarch64(cg):
    for isa in ISAS:
        out = _run(cg.image, isa)
        assert re.search(r"Verification\s+=\s+SUCCESSFUL", out), (isa, out)


@needs_kvm
@pytest.mark.slow
def test_migratable_programs_print_what_the_native_build_prints(prog, auto, tmp_path):
    native, stub = tmp_path / "prog", tmp_path / "stub.c"
    stub.write_text("void hexo_check_migrate(void) {}\n")
    p = run([HEXO, "build", prog.work.parent / "prog.c", stub, "--native", "-o", native])
    assert p.returncode == 0, p.stderr
    expect = run([native]).stdout
    assert "counter=" in expect
    for b in (prog, auto):
        for isa in ISAS:
            assert _run(b.image, isa) == expect, isa


def test_a_build_without_migration_points_says_how_to_get_them(tmp_path):
    """A kernel that does all its work in loops and calls no hexo function (PolyBench, STREAM)
    is migratable by default yet reaches no point: certify and checkpoint can only refuse or
    wait, so the build says so and names --auto-points, which gives it points."""
    src = ROOT / "tests" / "programs" / "loop_points.c"
    p = run([HEXO, "build", src, "-o", tmp_path / "plain.hexo"])
    assert p.returncode == 0, p.stderr
    assert "migratable: 0 call sites" in p.stdout
    assert "no migration point" in p.stdout and "--auto-points" in p.stdout
    p = run([HEXO, "build", src, "--auto-points", "-o", tmp_path / "auto.hexo"])
    assert p.returncode == 0, p.stderr
    assert "migratable: 0 call sites" not in p.stdout and "no migration point" not in p.stdout
