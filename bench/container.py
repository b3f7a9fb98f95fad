"""Cross-ISA checkpoint of a Linux process vs a plain same-ISA CRIU dump (pyperf), measured
side by side in this one run: the time H-Container reports as added migration time (10-100
ms in the paper) and the checkpoint size.

    .venv/bin/python bench/container.py [-o results.json] [pyperf options]

A small Linux-mode job (tests/programs/migratable.c) runs; "plain" stops it with SIGSTOP and
runs `criu dump`; "hexo" runs `hexo container checkpoint --to aarch64`: arm the migration
point, wait for it, `criu dump`, recode the images for aarch64. Needs root (CRIU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyperf

from run import IMAGES

ROOT = Path(__file__).resolve().parents[1]
IMAGE = IMAGES / "migratable.linux.hexo"
ROUNDS = "1000000"
_last_size = {}


def build_image() -> None:
    """Once per run, in the parent process only (pyperf workers re-run this script)."""
    from hexo.toolchain.build import BuildRequest, build
    from uhyve_ctl.container import criu
    IMAGES.mkdir(parents=True, exist_ok=True)
    build(BuildRequest([ROOT / "tests" / "programs" / "migratable.c"], IMAGE, "migratable",
                       migratable=True, linux=True))
    criu.ensure()


def _start():
    from uhyve_ctl.container import process
    exe = process.executable(process.open_image(IMAGE), process.host_isa())
    p = subprocess.Popen([exe, ROUNDS], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    time.sleep(0.05)            # past start-up, inside the job's loop
    return p


def _size(d: Path) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.suffix == ".img")


def _plain_dump(pid: int, out: Path) -> None:
    from uhyve_ctl.container import criu
    os.kill(pid, signal.SIGSTOP)
    out.mkdir()
    criu.run(["dump", "-t", str(pid)], "criu dump", out)


def _hexo_checkpoint(pid: int, out: Path) -> None:
    from uhyve_ctl.container.checkpoint import checkpoint
    checkpoint(pid, out, "aarch64")


def timed(name: str, dump):
    """pyperf's time function: `dump` of a freshly started job, per loop."""
    def run(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            p = _start()
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                dump(p.pid, Path(tmp) / "ck")
                total += time.perf_counter() - t0
                _last_size[name] = _size(Path(tmp) / "ck")
            p.wait()
        return total
    return run


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        build_image()
    plain, hexo = timed("plain", _plain_dump), timed("hexo", _hexo_checkpoint)
    results = {"plain": runner.bench_time_func("criu-dump-same-isa", plain),
               "hexo": runner.bench_time_func("hexo-checkpoint-to-aarch64", hexo)}
    if runner.args.worker or any(b is None for b in results.values()):
        return
    t = {k: b.mean() for k, b in results.items()}
    plain(1)
    hexo(1)
    print("\nLinux process checkpoint, cross-ISA (hexo) vs same-ISA plain criu dump:")
    print(f"  time: {t['hexo'] * 1e3:.1f} ms vs {t['plain'] * 1e3:.1f} ms = "
          f"{t['hexo'] / t['plain']:.2f}x, added {(t['hexo'] - t['plain']) * 1e3:.1f} ms "
          f"(H-Container: 10-100 ms)")
    print(f"  size: {_last_size['hexo']} vs {_last_size['plain']} bytes = "
          f"{_last_size['hexo'] / _last_size['plain']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
