"""hexo benchmarks (pyperf). Each target is a ratio of two things measured side by side in
this one run; absolute times are only context.

    .venv/bin/python bench/run.py [-o results.json] [pyperf options]

Pairs: VM creation -> guest main() on KVM (target <= 10 ms); whole-process `uhyve-ctl run`
of hello vs a bare interpreter start, by wall time and by CPU time (target <= 1.5x), and by
CPU time `hexo inspect` of that image and `hexo status` (its client side: no daemon answers,
so it ends at its one-line error); NPB kernels in the KVM guest vs the
same kernels built natively (target <= 1.05x), by NPB's own timer (the timed section, as NPB
reports it) and by whole-process time (which adds the VM's start-up); migratable builds
(statepoints, restricted code generation) vs plain builds (target <= 1.05x); the emulated
arm64 build vs native (reported).

Start-up by CPU time (medians of 200 interleaved runs, load ~2.7 on the 2 cores, each command
with this code and with the code before its latest cuts in the same runs): `uhyve-ctl run
hello` 1.59x the bare interpreter (1.69x before); in other batches of 100-200 runs at load 3-8
1.50-1.60x against 1.59-1.68x: the target, 1.5x, is reached only in quiet batches. `hexo
inspect` of a plain image 1.35x (1.41x); `hexo status`'s client, which ends at its one-line
error, 1.20x. What they no longer import: argparse (a quick reading of `run`, `inspect` and
`status` command lines; a plug-in offers one as `quick(argv)`, found through the plug-in
cache, which records which plug-in registered which command), the json package with re,
enum, functools and collections (hexo.jsonc drives json's own C scanner and encoder),
typing (the migration metadata's reader and the transform use hexo.records), pathlib,
socket, threading, ctypes; and for `run` struct.py (_struct directly), errno (only on an
error), zlib with libz (~0.3 ms: an image whose CRC32s matched once is marked checked),
hexo.errors, uhyve_ctl.errors and uhyve_ctl.backends.base (their contents live in the
packages' own modules), the arm64 backend. A short run starts no drainer thread (an alarm
stands in for it until the run has lasted INTERVAL) and reads its image's index and one ELF
(pread), not the whole file. callgrind: 56.3 M -> 51.1 M instructions for the whole process
(32.5 M for a bare start that ends with os._exit).
Left for `run` (~6.5 ms beyond the interpreter's start): imports, ~3.7 ms of CPU (14 modules
of its own at ~0.35 M instructions each to find and load, whatever their size: a `run` whose
cli.py held only the run path imported 0.07 M fewer; 3 C extensions, _struct, mmap and
fcntl, ~0.15 ms each with dlopen; ~40 classes at ~10 us each, exceptions and records
included); ~1.5 ms making the VM (KVM_CREATE_VM ~0.25 ms, the vCPU with its in-kernel LAPIC
~0.25, CPUID ~0.15, the 256 MiB memory slot ~0.15; --mem 32M measured no different);
~0.8 ms running hello: its boot until the first hypercall (~0.4 ms, shadow-paging faults on
PVM) and four exits, two of them FSTATs that newlib's setvbuf and isatty make of stdout
(here /dev/null, a character device; stdio's file types in the boot info would save both, an
ABI change), one CLOCK; the kernel's teardown at
exit. The `hexo inspect` left: hashlib's OpenSSL (~2.5 ms to load; the builtin SHA-256 loads
in ~0.5 ms but hashes ~4x slower, a loss beyond ~0.5 MB of ELF, so it stays).
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
WORKLOADS = [("hello", None), ("npb-ep", "W"), ("npb-cg", "A"), ("npb-cg", "S")]


MIGRATABLE = [("npb-ep", "W"), ("npb-cg", "A")]


def _path(workload, klass, native=False, migratable=False):
    suffix = "native" if native else "migratable.hexo" if migratable else "hexo"
    return IMAGES / f"{workload}{'.' + klass if klass else ''}.{suffix}"


def build_images() -> None:
    """Once per run, in the parent process only (pyperf workers re-run this script). The
    sources are byte-compiled first: start-up is measured as an installed hexo starts, not
    as one that compiles itself each time (PYTHONDONTWRITEBYTECODE=1 would leave it so)."""
    import compileall
    for package in ("hexo", "uhyve-ctl", "scheduler"):
        compileall.compile_dir(ROOT / package, quiet=1)
    IMAGES.mkdir(parents=True, exist_ok=True)
    for workload, klass in WORKLOADS:
        for native in (False, True):
            cmd = [BIN / "hexo", "build", "--workload", workload, "-o",
                   _path(workload, klass, native)] + (["--class", klass] if klass else [])
            subprocess.run(cmd + (["--native"] if native else ["--no-migratable"]), check=True,
                           stdout=subprocess.DEVNULL)
    for workload, klass in MIGRATABLE:
        subprocess.run([BIN / "hexo", "build", "--workload", workload, "--class", klass,
                        "--migratable", "-o", _path(workload, klass, migratable=True)],
                       check=True, stdout=subprocess.DEVNULL)


def boot_to_main(loops: int) -> float:
    """VM creation until the library OS's last hypercall before main(): with stdout a file,
    the C library's FSTAT of it (on a terminal it makes none)."""
    from hexo.image import Image
    from hexo import abi
    from uhyve_ctl.backends import Exited
    from uhyve_ctl.vm import VirtualMachine

    image = Image(_path("hello", None))
    fstat = abi.NR["FSTAT"]
    total = 0.0
    out = tempfile.TemporaryFile()
    for _ in range(loops):
        t0 = time.perf_counter()
        vm = VirtualMachine(image, "x86_64", backend="kvm", stdio=(0, out.fileno(), 2))
        stop = vm.backend.run(lambda nr, arg: Exited(0) if nr == fstat else vm.hypercalls(nr, arg))
        total += time.perf_counter() - t0
        vm.close()
        assert stop == Exited(0)
    return total


def process_cpu(cmd: list[str], exit_status: int = 0):
    """A pyperf time function returning the CPU time (user + system) of whole processes:
    a start-up ratio that a loaded machine does not stretch as it stretches wall time."""
    def timed(loops: int) -> float:
        import os
        total = 0.0
        for _ in range(loops):
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(p.pid, 0)
            assert os.waitstatus_to_exitcode(status) == exit_status, cmd
            total += usage.ru_utime + usage.ru_stime
        return total
    return timed


def npb_timer(cmd: list[str]):
    """A pyperf time function returning the benchmark's own "Time in seconds"."""
    def timed(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            total += float(re.search(r"Time in seconds =\s+(\S+)", out)[1])
        return total
    return timed


def main() -> None:
    runner = pyperf.Runner(processes=4, values=2, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        build_images()
    uhyve = str(BIN / "uhyve-ctl")
    results = {
        "boot-to-main-kvm": runner.bench_time_func("boot-to-main-kvm", boot_to_main),
        "python-start": runner.bench_command("python-start", [sys.executable, "-c", "pass"]),
        "uhyve-ctl-run-hello": runner.bench_command(
            "uhyve-ctl-run-hello", [uhyve, "run", str(_path("hello", None))]),
        "python-start-cpu": runner.bench_time_func(
            "python-start-cpu", process_cpu([sys.executable, "-c", "pass"])),
        "uhyve-ctl-run-hello-cpu": runner.bench_time_func(
            "uhyve-ctl-run-hello-cpu", process_cpu([uhyve, "run", str(_path("hello", None))])),
        "hexo-inspect-cpu": runner.bench_time_func(
            "hexo-inspect-cpu", process_cpu([str(BIN / "hexo"), "inspect",
                                             str(_path("hello", None))])),
        "hexo-status-cpu": runner.bench_time_func(
            "hexo-status-cpu", process_cpu([str(BIN / "hexo"), "status", "--state-dir",
                                            str(IMAGES / "no-daemon")], exit_status=1)),
        "npb-ep-W-native": runner.bench_command("npb-ep-W-native",
                                                [str(_path("npb-ep", "W", True))]),
        "npb-ep-W-kvm": runner.bench_command("npb-ep-W-kvm",
                                             [uhyve, "run", str(_path("npb-ep", "W"))]),
        "npb-cg-A-native": runner.bench_command("npb-cg-A-native",
                                                [str(_path("npb-cg", "A", True))]),
        "npb-cg-A-kvm": runner.bench_command("npb-cg-A-kvm",
                                             [uhyve, "run", str(_path("npb-cg", "A"))]),
        "npb-cg-A-native-timed": runner.bench_time_func(
            "npb-cg-A-native-timed", npb_timer([str(_path("npb-cg", "A", True))])),
        "npb-cg-A-kvm-timed": runner.bench_time_func(
            "npb-cg-A-kvm-timed", npb_timer([uhyve, "run", str(_path("npb-cg", "A"))])),
        "npb-ep-W-native-timed": runner.bench_time_func(
            "npb-ep-W-native-timed", npb_timer([str(_path("npb-ep", "W", True))])),
        "npb-ep-W-kvm-timed": runner.bench_time_func(
            "npb-ep-W-kvm-timed", npb_timer([uhyve, "run", str(_path("npb-ep", "W"))])),
        "npb-ep-W-migratable-timed": runner.bench_time_func(
            "npb-ep-W-migratable-timed",
            npb_timer([uhyve, "run", str(_path("npb-ep", "W", migratable=True))])),
        "npb-cg-A-migratable-timed": runner.bench_time_func(
            "npb-cg-A-migratable-timed",
            npb_timer([uhyve, "run", str(_path("npb-cg", "A", migratable=True))])),
        "npb-cg-S-native": runner.bench_command("npb-cg-S-native",
                                                [str(_path("npb-cg", "S", True))]),
        "npb-cg-S-emu-aarch64": runner.bench_command(
            "npb-cg-S-emu-aarch64", [uhyve, "run", "--isa", "aarch64", str(_path("npb-cg", "S"))]),
    }
    if runner.args.worker or any(b is None for b in results.values()):
        return
    t = {k: b.mean() for k, b in results.items()}
    print("\nratios (measured side by side in this run):")
    print(f"  boot to main() on KVM           {t['boot-to-main-kvm'] * 1e3:6.2f} ms "
          f"(target <= 10 ms; HEXO's Uhyve ~25 ms)")
    rows = [("uhyve-ctl run hello / python start", "uhyve-ctl-run-hello", "python-start", 1.5),
            ("the same, CPU time", "uhyve-ctl-run-hello-cpu", "python-start-cpu", 1.5),
            ("hexo inspect hello / python, CPU", "hexo-inspect-cpu", "python-start-cpu", None),
            ("hexo status client / python, CPU", "hexo-status-cpu", "python-start-cpu", None),
            ("NPB EP.W KVM / native, NPB timer", "npb-ep-W-kvm-timed", "npb-ep-W-native-timed",
             1.05),
            ("NPB CG.A KVM / native, NPB timer", "npb-cg-A-kvm-timed", "npb-cg-A-native-timed",
             1.05),
            ("NPB EP.W migratable / plain build", "npb-ep-W-migratable-timed",
             "npb-ep-W-kvm-timed", 1.05),
            ("NPB CG.A migratable / plain build", "npb-cg-A-migratable-timed",
             "npb-cg-A-kvm-timed", 1.05),
            ("NPB EP.W KVM / native, process", "npb-ep-W-kvm", "npb-ep-W-native", None),
            ("NPB CG.A KVM / native, process", "npb-cg-A-kvm", "npb-cg-A-native", None),
            ("NPB CG.S emulated arm64 / native", "npb-cg-S-emu-aarch64", "npb-cg-S-native", None)]
    for label, a, b, target in rows:
        goal = f"(target <= {target}x)" if target else "(reported)"
        print(f"  {label:34} {t[a] / t[b]:6.2f}x {goal}")


if __name__ == "__main__":
    main()
