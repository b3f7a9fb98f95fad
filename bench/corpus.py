"""Overhead of migratable builds over the whole corpus (pyperf).

    .venv/bin/python bench/corpus.py [--class W] [-o results.json] [pyperf options]

Every program of hexo.workloads.CORPUS is built three times, plain (--no-migratable, -O2),
migratable (statepoints, restricted code generation) and with --auto-points (a tested point at
every function entry and outer loop head, so nearly every call is a statepoint), and all three
run side by side in this one run on KVM x86-64. The time compared is the CPU time of the
guest's run that `uhyve-ctl run --stats` reports (VM set-up excluded): wall time on this
2-core machine swung by 2x with other load, CPU time by a few per cent. Target: geometric
mean of migratable / plain <= 1.05x; auto-points has no target of its own, its ratio says what
the points cost. Class W by default (a fraction of a second to a few seconds per program
natively); each run is checked to verify itself, so a wrong result cannot pass as a fast one.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pyperf

from hexo.workloads import CORPUS
from hexo_sched.agents import stats_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGES = ROOT / "build" / "bench"
TARGET = 1.05
VERIFIED = re.compile(r"(?<!UN)SUCCESSFUL")
# variant name -> hexo build flags
VARIANTS = {"plain": ["--no-migratable"], "migratable": [], "auto-points": ["--auto-points"]}


def _path(workload: str, klass: str, variant: str) -> Path:
    return IMAGES / f"{workload}.{klass}.{variant}.hexo"


def build_images(klass: str) -> None:
    """Once per run, in the parent process only (pyperf workers re-run this script)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    for workload in CORPUS:
        for variant, flags in VARIANTS.items():
            subprocess.run([BIN / "hexo", "build", "--workload", workload, "--class", klass,
                            "-o", _path(workload, klass, variant), *flags],
                           check=True, stdout=subprocess.DEVNULL)


def guest_cpu_time(image: Path):
    """A pyperf time function: the CPU time of the guest's run as uhyve-ctl --stats reports it."""
    def timed(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            p = subprocess.run([BIN / "uhyve-ctl", "run", image, "--isa", "x86_64", "--stats"],
                               capture_output=True, text=True)
            if p.returncode != 0 or not VERIFIED.search(p.stdout):
                raise RuntimeError(f"{image.name} did not verify:\n{p.stdout[-500:]}{p.stderr}")
            total += stats_cpu_seconds(p.stderr)
        return total
    return timed


def main() -> None:
    runner = pyperf.Runner(processes=3, values=2, warmups=1,
                           add_cmdline_args=lambda cmd, args: cmd.extend(["--class",
                                                                          args.klass]))
    runner.argparser.add_argument("--class", dest="klass", default="W",
                                  help="problem class of every program (default W)")
    args = runner.parse_args()
    if not args.worker:
        build_images(args.klass)
    results = {}
    for workload in CORPUS:
        for variant in VARIANTS:
            results[workload, variant] = runner.bench_time_func(
                f"{workload}-{args.klass}-{variant}",
                guest_cpu_time(_path(workload, args.klass, variant)))
    if args.worker or any(b is None for b in results.values()):
        return
    print(f"\nmigratable and auto-points / plain build, guest CPU time on KVM x86-64, class "
          f"{args.klass} (measured side by side in this run):")
    ratios = {"migratable": [], "auto-points": []}
    for workload in CORPUS:
        plain = results[workload, "plain"].mean()
        line = f"  {workload:12} {plain * 1e3:9.1f} ms"
        for variant, kept in ratios.items():
            t = results[workload, variant].mean()
            kept.append(t / plain)
            line += f"  {variant} {t * 1e3:9.1f} ms {t / plain:5.3f}x"
        print(line)
    for variant, kept in ratios.items():
        geo = math.exp(sum(map(math.log, kept)) / len(kept))
        goal = f" (target <= {TARGET}x)" if variant == "migratable" else ""
        print(f"  {variant}: geometric mean over {len(kept)} programs {geo:.3f}x{goal}")


if __name__ == "__main__":
    main()
