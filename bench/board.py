"""arm64 board VM benchmark (pyperf), side by side in one run (the board image must be built:
`hexo board build`):

    .venv/bin/python bench/board.py [-o results.json] [pyperf options]

- board boot: `hexo board up` from nothing to an SSH login (hexo's code pushed), i.e. what a
  test session or the scheduler waits for before a board is usable;
- a command on the board over the connection already open vs over a new SSH connection
  (what `hexo board exec` pays per call: the key exchange under TCG). The ratio is why the
  scheduler and the tests keep one connection per board (target: >= 5x).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyperf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "uhyve-ctl"), str(ROOT / "scheduler")]

from hexo_sched.boards import vm  # noqa: E402

if "HEXO_BOARD_STATE" not in os.environ:
    os.environ["HEXO_BOARD_STATE"] = tempfile.mkdtemp(prefix="hexo-bench-board-")
    atexit.register(shutil.rmtree, os.environ["HEXO_BOARD_STATE"], True)


def boot(loops: int) -> float:
    total = 0.0
    for i in range(loops):
        name = f"bench{os.getpid()}x{i}"
        t0 = time.perf_counter()
        vm.up(name)
        total += time.perf_counter() - t0
        vm.down(name)
    return total


_board = None


def board():
    global _board
    if _board is None:
        _board = vm.up(f"bench{os.getpid()}")
        atexit.register(vm.down, _board.name)
    return _board


def command_on_open_connection(loops: int) -> float:
    with board().connect() as conn:
        conn.host.sh("true")
        t0 = time.perf_counter()
        for _ in range(loops):
            conn.host.sh("true")
        return time.perf_counter() - t0


def command_on_new_connection(loops: int) -> float:
    b = board()
    t0 = time.perf_counter()
    for _ in range(loops):
        with b.connect() as conn:
            conn.host.sh("true")
    return time.perf_counter() - t0


def main() -> None:
    runner = pyperf.Runner(processes=1, values=3, warmups=1, loops=1)
    runner.parse_args()
    up = runner.bench_time_func("board-boot-to-ssh-login", boot)
    open_ = runner.bench_time_func("board-command-open-connection", command_on_open_connection)
    new = runner.bench_time_func("board-command-new-connection", command_on_new_connection)
    if runner.args.worker or None in (up, open_, new):
        return
    print("\narm64 board VM (qemu-system-aarch64, TCG; measured side by side in this run):")
    print(f"  boot to SSH login          {up.mean():6.1f} s")
    print(f"  command, new connection / open connection  {new.mean() / open_.mean():5.1f}x "
          f"({new.mean():.2f} s vs {open_.mean():.3f} s; target >= 5x)")


if __name__ == "__main__":
    main()
