"""Short jobs cost what they compute (pyperf): whole-job CPU time of a short NPB job in a KVM
guest vs the same program built natively, measured side by side in this one run.

    .venv/bin/python bench/shortjob.py [-o results.json] [pyperf options]

Whole job, boot excluded: for the guest, the CPU time of this process from creating the VM
(guest RAM, page tables, ELF loading, KVM set-up) through the guest's run to tearing it down,
i.e. everything uhyve-ctl spends per job after its interpreter has started; for the native
build, the CPU time of its whole process (exec, dynamic loading, run, exit). Output goes to a
file in both cases. Target: <= 1.2x; IS.W (~100 ms natively) and CG.S (~20 ms) meet it, IS.S
(~8 ms) is where the fixed cost of a VM shows.

Where a short job's CPU goes besides the program's own work (perf record -e cpu-clock over
400 hello jobs in one process, cProfile, strace -c; PVM host under load): ~2.0-2.2 ms per
job, against ~0.8 ms to exec a native binary.
- The KVM VM's life in the kernel, ~1.1 ms: KVM_CREATE_VM ~0.2 (a debugfs directory per VM,
  the MMU), the memory slots ~0.15-0.3 (shadow-paging rmap arrays sized to guest RAM, 256 MiB
  by default; 32 MiB saves ~0.15), the vCPU and its CPUID ~0.25, teardown ~0.3-0.4 (debugfs,
  rmaps, shadow pages). While no other LAPIC-less vCPU exists on the host, creating and
  destroying one flips a kernel static key (text patching with IPIs), ~0.3 ms more; a server
  running other jobs does not pay it.
- First touch of guest RAM, ~0.3 ms: the 2 MiB huge page the image and heap start in is
  zeroed by the host kernel (slow under nested virtualization). Small pages there cost more:
  each is a shadow-paging fault (IS.S 1.59x, CG.S 1.37x measured).
- One exit, EXIT; Python between the ioctls, ~0.2 ms.
Already removed: huge pages below the image (two 2 MiB zeroings per job for a few dozen pages
used, ~0.3 ms), every clock exit (three per NPB job; timer loops now make none; the boot's
calibrating CLOCK, ABI 1.6), the C library's FSTATs of stdout (the host gives each stdio
file's type in the boot info), a second /dev/kvm open per job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pyperf

from run import BIN, IMAGES, _path

JOBS = [("npb-is", "W"), ("npb-cg", "S"), ("npb-is", "S")]
TARGET = 1.2


def build_images() -> None:
    """Once per run, in the parent process only (pyperf workers re-run this script)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    for workload, klass in JOBS:
        for native in (False, True):
            subprocess.run([BIN / "hexo", "build", "--workload", workload, "--class", klass,
                            "-o", _path(workload, klass, native)]
                           + (["--native"] if native else []), check=True,
                           stdout=subprocess.DEVNULL)


def native_cpu(path: str):
    def timed(loops: int) -> float:
        total = 0.0
        with tempfile.TemporaryFile() as out:
            for _ in range(loops):
                p = subprocess.Popen([path], stdout=out)
                _, status, usage = os.wait4(p.pid, 0)
                assert status == 0
                total += usage.ru_utime + usage.ru_stime
        return total
    return timed


def guest_cpu(path: str):
    from hexo.image import Image
    from uhyve_ctl.backends import Exited
    from uhyve_ctl.vm import VirtualMachine
    image = Image(path)

    def timed(loops: int) -> float:
        total = 0.0
        with tempfile.TemporaryFile() as out:
            for _ in range(loops):
                t0 = time.process_time()
                vm = VirtualMachine(image, "x86_64", backend="kvm", stdio=(0, out.fileno(), 2))
                stop = vm.run()
                vm.close()
                total += time.process_time() - t0
                assert stop == Exited(0), stop
        return total
    return timed


def main() -> None:
    runner = pyperf.Runner(processes=4, values=3, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        build_images()
    results = {}
    for workload, klass in JOBS:
        name = f"{workload}-{klass}"
        results[f"{name}-native-cpu"] = runner.bench_time_func(
            f"{name}-native-cpu", native_cpu(str(_path(workload, klass, True))))
        results[f"{name}-kvm-cpu"] = runner.bench_time_func(
            f"{name}-kvm-cpu", guest_cpu(str(_path(workload, klass))))
    if runner.args.worker or any(b is None for b in results.values()):
        return
    t = {k: b.mean() for k, b in results.items()}
    print("\nwhole-job CPU, KVM guest / native (measured side by side in this run):")
    for workload, klass in JOBS:
        name = f"{workload}-{klass}"
        print(f"  NPB {workload[4:].upper()}.{klass}: {t[name + '-kvm-cpu'] * 1e3:7.1f} ms vs "
              f"{t[name + '-native-cpu'] * 1e3:7.1f} ms  "
              f"{t[name + '-kvm-cpu'] / t[name + '-native-cpu']:5.2f}x (target <= {TARGET}x)")


if __name__ == "__main__":
    sys.exit(main())
