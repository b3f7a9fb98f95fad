"""Migration benchmarks (pyperf), side by side in one run:

    .venv/bin/python bench/migration.py [-o results.json] [pyperf options]

- a small job (NPB CG class W, KVM) run plainly vs checkpointed at its first migration
  point and restored: the ratio and the added milliseconds (target: added <= 50 ms);
- the request-to-stopped and checkpoint-written times the hypervisor reports (one sample);
- checkpoint size vs the job's application memory (data + bss + heap);
- the stack transform alone, x86-64 -> aarch64, for an NPB EP job checkpointed mid-run, with
  the metadata loaded beforehand as a long-running hypervisor would (HEXO: <= 2 ms).
"""

from __future__ import annotations

import os
import re
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


def migrated_run(loops: int) -> float:
    """Run, checkpoint at the first migration point, restore to completion."""
    total = 0.0
    for _ in range(loops):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, HEXO_RUN_DIR=f"{tmp}/run")
            t0 = time.perf_counter()
            run_and_checkpoint(IMAGE, tmp, f"{tmp}/ck")
            out = subprocess.run([UHYVE, "restore", f"{tmp}/ck"], env=env, capture_output=True,
                                 text=True, check=True).stdout
            total += time.perf_counter() - t0
            assert "SUCCESSFUL" in out
    return total


def checkpoint_size() -> tuple[int, int, float, float]:
    """(stored checkpoint bytes, application memory bytes, stop ms, checkpoint ms) for one
    checkpoint of the job."""
    from hexo.checkpoint import Checkpoint
    from hexo.image import Image
    with tempfile.TemporaryDirectory() as tmp:
        ck_out = run_and_checkpoint(IMAGE, tmp, f"{tmp}/ck")
        m = re.search(r"stopped in ([\d.]+) ms, .*written and verified in ([\d.]+) ms", ck_out)
        ck = Checkpoint(f"{tmp}/ck")
        areas = Image(IMAGE).manifest["layout"]["areas"]
        heap = next(a.size for a in ck.areas if a.kind == "heap")
        return (ck.stored_bytes, areas["bss"][1] - areas["data"][0] + heap, float(m[1]),
                float(m[2]))


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
        subprocess.run([BIN / "hexo", "build", "--workload", "npb-cg", "--class", "W", "-o",
                        IMAGE], check=True, stdout=subprocess.DEVNULL)
        make_migratable_checkpoint()
    plain = runner.bench_command("cg-W-plain", [UHYVE, "run", str(IMAGE)])
    migrated = runner.bench_time_func("cg-W-checkpoint-restore", migrated_run)
    xform = runner.bench_time_func("transform-ep-x86-to-arm64", transform_loops)
    if runner.args.worker or plain is None or migrated is None or xform is None:
        return
    stored, app, stop_ms, write_ms = checkpoint_size()
    added = (migrated.mean() - plain.mean()) * 1e3
    print("\nmigration (measured side by side in this run):")
    print(f"  CG.W checkpoint+restore / plain run  {migrated.mean() / plain.mean():6.2f}x, "
          f"+{added:.0f} ms per migration (target <= 50 ms added; H-Container: 10-100 ms)")
    print(f"  checkpoint size / application memory {stored / app:6.2f} "
          f"({stored} of {app} bytes)")
    print(f"  request -> stopped {stop_ms:.1f} ms, checkpoint written and verified {write_ms:.1f} ms")
    print(f"  stack transform x86-64 -> aarch64    {xform.mean() * 1e3:6.3f} ms (target <= 2 ms)")


if __name__ == "__main__":
    main()
