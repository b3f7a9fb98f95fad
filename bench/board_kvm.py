"""Board benchmarks (pyperf): hexo guests on the KVM of an arm64 board VM, timed on the board.

    .venv/bin/python bench/board_kvm.py [-o results.json] [--board NAME] [pyperf options]

The host builds the programs, boots a board (or uses `--board NAME`, already up) and runs this
same file there with ONE `hexo board exec`: pyperf's runner and its workers run on the board
next to the programs, so no SSH round trip lands inside a measurement. The suite comes back as
pyperf JSON; the host prints the ratios (absolute times are TCG's, only ratios mean something):
- guest compute: NPB EP and CG (class S) in a KVM guest on the board vs the same C code as a
  static Linux process in the board, by NPB's own timer (its timed section);
- exit cost: one hypercall round trip on board KVM (guest -> uhyve-ctl in the board -> guest)
  vs one system call of a board process, each timed by the program over N calls.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pyperf

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("ep", "cg")           # NPB prints its timer to 10 ms: IS.S takes about that long
CALLS = 1000                     # hypercalls per measurement (~0.1-0.5 ms each on board KVM)
IMAGES = "board-images"          # the programs' directory, on the host under build/ and on the board
BOARD_FLAG = "--on-board"


# -- on the board -------------------------------------------------------------------------------
def _output(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return p.stdout


def npb_timer(cmd: list[str]):
    """A pyperf time function returning NPB's own "Time in seconds" of runs of cmd."""
    def timed(loops: int) -> float:
        return sum(float(re.search(r"Time in seconds =\s+(\S+)", _output(cmd))[1])
                   for _ in range(loops))
    return timed


def calls_timer(cmd: list[str]):
    """A pyperf time function returning the time the loop program measured for its CALLS
    calls (pyperf divides by inner_loops=CALLS: the value is one call). Not the per-call time
    itself, which would make pyperf's loop calibration run the program thousands of times."""
    def timed(loops: int) -> float:
        return sum(float(re.search(r"calls in ([\d.]+) us", _output(cmd))[1]) * 1e-6
                   for _ in range(loops))
    return timed


def on_board() -> None:
    # loops=1: every value is one program run of seconds on a TCG board, so pyperf's loop
    # calibration would only add a run per benchmark
    runner = pyperf.Runner(processes=1, values=3, warmups=0, loops=1,
                           program_args=(sys.argv[0], BOARD_FLAG))
    runner.argparser.add_argument(BOARD_FLAG, action="store_true")
    runner.parse_args()
    kvm = ["uhyve-ctl", "run", "--backend", "kvm"]
    for k in KERNELS:
        runner.bench_time_func(f"npb-{k}-S-board-native", npb_timer([f"./{IMAGES}/{k}"]))
        runner.bench_time_func(f"npb-{k}-S-board-kvm", npb_timer([*kvm, f"{IMAGES}/{k}.hexo"]))
    runner.bench_time_func("board-syscall", calls_timer([f"./{IMAGES}/loop", str(CALLS)]),
                           inner_loops=CALLS)
    runner.bench_time_func("board-kvm-exit",
                           calls_timer([*kvm, f"{IMAGES}/loop.hexo", "--", str(CALLS)]),
                           inner_loops=CALLS)


# -- on the host --------------------------------------------------------------------------------
def build_programs(hexo: str, out: Path) -> None:
    """Each kernel as a hexo image and as a static aarch64 Linux executable; the loop too."""
    out.mkdir(parents=True, exist_ok=True)
    loop = ROOT / "bench" / "programs" / "hypercall_loop.c"
    sources = [(k, ["--workload", f"npb-{k}", "--class", "S"]) for k in KERNELS]
    for name, src in [*sources, ("loop", [str(loop)])]:
        for flags, target in (([], f"{name}.hexo"), (["--native", "--native-isa", "aarch64"],
                                                     name)):
            subprocess.run([hexo, "build", *src, *flags, "-o", out / target], check=True,
                           stdout=subprocess.DEVNULL)


def run_on_board(hexo: str, board: str, programs: Path, pyperf_args: list[str]) -> str:
    """The pyperf JSON of this file's board half, run on `board` by one `hexo board exec`
    (its progress goes to stderr as it comes)."""
    script = (f"python3 {Path(__file__).name} {BOARD_FLAG} -o suite.json "
              f"{shlex.join(pyperf_args)} >&2 && cat suite.json")
    p = subprocess.run([hexo, "board", "exec", board, "--put", programs,
                        "--put", Path(__file__), "--put", Path(pyperf.__file__).parent,
                        "--", "sh", "-c", script], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"board_kvm: the board run failed ({p.returncode})")
    return p.stdout


def report(suite: pyperf.BenchmarkSuite) -> None:
    t = {b.get_name(): b.mean() for b in suite.get_benchmarks()}
    print("\nratios (measured side by side on one board in this run):")
    for k in KERNELS:
        print(f"  NPB {k.upper()}.S board KVM guest / board process, NPB timer "
              f"{t[f'npb-{k}-S-board-kvm'] / t[f'npb-{k}-S-board-native']:6.2f}x")
    print(f"  hypercall exit on board KVM        {t['board-kvm-exit'] * 1e6:8.1f} us "
          f"({t['board-kvm-exit'] / t['board-syscall']:.0f}x a board system call, "
          f"{t['board-syscall'] * 1e6:.1f} us)")


def on_host() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="other options go to pyperf's runner on the board")
    ap.add_argument("-o", "--output", type=Path, help="write the pyperf suite (JSON) here")
    ap.add_argument("--board", help="a board that is already up (default: boot one, in a "
                                    "private state directory, and shut it down at the end)")
    args, pyperf_args = ap.parse_known_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "uhyve-ctl"), str(ROOT / "scheduler")]
    from hexo_sched.boards import vm
    hexo = str(Path(sys.executable).parent / "hexo")
    programs = ROOT / "build" / IMAGES
    build_programs(hexo, programs)
    board = args.board
    if board is None:
        os.environ["HEXO_BOARD_STATE"] = tempfile.mkdtemp(prefix="hexo-bench-board-")
        board = vm.up("kvmbench").name
    try:
        suite = pyperf.BenchmarkSuite.loads(run_on_board(hexo, board, programs, pyperf_args))
    finally:
        if args.board is None:
            vm.down(board)
            os.rmdir(os.environ["HEXO_BOARD_STATE"])
    if args.output:
        suite.dump(str(args.output))
    report(suite)


if __name__ == "__main__":
    if BOARD_FLAG in sys.argv:
        on_board()
    else:
        on_host()
