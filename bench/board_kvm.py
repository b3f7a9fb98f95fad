"""Board benchmarks (pyperf): hexo guests on the KVM of an arm64 board VM.

    .venv/bin/python bench/board_kvm.py [-o results.json] [pyperf options]

Pairs, measured side by side on one board in this run (absolute times are TCG's, only the
ratios mean something):
- guest compute: NPB kernels (class S) in a KVM guest on the board vs the same C code as a
  static Linux process in the board, by NPB's own timer (its timed section);
- exit cost: one hypercall round trip on board KVM (guest -> uhyve-ctl in the board -> guest)
  vs one system call of a board process, each timed by the program over N calls.
The parent process boots one board in a private state directory (passed to pyperf's workers,
which connect to it) and shuts it down at the end.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyperf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "uhyve-ctl"), str(ROOT / "scheduler")]

from hexo_sched.boards import vm  # noqa: E402

BIN = Path(sys.executable).parent
IMAGES = ROOT / "build" / "bench-board"
BOARD = "kvmbench"
KERNELS = ("ep", "is", "cg")
CALLS = 1000                     # hypercalls per measurement (~0.1-0.5 ms each on board KVM)
_conn = None


def build_images() -> None:
    """Once per run, in the parent process only (pyperf workers re-run this script)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    hexo = str(BIN / "hexo")
    for kernel in KERNELS:
        base = ["--workload", f"npb-{kernel}", "--class", "S"]
        subprocess.run([hexo, "build", *base, "-o", IMAGES / f"{kernel}.hexo"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([hexo, "build", *base, "--native", "--native-isa", "aarch64", "-o",
                        IMAGES / kernel], check=True, stdout=subprocess.DEVNULL)
    loop = ROOT / "bench" / "programs" / "hypercall_loop.c"
    subprocess.run([hexo, "build", loop, "-o", IMAGES / "loop.hexo"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([hexo, "build", loop, "--native", "--native-isa", "aarch64", "-o",
                    IMAGES / "loop"], check=True, stdout=subprocess.DEVNULL)


def board_run(cmd: list[str]) -> str:
    """stdout of cmd run on the board next to copies of the bench images."""
    global _conn
    if _conn is None:
        _conn = vm.Board.running(BOARD).connect()
    out, err = io.BytesIO(), io.BytesIO()
    status = _conn.run(cmd, puts=[IMAGES], stdout=out, stderr=err)
    if status != 0:
        raise RuntimeError(f"{cmd} on {BOARD}: {err.getvalue().decode(errors='replace')}")
    return out.getvalue().decode()


def npb_timer(cmd: list[str]):
    """A pyperf time function returning NPB's own "Time in seconds" of a run on the board."""
    def timed(loops: int) -> float:
        return sum(float(re.search(r"Time in seconds =\s+(\S+)", board_run(cmd))[1])
                   for _ in range(loops))
    return timed


def per_call(cmd: list[str]):
    """A pyperf time function returning the time per call the loop program measured."""
    def timed(loops: int) -> float:
        return sum(float(re.search(r"([\d.]+) us per call", board_run(cmd))[1]) * 1e-6
                   for _ in range(loops))
    return timed


def main() -> None:
    runner = pyperf.Runner(processes=2, values=2, warmups=0, add_cmdline_args=lambda cmd, args:
                           cmd.extend(("--board-state", args.board_state)))
    runner.argparser.add_argument("--board-state", help="the boards' state directory (set by "
                                  "the parent for its workers)")
    args = runner.parse_args()
    if not args.worker:
        args.board_state = args.board_state or tempfile.mkdtemp(prefix="hexo-bench-board-")
    os.environ["HEXO_BOARD_STATE"] = args.board_state
    if not args.worker:
        build_images()
        vm.up(BOARD)
    d = IMAGES.name
    results = {}
    try:
        for k in KERNELS:
            results[f"npb-{k}-S-board-native"] = runner.bench_time_func(
                f"npb-{k}-S-board-native", npb_timer([f"./{d}/{k}"]))
            results[f"npb-{k}-S-board-kvm"] = runner.bench_time_func(
                f"npb-{k}-S-board-kvm", npb_timer(["uhyve-ctl", "run", f"{d}/{k}.hexo",
                                                    "--backend", "kvm"]))
        results["board-syscall"] = runner.bench_time_func(
            "board-syscall", per_call([f"./{d}/loop", str(CALLS)]))
        results["board-kvm-exit"] = runner.bench_time_func(
            "board-kvm-exit", per_call(["uhyve-ctl", "run", f"{d}/loop.hexo", "--backend",
                                        "kvm", "--", str(CALLS)]))
    finally:
        if not args.worker:
            vm.down(BOARD)
    if runner.args.worker or any(b is None for b in results.values()):
        return
    t = {k: b.mean() for k, b in results.items()}
    print("\nratios (measured side by side on one board in this run):")
    for k in KERNELS:
        print(f"  NPB {k.upper()}.S board KVM guest / board process, NPB timer "
              f"{t[f'npb-{k}-S-board-kvm'] / t[f'npb-{k}-S-board-native']:6.2f}x")
    print(f"  hypercall exit on board KVM        {t['board-kvm-exit'] * 1e6:8.1f} us "
          f"({t['board-kvm-exit'] / t['board-syscall']:.0f}x a board system call, "
          f"{t['board-syscall'] * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
