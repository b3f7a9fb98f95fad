"""Guest I/O benchmarks (pyperf): each target is a ratio measured side by side in this run.

    .venv/bin/python bench/io.py [-o results.json] [pyperf options]

Pairs: an output-heavy job (100,000 fprintf(stderr) lines and 100,000 printf lines, to
files) run whole by `uhyve-ctl run` on KVM vs the same program built natively (target
<= 1.5x); 1 MiB written with fwrite in 4 KiB chunks to a mounted directory and read back,
KVM vs native (target <= 1.5x), and 16 MiB the same way (the I/O path with start-up
amortised: the 1 MiB job ends in ~4 ms natively, less than the interpreter takes to start
`uhyve-ctl`, whose own target is `bench/run.py`'s). Two floors under the 1 MiB job's ratio,
against the same native job: a bare `python -c pass`, and the guest's own run (`uhyve-ctl
run --stats`, no start-up), which on a nested PVM host pays ~70 µs per exit and ~20 µs for
the first touch of each 4 KiB guest page (shadow paging) where the native job pays ~1.5 µs.
The same output-heavy job on the emulated arm64 CPU vs its own compute-only variant, which
formats the same lines into memory (target <= 3x). Also the cost of one hypercall exit
(KVM_RUN return -> handler -> KVM_RUN), in µs, from a guest making 20,000 FSTAT hypercalls
(of its stdout, a regular file) vs none, by the run time `uhyve-ctl run --stats` reports.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyperf

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGES = ROOT / "build" / "bench"
PROGRAM = ROOT / "tests" / "programs" / "chatty.c"
GUEST, NATIVE = IMAGES / "chatty.hexo", IMAGES / "chatty.native"
LINES = "100000"
EXITS = 20000


def build_images() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    for out, flags in ((GUEST, []), (NATIVE, ["--native"])):
        subprocess.run([BIN / "hexo", "build", PROGRAM, *flags, "-o", out], check=True,
                       stdout=subprocess.DEVNULL)


def to_files(cmd: list[str]):
    """Run `cmd` with stdout and stderr to regular files (as a batch job's would be)."""
    def timed(loops: int) -> float:
        total = 0.0
        with tempfile.TemporaryDirectory() as d:
            for _ in range(loops):
                with open(f"{d}/out", "wb") as out, open(f"{d}/err", "wb") as err:
                    t0 = time.perf_counter()
                    subprocess.run(cmd, stdout=out, stderr=err, check=True)
                    total += time.perf_counter() - t0
        return total
    return timed


def file_io(native: bool, chunks: int = 256):
    def timed(loops: int) -> float:
        total = 0.0
        with tempfile.TemporaryDirectory() as d:
            cmd = ([str(NATIVE), "file", str(chunks), f"{d}/out.bin"] if native else
                   [str(BIN / "uhyve-ctl"), "run", "--mount", f"{d}:/data", str(GUEST), "--",
                    "file", str(chunks), "/data/out.bin"])
            for _ in range(loops):
                t0 = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
                total += time.perf_counter() - t0
        return total
    return timed


def file_guest_run(loops: int) -> float:
    """The 1 MiB job's guest run alone, as `uhyve-ctl run --stats` reports it (VM set-up and
    the interpreter's start left out): with `python -c pass`, the floor under that job's
    whole-job ratio on this host."""
    total = 0.0
    with tempfile.TemporaryDirectory() as d:
        for _ in range(loops):
            err = subprocess.run([str(BIN / "uhyve-ctl"), "run", "--stats", "--mount",
                                  f"{d}:/data", str(GUEST), "--", "file", "256", "/data/o"],
                                 check=True, text=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE).stderr
            total += float(re.search(r"run ([\d.]+) ms", err)[1]) / 1e3
    return total


def bare_python(loops: int) -> float:
    total = 0.0
    for _ in range(loops):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        total += time.perf_counter() - t0
    return total


def exit_cost(loops: int) -> float:
    """Seconds that EXITS hypercall exits take, `loops` times: the guest run time (`--stats`)
    of a job making EXITS FSTAT hypercalls minus that of one making none. It returns time
    spent, not time per exit, so that pyperf's loop calibration sees what a loop costs (per
    exit, it kept doubling the loops and never finished); pyperf divides by inner_loops."""
    total = 0.0
    with tempfile.TemporaryFile() as out:   # fstat of /dev/null is answered in the guest
        for _ in range(loops):
            runs = []
            for n in (EXITS, 0):
                err = subprocess.run([str(BIN / "uhyve-ctl"), "run", "--backend", "kvm",
                                      "--stats", str(GUEST), "--", "fstat", str(n)], check=True,
                                     text=True, stdout=out, stderr=subprocess.PIPE).stderr
                runs.append(float(re.search(r"run ([\d.]+) ms", err)[1]) / 1e3)
            total += runs[0] - runs[1]
    return total


def main() -> None:
    runner = pyperf.Runner(processes=3, values=2, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        build_images()
    uhyve = [str(BIN / "uhyve-ctl"), "run"]
    results = {
        "lines-native": runner.bench_time_func(
            "lines-native", to_files([str(NATIVE), "lines", LINES])),
        "lines-kvm": runner.bench_time_func(
            "lines-kvm", to_files(uhyve + [str(GUEST), "--", "lines", LINES])),
        "file-native": runner.bench_time_func("file-native", file_io(True)),
        "file-kvm": runner.bench_time_func("file-kvm", file_io(False)),
        "file-guest-run": runner.bench_time_func("file-guest-run", file_guest_run),
        "python-start": runner.bench_time_func("python-start", bare_python),
        "file16-native": runner.bench_time_func("file16-native", file_io(True, 4096)),
        "file16-kvm": runner.bench_time_func("file16-kvm", file_io(False, 4096)),
        "lines-emu-aarch64": runner.bench_time_func(
            "lines-emu-aarch64",
            to_files(uhyve + ["--isa", "aarch64", str(GUEST), "--", "lines", LINES])),
        "format-emu-aarch64": runner.bench_time_func(
            "format-emu-aarch64",
            to_files(uhyve + ["--isa", "aarch64", str(GUEST), "--", "format", LINES])),
        "exit-kvm": runner.bench_time_func("exit-kvm", exit_cost, inner_loops=EXITS),
    }
    if runner.args.worker or any(b is None for b in results.values()):
        return
    t = {k: b.mean() for k, b in results.items()}
    print("\nratios (measured side by side in this run):")
    for label, a, b, target in (
            ("100k+100k lines, KVM / native", "lines-kvm", "lines-native", 1.5),
            ("1 MiB fwrite+fread, KVM / native", "file-kvm", "file-native", 1.5),
            ("16 MiB fwrite+fread, KVM / native", "file16-kvm", "file16-native", 1.5),
            ("lines, emulated arm64 / compute-only", "lines-emu-aarch64", "format-emu-aarch64",
             3.0)):
        print(f"  {label:38} {t[a] / t[b]:6.2f}x (target <= {target}x; "
              f"{t[a] * 1e3:.0f} vs {t[b] * 1e3:.0f} ms)")
    for label, a in (("bare `python -c pass`", "python-start"),
                     ("the guest's run alone (--stats)", "file-guest-run")):
        print(f"  1 MiB job floor: {label:31} {t[a] / t['file-native']:6.2f}x native "
              f"({t[a] * 1e3:.1f} ms)")
    print(f"  {'hypercall exit round trip, KVM':38} {t['exit-kvm'] * 1e6:6.1f} µs")


if __name__ == "__main__":
    main()
