"""Migration benchmarks (pyperf), side by side in one run:

    .venv/bin/python bench/migration.py [-o results.json] [pyperf options]

- the time a migration adds to a small job (NPB IS class S, migratable build, KVM), measured
  in one process so that no interpreter start-up is counted: a plain run vs the same run
  checkpointed at its 5th migration point and restored (target: added <= 50 ms;
  H-Container: 10-100 ms);
- where a cross-ISA migration's time goes, for a running NPB CG class A job (about a second
  on KVM, so it is still running when asked) asked to move to arm64: request -> stopped at a
  migration point, stack transform (the migration metadata is loaded while the job still
  runs; target <= 2 ms), checkpoint written and verified, target VM restored and ready to
  run (median of several);
- checkpoint size vs the job's application memory (data + bss + heap);
- the stack transform alone, x86-64 -> aarch64, for an NPB EP job checkpointed mid-run, with
  the metadata loaded beforehand as a long-running hypervisor would (HEXO: <= 2 ms).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyperf

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGE = ROOT / "build" / "bench" / "npb-cg.W.hexo"
UHYVE = str(BIN / "uhyve-ctl")


def run_and_checkpoint(image: Path, tmp: str, out, delay: float = 0.0) -> str:
    """Start `image` as a named VM, checkpoint it after `delay` s; returns the checkpoint
    command's report once the source has stopped."""
    env = dict(os.environ, HEXO_RUN_DIR=f"{tmp}/run")
    job = subprocess.Popen([UHYVE, "run", str(image), "--name", "bench"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (Path(tmp) / "run" / "bench.sock").exists():
        time.sleep(0.0005)
    time.sleep(delay)
    report = subprocess.run([UHYVE, "checkpoint", "bench", "-o", str(out)], env=env,
                            check=True, capture_output=True, text=True).stdout
    job.wait()
    return report


SMALL = ROOT / "build" / "bench" / "npb-is.S.migratable.hexo"
PHASES = ROOT / "build" / "bench" / "npb-cg.A.migratable.hexo"


NULL = os.open(os.devnull, os.O_WRONLY)     # where the in-process VMs' output goes


def _vm(image, isa: str, restore=None):
    """A VM of `image` whose output goes nowhere, in this process."""
    from hexo.image import Image
    from uhyve_ctl.vm import VirtualMachine
    return VirtualMachine(Image(image), isa, stdio=(0, NULL, NULL), restore=restore)


def small_job(migrate: bool):
    """Loops of the small job, plainly or with one migration (same ISA, KVM)."""
    from hexo.checkpoint import Checkpoint
    from uhyve_ctl.backends import Checkpointed, Exited
    from uhyve_ctl.migration import Request

    def loops_of(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                with _vm(SMALL, "x86_64") as vm:
                    if migrate:
                        vm.migrator.arm(Request(f"{tmp}/ck", "x86_64", False, skip=4))
                    stop = vm.run()
                if migrate:
                    assert isinstance(stop, Checkpointed), stop
                    with _vm(SMALL, "x86_64", Checkpoint(f"{tmp}/ck")) as vm:
                        stop = vm.run()
                total += time.perf_counter() - t0
                assert isinstance(stop, Exited) and stop.status == 0, stop
        return total
    return loops_of


def migration_phases(samples: int = 5) -> dict[str, float]:
    """Median milliseconds of each phase of a cross-ISA migration of a running job."""
    import statistics
    import threading

    from hexo.checkpoint import Checkpoint
    from uhyve_ctl.migration import Request
    phases: dict[str, list[float]] = {"stop": [], "transform": [], "checkpoint": [],
                                      "restore": []}
    for _ in range(samples):
        with tempfile.TemporaryDirectory() as tmp:
            with _vm(PHASES, "x86_64") as vm:
                worker = threading.Thread(target=vm.run)
                worker.start()
                time.sleep(0.1)
                vm.migrator.request(Request(f"{tmp}/ck", "aarch64", False), 30)
                worker.join()
                t = vm.migrator.timings
            t0 = time.perf_counter()
            with _vm(PHASES, "aarch64", Checkpoint(f"{tmp}/ck")):
                restored = time.perf_counter()
        phases["stop"].append(t["stopped"] - t["requested"])
        phases["transform"].append(t["transform_s"])
        phases["checkpoint"].append(t["written"] - t["stopped"] - t["transform_s"])
        phases["restore"].append(restored - t0)
    return {k: 1e3 * statistics.median(v) for k, v in phases.items()}


def checkpoint_size() -> tuple[int, int]:
    """(stored checkpoint bytes, application memory bytes) for one checkpoint of the job."""
    from hexo.checkpoint import Checkpoint
    from hexo.image import Image
    with tempfile.TemporaryDirectory() as tmp:
        run_and_checkpoint(IMAGE, tmp, f"{tmp}/ck")
        ck = Checkpoint(f"{tmp}/ck")
        areas = Image(IMAGE).manifest["layout"]["areas"]
        heap = next(a.size for a in ck.areas if a.kind == "heap")
        return ck.stored_bytes, areas["bss"][1] - areas["data"][0] + heap


MIG_IMAGE = ROOT / "build" / "bench" / "npb-ep.S.migratable.hexo"
MIG_CKPT = ROOT / "build" / "bench" / "npb-ep.S.x86_64.ckpt"


def make_migratable_checkpoint() -> None:
    if MIG_CKPT.exists():
        return
    subprocess.run([BIN / "hexo", "build", "--workload", "npb-ep", "--class", "S",
                    "--migratable", "-o", MIG_IMAGE], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        run_and_checkpoint(MIG_IMAGE, tmp, MIG_CKPT, delay=0.3)


def transform_loops(loops: int) -> float:
    from hexo.checkpoint import Checkpoint
    from hexo.image import Image
    from hexo.retarget import metadata
    from hexo.transform import transform
    image, ck = Image(MIG_IMAGE), Checkpoint(MIG_CKPT)
    src, dst = metadata(image, "x86_64"), metadata(image, "aarch64")
    stack = next(a for a in ck.areas if a.kind == "stack")
    data = ck.read(stack)
    t0 = time.perf_counter()
    for _ in range(loops):
        transform(src, dst, ck.meta["context"], stack.start, data)
    return time.perf_counter() - t0


def main() -> None:
    runner = pyperf.Runner(processes=3, values=3, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        IMAGE.parent.mkdir(parents=True, exist_ok=True)
        for workload, klass, flags, out in (("npb-cg", "W", [], IMAGE),
                                            ("npb-is", "S", ["--migratable"], SMALL),
                                            ("npb-cg", "A", ["--migratable"], PHASES)):
            subprocess.run([BIN / "hexo", "build", "--workload", workload, "--class", klass,
                            *flags, "-o", out], check=True, stdout=subprocess.DEVNULL)
        make_migratable_checkpoint()
    plain = runner.bench_time_func("is-S-plain-in-process", small_job(False))
    migrated = runner.bench_time_func("is-S-migrated-in-process", small_job(True))
    xform = runner.bench_time_func("transform-ep-x86-to-arm64", transform_loops)
    if runner.args.worker or plain is None or migrated is None or xform is None:
        return
    stored, app = checkpoint_size()
    phases = migration_phases()
    added = (migrated.mean() - plain.mean()) * 1e3
    print("\nmigration (measured side by side in this run):")
    print(f"  IS.S checkpoint+restore / plain run  {migrated.mean() / plain.mean():6.2f}x, "
          f"+{added:.1f} ms per migration (target <= 50 ms added; H-Container: 10-100 ms)")
    print(f"  CG.A x86-64 -> arm64, median ms: stop {phases['stop']:.2f}, transform "
          f"{phases['transform']:.2f} (target <= 2 ms), checkpoint written+verified "
          f"{phases['checkpoint']:.1f}, restore {phases['restore']:.1f}")
    print(f"  checkpoint size / application memory {stored / app:6.2f} "
          f"({stored} of {app} bytes)")
    print(f"  stack transform x86-64 -> aarch64    {xform.mean() * 1e3:6.3f} ms (target <= 2 ms)")


if __name__ == "__main__":
    main()
