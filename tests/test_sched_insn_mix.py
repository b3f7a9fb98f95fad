"""Derived counters: callgrind's per-instruction costs classified by mnemonic (insn_mix)."""

import shutil
import subprocess

import pytest

from hexo_sched import insn_mix
from hexo_sched.insn_mix import MixError, insn_class, parse_callgrind

EVENTS = " ".join(insn_mix.REQUIRED)

CALLGRIND_OUT = f"""# callgrind format
version: 1
positions: instr line
events: {EVENTS}
summary: 130 0 0 0 0 0 0 0 0 0 0 0 0

ob=(1) /bin/prog
fl=(1) prog.c
fn=(1) main
0x1000 3 10 4 1
+4 * 20 0 2
calls=1 0x2000 9
* * 1000 999
cob=(2) /lib/libm.so
calls=1 0x30 9
+8 4 7
-8 * 5
ob=(2)
fn=(2) sqrt
0x30 0 88
"""


def test_callgrind_instruction_costs_are_parsed_with_relative_positions():
    events, costs, summary = parse_callgrind(CALLGRIND_OUT)
    assert events == list(insn_mix.REQUIRED) and summary[0] == 130
    zeros = [0] * (len(events) - 3)
    # the cost lines that follow calls= are inclusive costs of the callee: not counted here
    assert costs["/bin/prog"] == {0x1000: [10, 4, 1] + zeros,
                                  0x1004: [25] + [0, 2] + zeros}
    assert costs["/lib/libm.so"] == {0x30: [88] + [0] * (len(events) - 1)}


def test_callgrind_without_instruction_positions_or_events_is_refused():
    with pytest.raises(MixError, match="dump-instr"):
        parse_callgrind(f"positions: line\nevents: {EVENTS}\nsummary: 1\n")
    with pytest.raises(MixError, match="not a callgrind"):
        parse_callgrind("garbage")
    with pytest.raises(MixError, match="without cache and branch"):
        insn_mix.mix_counts(["Ir"], {}, {})


@pytest.mark.parametrize("mnemonic, cls", [
    ("mulsd", "fp"), ("vaddpd", "fp"), ("ucomisd", "fp"), ("cvtsi2sd", "convert"),
    ("vfmadd231sd", "fp"), ("fmul", "fp"), ("cvttpd2dq", "convert"), ("fild", "convert"),
    ("divsd", "divsqrt"), ("sqrtpd", "divsqrt"),
    ("vdivps", "divsqrt"), ("fdivp", "divsqrt"), ("fsqrt", "divsqrt"), ("movsd", "other"),
    ("xorpd", "other"), ("imul", "other"), ("add", "other"), ("paddd", "other"),
    ("nop", "other")])
def test_instruction_classes(mnemonic, cls):
    assert insn_class(mnemonic) == cls


@pytest.mark.parametrize("mnemonic, packed, lanes", [
    ("mulsd", False, 1), ("addss", False, 1), ("mulpd", True, 2), ("vaddps", True, 4),
    ("sqrtpd", True, 2), ("movupd", True, 2), ("paddd", True, 2), ("pxor", True, 2),
    ("movdqu", True, 2), ("unpcklpd", True, 2), ("push", False, 1), ("pop", False, 1),
    ("cmps", False, 1), ("movsd", False, 1), ("fmul", False, 1), ("cvtdq2pd", True, 2),
    ("cvttps2dq", True, 4), ("cvtsi2sd", False, 1), ("cvtsd2ss", False, 1)])
def test_packed_simd_instructions_and_their_fp_lanes(mnemonic, packed, lanes):
    assert insn_mix.is_packed(mnemonic) == packed
    assert insn_mix.fp_lanes(mnemonic) == lanes


PROGRAM = r"""
#include <stdio.h>
volatile double a = 1.0001, b = 0.9999;
int main(void) {
    double x = 1.0, y = 0.0;
    for (int i = 0; i < N; i++) { x = x * a; y = y + b / x; }
    printf("%f %f\n", x, y);
    return 0;
}
"""


@pytest.mark.skipif(not (shutil.which("valgrind") and shutil.which("clang")),
                    reason="needs valgrind and clang")
def test_a_real_run_counts_what_the_program_does(tmp_path):
    """Per loop iteration: one FP multiply, one add, one division, two volatile loads, one
    loop branch. Two loop counts, so that the C library's start-up cancels out (printf's
    work differs a little with the digits it prints, hence the looser bounds)."""
    src = tmp_path / "loop.c"
    src.write_text(PROGRAM)
    counts = []
    for n in (20000, 80000):
        exe = tmp_path / f"loop{n}"
        subprocess.run(["clang", "-O1", f"-DN={n}", "-o", exe, src], check=True)
        counts.append(insn_mix.measure(exe))
    per = {k: (counts[1][k] - counts[0][k]) / 60000 for k in counts[0]}
    assert per["divsqrt"] == pytest.approx(1, abs=1e-3)
    assert per["fp"] == pytest.approx(2, abs=1e-3)
    assert per["loads"] == pytest.approx(2, abs=0.02)
    assert per["branches"] == pytest.approx(1, abs=0.02)
    assert per["stores"] == pytest.approx(0, abs=0.02)
    assert per["fp_lanes"] == pytest.approx(3, abs=1e-3)      # scalar: one value each
    assert per["simd_accesses"] == pytest.approx(0, abs=0.02)
    assert 6 <= per["instructions"] <= 12


PAGES = r"""
#include <stdlib.h>
int main(void) {
    char *p = calloc(PAGES, 4096);
    long sum = 0;
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < PAGES; i++) sum += p[(long)i * 4096 + round];
    return sum != 0;
}
"""


@pytest.mark.skipif(not (shutil.which("valgrind") and shutil.which("clang")),
                    reason="needs valgrind and clang")
def test_soft_tlb_misses_follow_the_page_footprint(tmp_path):
    """A loop over 64 pages stays in a 256-entry TLB (only the first round refills); one over
    1024 pages, 4x its reach, refills on every access."""
    src = tmp_path / "pages.c"
    src.write_text(PAGES)
    misses = {}
    for pages in (64, 1024):
        exe = tmp_path / f"pages{pages}"
        subprocess.run(["clang", "-O1", f"-DPAGES={pages}", "-o", exe, src], check=True)
        misses[pages] = insn_mix.soft_tlb_misses(exe) / (200 * pages)
    assert misses[64] < 0.1
    assert misses[1024] > 0.9


def test_calibration_reads_the_run_and_cpu_times_uhyve_ctl_reports():
    from hexo_sched.agents import stats_cpu_seconds, stats_run_seconds
    line = "uhyve-ctl: x86_64 on kvm: setup 139.4 ms, run 19.2 ms, cpu 8.1 ms, 8 hypercalls\n"
    assert stats_run_seconds(line) == pytest.approx(0.0192)
    assert stats_cpu_seconds(line) == pytest.approx(0.0081)
    assert stats_cpu_seconds("uhyve-ctl: x86_64 on kvm: run 19.2 ms, 8 hypercalls") is None


@pytest.mark.parametrize("mnemonic,operands,counts", [
    ("ldr", "x0, [x1, #8]", {"loads": 1}),
    ("ldp", "x29, x30, [sp], #16", {"loads": 2}),
    ("ldr", "q0, [x8]", {"loads": 1, "simd_accesses": 1}),
    ("ld1", "{ v0.2d, v1.2d }, [x0]", {"loads": 2, "simd_accesses": 2}),
    ("stp", "q0, q1, [x9, #-32]", {"stores": 2, "simd_accesses": 2}),
    ("fadd", "d0, d0, d1", {"fp": 1, "fp_lanes": 1}),
    ("fmla", "v0.2d, v1.2d, v2.2d", {"fp": 1, "fp_lanes": 2}),
    ("fmul", "v0.4s, v1.4s, v2.4s", {"fp": 1, "fp_lanes": 4}),
    ("fsqrt", "d0, d1", {"fp": 1, "fp_lanes": 1, "divsqrt": 1}),
    ("fdiv", "v0.2d, v0.2d, v1.2d", {"fp": 1, "fp_lanes": 2, "divsqrt": 2}),
    ("scvtf", "d0, x1", {"convert": 1}),
    ("fcvtzs", "v0.2d, v0.2d", {"convert": 2}),
    ("fmov", "d0, x1", {}),                   # a move: no softfloat helper
    ("fneg", "d0, d0", {}),
    ("add", "v0.4s, v0.4s, v1.4s", {}),       # integer SIMD: no FP helper
    ("b.ne", "0x40 <main+0x40>", {"branches": 1}),
    ("cbz", "x0, 0x10 <f+0x10>", {"branches": 1}),
    ("bl", "0x0 <g>", {"branches": 1}),
    ("ret", "", {"branches": 1, "indirect_branches": 1}),
    ("blr", "x8", {"branches": 1, "indirect_branches": 1}),
])
def test_aarch64_instruction_classes(mnemonic, operands, counts):
    assert insn_mix.a64_classes(mnemonic, operands) == {"insns": 1, **counts}


def exact_aarch64_counts(elf) -> dict[str, int]:
    """What the aarch64 build executes, counted exactly: qemu-user logs every translation
    block it translates (its instructions) and every one it runs (chaining off)."""
    import re
    from collections import Counter
    p = subprocess.run(["qemu-aarch64-static", "-d", "in_asm,exec,nochain", "-D", "/dev/stderr",
                        str(elf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       check=True)
    blocks, current, runs = {}, None, Counter()
    for line in p.stderr.splitlines():
        if line.startswith("IN:"):
            current = []
        elif current is not None and line.startswith("0x"):
            m = re.match(r"0x([0-9a-f]+):\s+[0-9a-f]+\s+(\S+)\s*(.*)", line)
            current.append((int(m[1], 16), m[2], m[3]))
        else:
            if current:
                blocks[current[0][0]] = current
            current = None
            if line.startswith("Trace"):
                runs[int(line.split("[")[1].split("/")[1], 16)] += 1
    total = Counter()
    for pc, n in runs.items():
        for _, mnemonic, operands in blocks[pc]:
            for k, v in insn_mix.a64_classes(mnemonic, operands).items():
                total[k] += n * v
    return total


@pytest.mark.skipif(not (shutil.which("valgrind") and shutil.which("qemu-aarch64-static")),
                    reason="needs valgrind and qemu-user")
@pytest.mark.parametrize("workload", ["montecarlo", "npb-is"])
def test_aarch64_mix_from_x86_counts_matches_the_aarch64_run(tmp_path, workload):
    """The aarch64 build's instructions estimated from a callgrind run of the x86-64 build
    (line tables and blocks) against those the aarch64 build executes under qemu-user."""
    from hexo import workloads
    from hexo.toolchain.build import BuildRequest, build
    w = workloads.get(workload)
    build(BuildRequest(w.paths(), tmp_path / "w.hexo", workload, w.defines("S"),
                       migratable=True, linux=True), keep=tmp_path / "b")
    est = insn_mix.measure_aarch64(tmp_path / "b")
    exact = exact_aarch64_counts(tmp_path / "b" / "aarch64" / "final.elf")
    for k in insn_mix.A64_COUNTS:
        if exact[k] > 0.01 * exact["insns"]:
            assert est[k] == pytest.approx(exact[k], rel=0.1), k
    assert 0.5 < est["insns"] / est["x86_insns"] < 2
