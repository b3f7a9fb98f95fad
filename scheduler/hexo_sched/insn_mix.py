"""Instruction mix of a native run, derived without hardware counters.

What a PMU would count (instructions, loads, stores, branches, mispredictions, FP operations,
L1 and last-level cache misses) is derived here from `valgrind --tool=callgrind` run on the
workload's native build: with `--dump-instr=yes` it gives, per executed instruction address,
instruction, data-read and data-write counts and the misses of its cache and branch
simulators; each address is classified by its mnemonic from `objdump -d`. A second run
(cachegrind, SOFT_TLB) counts what an emulated board adds: refills of its software TLB.
Counts are exact for the simulated caches and predictor (geometry pinned in CACHES),
deterministic, and do not depend on how loaded the machine is. They are derived, not
hardware, and say so.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import defaultdict
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
