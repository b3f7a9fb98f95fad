"""Instruction mix of a native run, derived without hardware counters.

What a PMU would count (instructions, loads, stores, branches, mispredictions, FP operations,
L1 and last-level cache misses) is derived here from `valgrind --tool=callgrind` run on the
workload's native build: with `--dump-instr=yes` it gives, per executed instruction address,
instruction, data-read and data-write counts and the misses of its cache and branch
simulators; each address is classified by its mnemonic from `objdump -d`. A second run
(cachegrind, SOFT_TLB) counts what an emulated board adds: refills of its software TLB. A
third (measure_aarch64) estimates what the image's aarch64 build executes, which is what an
emulated aarch64 board pays for.
Counts are exact for the simulated caches and predictor (geometry pinned in CACHES),
deterministic, and do not depend on how loaded the machine is. They are derived, not
hardware, and say so.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from .errors import SchedError

#: Cache geometry given to valgrind, pinned so that counts do not depend on the host; sets
#: must be a power of two, so the LLC is 8 MiB 16-way (the paper's Xeon E5-2637 has 10-15 MiB).
CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64")
CACHES_TEXT = "I1 32 KiB 8-way, D1 32 KiB 8-way, LL 8 MiB 16-way, 64 B lines"

#: A software TLB as an emulator's (QEMU's softmmu, which unicorn is) keeps one: one entry per
#: 4 KiB guest page, QEMU's default 256 entries, indexed by the page number, given to
#: valgrind as a first-level data cache whose lines are pages, so its misses are the guest's
#: TLB refills, each a page-table walk in software. QEMU's table is direct-mapped but backed
#: by an 8-entry victim TLB, which absorbs pages that collide on an index (a merge sort's
#: three streams 1 MiB apart: 32.5 M direct-mapped misses, 0.13 M 4-way); 4 ways stand for
#: it. The data layout of a hexo image is the same on both ISAs.
SOFT_TLB = ("--I1=32768,8,64", "--D1=1048576,4,4096", "--LL=8388608,16,4096")
SOFT_TLB_TEXT = "256 entries of 4 KiB pages, 4-way"

#: Instruction classes by x86-64 mnemonic (Intel syntax). FP arithmetic is what an emulator
#: does in software (QEMU's softfloat); division and square root are slow on both sides.
_DIVSQRT = re.compile(r"^v?(div|sqrt)[sp][sd]$|^f(i?div|sqrt)")
#: Conversions between FP formats and integers: an emulator's softfloat has no fast path on
#: the host's FPU for them (QEMU's "hardfloat" covers arithmetic, division, square root and
#: comparisons only).
_CONVERT = re.compile(r"^v?cvt|^fi(st|ld)")
_FP = re.compile(r"^v?(add|sub|mul|min|max|cmp[a-z]*|hadd|hsub|addsub|round|dp)[sp][sd]$"
                 r"|^v?u?comis[sd]$|^vf(n?m(add|sub)|maddsub|msubadd)|^f(?!nop|xch)")
#: Packed SIMD instructions (SSE2, the servers' baseline: 16-byte registers): packed FP
#: (..pd/..ps), packed integer (p..), 16-byte moves, shuffles and unpacks.
_PACKED = re.compile(r"^v?((?!cmps$)\w+p[sd]|p(?!ush|op|ause|refetch)\w+|movdq[au]|unpck\w+"
                     r"|shuf\w+|cvtt?((pd|ps|dq)2\w+|\w+2(pd|ps|dq)))$")
_PREFIXES = {"rep", "repe", "repz", "repne", "repnz", "lock", "bnd", "notrack", "data16",
             "addr32", "cs", "ds", "es", "ss", "fs", "gs"}


class MixError(SchedError, RuntimeError):
    pass


def insn_class(mnemonic: str) -> str:
    """'divsqrt', 'convert', 'fp' or 'other' for an x86-64 mnemonic."""
    if _DIVSQRT.match(mnemonic):
        return "divsqrt"
    if _CONVERT.match(mnemonic):
        return "convert"
    if _FP.match(mnemonic):
        return "fp"
    return "other"


def fp_lanes(mnemonic: str) -> int:
    """Values one FP instruction computes: 2 for packed doubles, 4 for packed singles, else 1
    (a conversion counts the lanes of its packed side). An emulator computes each in
    software, so lanes, not instructions, measure FP work."""
    if _CONVERT.match(mnemonic):
        return 2 if "pd" in mnemonic else 4 if "ps" in mnemonic else 1
    if not _PACKED.match(mnemonic):
        return 1
    return 4 if mnemonic.endswith("ps") else 2


def is_packed(mnemonic: str) -> bool:
    return bool(_PACKED.match(mnemonic))


def disassemble(path: str) -> dict[int, str]:
    """Address -> mnemonic of every instruction of an ELF file (objdump, Intel syntax)."""
    p = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "intel", path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise MixError(f"objdump failed on {path}: {p.stderr[-300:]}")
    out = {}
    for line in p.stdout.splitlines():
        addr, sep, rest = line.partition(":\t")
        if not sep:
            continue
        try:
            a = int(addr.strip(), 16)
        except ValueError:
            continue
        words = [w for w in rest.split() if w not in _PREFIXES]
        if words:
            out[a] = words[0]
    return out


def _position(token: str, last: int) -> int:
    if token == "*":
        return last
    if token[0] in "+-":
        return last + int(token, 0)
    return int(token, 0)


def parse_callgrind(text: str) -> tuple[list[str], dict[str, dict[int, list[int]]], list[int]]:
    """(event names, {object: {instruction address: self cost}}, summary) of a callgrind
    file written with `--dump-instr=yes`; call lines' inclusive costs are not self costs and
    are skipped."""
    events, summary = None, None
    names: dict[str, str] = {}
    costs: dict[str, dict[int, list[int]]] = defaultdict(dict)
    obj, last, skip_next = "", 0, False
    positions = 2
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            fields = line.split()
            last = _position(fields[0], last)
            if skip_next:
                skip_next = False
                continue
            vals = [int(v) for v in fields[positions:]]
            acc = costs[obj].setdefault(last, [0] * len(events))
            for i, v in enumerate(vals):
                acc[i] += v
            continue
        key, _, value = line.partition("=")
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("positions:"):
            positions = len(line.split()) - 1
        elif line.startswith("summary:"):
            summary = [int(v) for v in line.split()[1:]]
        elif key == "ob":
            m = re.match(r"\((\d+)\)(?: (.*))?", value)
            if m:
                if m[2] is not None:
                    names[m[1]] = m[2]
                obj = names.get(m[1], "")
            else:
                obj = value
        elif key == "calls":
            skip_next = True
        elif key in ("cob", "cfi", "cfl", "cfn"):
            m = re.match(r"\((\d+)\) (.*)", value)
            if key == "cob" and m:
                names[m[1]] = m[2]
    if events is None or summary is None:
        raise MixError("not a callgrind output file (no events/summary lines)")
    if positions != 2:
        raise MixError("callgrind ran without --dump-instr=yes (no instruction positions)")
    return events, dict(costs), summary


REQUIRED = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw",
            "Bc", "Bcm", "Bi", "Bim")


def mix_counts(events: list[str], costs: dict[str, dict[int, list[int]]],
               mnemonics: dict[str, dict[int, str]]) -> dict[str, int]:
    """Totals of a run: instructions, loads, stores, branches (and the indirect ones),
    mispredictions, FP and FP divide/sqrt instructions, the values they compute (lanes), the
    values converted between FP and integer formats, loads and stores of packed SIMD
    instructions, first-level and last-level misses. `mnemonics` maps each object
    to its disassembly; instructions it cannot classify (an unnamed object: valgrind's own
    preload) count as 'other'."""
    missing = [e for e in REQUIRED if e not in events]
    if missing:
        raise MixError(f"callgrind ran without cache and branch simulation (missing {missing})")
    ix = {e: events.index(e) for e in REQUIRED}
    tot = dict.fromkeys(REQUIRED, 0)
    by_class = {"fp": 0, "divsqrt": 0, "convert": 0, "fp_lanes": 0, "simd_accesses": 0}
    for obj, per_addr in costs.items():
        names = mnemonics.get(obj, {})
        for addr, c in per_addr.items():
            for e, i in ix.items():
                tot[e] += c[i]
            mnemonic = names.get(addr, "")
            cls = insn_class(mnemonic)
            if cls == "convert":
                by_class["convert"] += c[ix["Ir"]] * fp_lanes(mnemonic)
            elif cls in by_class:
                by_class[cls] += c[ix["Ir"]]
                by_class["fp_lanes"] += c[ix["Ir"]] * fp_lanes(mnemonic)
            if is_packed(mnemonic):
                by_class["simd_accesses"] += c[ix["Dr"]] + c[ix["Dw"]]
    return {"instructions": tot["Ir"], "loads": tot["Dr"], "stores": tot["Dw"],
            "branches": tot["Bc"] + tot["Bi"], "mispredicts": tot["Bcm"] + tot["Bim"],
            "indirect_branches": tot["Bi"], **by_class,
            "l1_misses": tot["I1mr"] + tot["D1mr"] + tot["D1mw"],
            "ll_misses": tot["ILmr"] + tot["DLmr"] + tot["DLmw"]}


def _valgrind(tool: str, args: list[str], exe: Path, out: Path) -> None:
    p = subprocess.run(["valgrind", f"--tool={tool}", *args, f"--{tool}-out-file={out}",
                        str(exe)], capture_output=True, text=True)
    if "brk segment overflow" in p.stderr:
        raise MixError(f"{tool} cannot run {exe.name}: its heap outgrows valgrind's brk "
                       "segment (8 MB at most)")
    if p.returncode != 0 or not out.exists():
        raise MixError(f"{tool} failed on {exe} (exit {p.returncode}): {p.stderr[-500:]}")


def soft_tlb_misses(exe: Path) -> int:
    """Refills of a software TLB (SOFT_TLB) over the data accesses of a run of `exe`."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cachegrind.out"
        _valgrind("cachegrind", ["--cache-sim=yes", "--branch-sim=no", *SOFT_TLB], exe, out)
        events = summary = None
        for line in out.read_text().splitlines():
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                summary = [int(v) for v in line.split()[1:]]
    if not events or not summary or "D1mr" not in events:
        raise MixError(f"cachegrind wrote no cache summary for {exe}")
    return summary[events.index("D1mr")] + summary[events.index("D1mw")]


def instructions(exe: Path) -> int:
    """Instructions a run of `exe` executes (callgrind, no simulation)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "callgrind.out"
        _valgrind("callgrind", [], exe, out)
        for line in out.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise MixError(f"callgrind wrote no summary for {exe}")


def measure(exe: Path) -> dict[str, int]:
    """Run `exe` under callgrind and return its mix (mix_counts) with the misses of an
    emulator's software TLB (soft_tlb_misses); the program must exit 0."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "callgrind.out"
        _valgrind("callgrind", ["--dump-instr=yes", "--cache-sim=yes", "--branch-sim=yes",
                                *CACHES], exe, out)
        events, costs, _ = parse_callgrind(out.read_text())
    mnemonics = {obj: disassemble(obj) for obj in costs if obj and Path(obj).is_file()}
    return {**mix_counts(events, costs, mnemonics), "tlb_misses": soft_tlb_misses(exe)}


# The other ISA's instructions. An emulated aarch64 board pays for the aarch64 build's
# instructions, not for the x86-64 ones a server counts. Both builds of a hexo image come from
# one optimized IR and put every function at one address, so the execution counts of the
# image's own x86-64 code (callgrind) tell how often the matching blocks of the same function
# ran on aarch64 (_block_runs). Functions without line tables (the C library, compiled per
# ISA) are mapped as a whole.

#: Classes of an aarch64 instruction, named as the x86-64 mix's counts, and "code": the
#: instructions that run at least once, each translated once by an emulator.
A64_COUNTS = ("insns", "loads", "stores", "simd_accesses", "fp", "fp_lanes", "divsqrt",
              "convert", "branches", "indirect_branches", "code")
_A64_LOAD = re.compile(r"^ld(?!r?add|set|clr|eor|smax|smin|umax|umin)[a-z0-9]*$")
_A64_STORE = re.compile(r"^st(?!add|set|clr|eor)[a-z0-9]*$")
_A64_CONVERT = re.compile(r"^(fcvt\w*|[su]cvtf|fjcvtzs)$")
_A64_DIVSQRT = re.compile(r"^f(div|sqrt)$")
#: FP arithmetic a softfloat helper computes (moves, negation and absolute value are bit
#: operations in an emulator, not helpers).
_A64_FP = re.compile(r"^f(add|sub|mulx?|n?madd|n?msub|nmul|(min|max)(nm)?p?|addp|cm\w+|abd"
                     r"|rint\w|recp\w+|rsqrt\w+|mla|mls|div|sqrt)$")
_A64_LANES = re.compile(r"\.(\d+)([bhsd])\b")
_A64_BRANCH = re.compile(r"^(b|bl|br|blr|ret|cbn?z|tbn?z|b\.\w+)$")
_A64_INDIRECT = ("br", "blr", "ret")


def a64_classes(mnemonic: str, operands: str) -> dict[str, int]:
    """What one aarch64 instruction counts in each of A64_COUNTS: data accesses (a pair is
    two; a Q or vector register access a SIMD access), FP helper work in lanes, branches."""
    out = {"insns": 1}
    lanes = _A64_LANES.search(operands)
    nlanes = int(lanes[1]) if lanes else 1
    vector = bool(lanes) or re.search(r"\bq\d", operands) is not None
    if _A64_LOAD.match(mnemonic) or _A64_STORE.match(mnemonic):
        kind = "loads" if mnemonic.startswith("ld") else "stores"
        n = (2 if mnemonic[2] == "p" else
             len(re.findall(r"\bv\d+", operands.split("}")[0])) if mnemonic[2] in "1234" else 1)
        out[kind] = n
        if vector:
            out["simd_accesses"] = n
    elif _A64_CONVERT.match(mnemonic):
        out["convert"] = nlanes
    elif _A64_FP.match(mnemonic):
        out["fp"] = 1
        out["fp_lanes"] = nlanes if vector else 1
        if _A64_DIVSQRT.match(mnemonic):
            out["divsqrt"] = nlanes if vector else 1
    elif _A64_BRANCH.match(mnemonic):
        out["branches"] = 1
        if mnemonic in _A64_INDIRECT:
            out["indirect_branches"] = 1
    return out


def _objdump(path: Path, *flags: str) -> dict[str, tuple[int, list[tuple[int, str | None,
                                                                         str, str]]]]:
    """Function -> (its address, its instructions as (offset in the function, source line or
    None, mnemonic, operands)), from llvm-objdump (either ISA; `-l` adds line tables)."""
    p = subprocess.run(["llvm-objdump", "-d", "--no-show-raw-insn", *flags, str(path)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise MixError(f"llvm-objdump failed on {path}: {p.stderr[-300:]}")
    out: dict[str, tuple[int, list]] = {}
    insns, start, line = None, 0, None
    for text in p.stdout.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.+)>:$", text)
        if m:
            start, insns, line = int(m[1], 16), [], None
            out.setdefault(m[2], (start, insns))
        elif text.startswith("; ") and insns is not None:
            where = text[2:].strip()
            if not where.endswith("():"):
                line = where.rsplit("/", 1)[-1]
        elif insns is not None:
            addr, sep, rest = text.partition(":")
            words = rest.split(None, 1)
            try:
                a = int(addr.strip(), 16)
            except ValueError:
                continue
            if sep and words and words[0] not in _PREFIXES and not words[0].startswith("<"):
                insns.append((a - start, line, words[0], words[1] if len(words) > 1 else ""))
    return out


_TARGET = re.compile(r"<[^>+]+\+0x([0-9a-f]+)>")


def _jumps(insns) -> list[tuple[int, int | None]]:
    """(offset, target offset in the function or None) of each jump of either ISA (aarch64
    branches but calls, x86-64 j*); calls return, and unrelocated ones point at themselves."""
    out = []
    for off, _, mnemonic, ops in insns:
        if (_A64_BRANCH.match(mnemonic) and mnemonic != "bl") or mnemonic.startswith("j"):
            target = _TARGET.search(ops)
            out.append((off, int(target[1], 16) if target else None))
    return out


def _blocks(insns: list[tuple[int, str | None, str, str]]) -> list[list]:
    """The basic blocks of one function's instructions: a block starts at the function's
    entry, at a jump target inside the function and after a jump."""
    offsets = [off for off, *_ in insns]
    leaders = {0}
    for off, target in _jumps(insns):
        i = offsets.index(off)
        if i + 1 < len(insns):
            leaders.add(offsets[i + 1])
        if target is not None:
            leaders.add(target)
    blocks: list[list] = []
    for insn in insns:
        if insn[0] in leaders or not blocks:
            blocks.append([])
        blocks[-1].append(insn)
    return blocks


_X86_MOVES = re.compile(r"^(v?mov\w*|stos\w*|set\w+|push|pop|call|lea|nop\w*)$")


def _x86_accesses(mnemonic: str, ops: str) -> int:
    """Data accesses of one x86-64 instruction (Intel syntax): a memory destination is
    written, and read too unless the instruction only stores; a memory source is read."""
    if mnemonic in ("push", "pop", "call", "ret"):
        return 1
    operands = ops.split("#")[0].split(",")
    if "[" not in operands[0]:
        return int(any("[" in o for o in operands[1:]) and not mnemonic.startswith(("lea", "nop")))
    return 1 if _X86_MOVES.match(mnemonic) else 2


def _signature(block, isa: str) -> Counter:
    """What a basic block does that does not depend on the ISA, per source line: its data
    accesses and FP lanes (the code around them differs), and each line once."""
    sig: Counter = Counter()
    for _, line, mnemonic, ops in block:
        sig[line, "line"] = 1
        if isa == "x86_64":
            sig[line, "access"] += _x86_accesses(mnemonic, ops)
            cls = insn_class(mnemonic)
            sig[line, "fp"] += fp_lanes(mnemonic) if cls in ("fp", "divsqrt", "convert") else 0
        else:
            c = a64_classes(mnemonic, ops)
            sig[line, "access"] += c.get("loads", 0) + c.get("stores", 0)
            sig[line, "fp"] += c.get("fp_lanes", 0) + c.get("convert", 0)
    return +sig


def _similarity(a: Counter, b: Counter) -> float:
    """Weighted Jaccard similarity of two block signatures: what they share over what either
    has, so that size counts too (an unrolled loop and its remainder share lines)."""
    keys = a.keys() | b.keys()
    return sum(min(a[k], b[k]) for k in keys) / sum(max(a[k], b[k]) for k in keys)


def _block_runs(x86_lines, a64_lines, runs: dict[int, int]) -> list[tuple[float, str, str]]:
    """(executions, mnemonic, operands) of each aarch64 instruction of one function: each
    aarch64 basic block runs as often as the x86-64 block most like it (_similarity of their
    _signature). Source lines alone do not tell blocks apart: an unrolled loop and its
    remainder share them, and the ISAs differ in registers, so one line's spills may sit in
    a loop on one ISA only. A block like none runs at the function's average."""
    x86_blocks = [(_signature(block, "x86_64"), max(runs.get(off, 0) for off, *_ in block))
                  for block in _blocks(x86_lines)]
    average = sum(runs.values()) / max(1, len(runs))
    out = []
    for block in _blocks(a64_lines):
        sig = _signature(block, "aarch64")
        score, runs_here = max(((_similarity(sig, s), n) for s, n in x86_blocks),
                               default=(0, average))
        out += [(runs_here if score > 0 else average, mnemonic, ops)
                for _, _, mnemonic, ops in block]
    return out


def _add(into: dict[str, float], classes: dict[str, int], weight: float) -> None:
    for k, v in classes.items():
        into[k] += weight * v


def aarch64_counts(x86_elf: Path, a64_elf: Path, x86_obj: Path, a64_obj: Path,
                   executed: dict[int, int]) -> dict[str, float]:
    """Estimated executions of each A64_COUNTS class by the aarch64 build, from the x86-64
    build's per-address execution counts (`executed`): block by block in the functions the
    application objects have line tables for (_block_runs), whole functions otherwise (the C
    library: each aarch64 instruction as often as the function's x86-64 ones on average)."""
    x86, a64 = _objdump(x86_elf), _objdump(a64_elf)
    x86_lines = _objdump(x86_obj, "-l", "--x86-asm-syntax=intel")
    a64_lines = _objdump(a64_obj, "-l")
    total = dict.fromkeys(A64_COUNTS, 0.0)
    for name, (base, insns) in x86.items():
        if name not in a64 or not insns:
            continue
        runs = {off: executed[base + off] for off, *_ in insns if base + off in executed}
        if not runs:
            continue
        if name in x86_lines and name in a64_lines:
            weighted = _block_runs(x86_lines[name][1], a64_lines[name][1], runs)
        else:
            average = sum(runs.values()) / len(insns)
            weighted = [(average, mnemonic, ops) for _, _, mnemonic, ops in a64[name][1]]
        for weight, mnemonic, ops in weighted:
            _add(total, a64_classes(mnemonic, ops), weight)
            total["code"] += weight > 0
    return total


def measure_aarch64(build_dir: Path) -> dict[str, float]:
    """A64_COUNTS of a Linux-mode image's aarch64 build (aarch64_counts), from a callgrind run
    of its x86-64 build; `build_dir` is the image's kept build directory (`hexo build --linux
    --keep-build-dir`). Also "x86_insns": the instructions that run executed."""
    x86_elf = build_dir / "x86_64" / "final.elf"
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "callgrind.out"
        _valgrind("callgrind", ["--dump-instr=yes"], x86_elf, out)
        events, costs, summary = parse_callgrind(out.read_text())
    ir = events.index("Ir")
    executed = {addr: c[ir] for addr, c in costs.get(str(x86_elf.resolve()), {}).items()}
    if not executed:
        raise MixError(f"callgrind counted no instruction of {x86_elf}")
    counts = aarch64_counts(x86_elf, build_dir / "aarch64" / "final.elf",
                            build_dir / "x86_64" / "app.o", build_dir / "aarch64" / "app.o",
                            executed)
    return {**counts, "x86_insns": summary[ir]}
