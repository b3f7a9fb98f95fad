"""The README's main job: build the NPB kernels into migratable multi-ISA images, run each on
KVM (x86-64) and on the emulated arm64 CPU, then stop running jobs at a migration point and
resume them from the checkpoint, on the same ISA and on the other one, and move one job back
and forth; every run must end with NPB's verification."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNS = [("x86_64", "kvm"), ("aarch64", "emu")]
# (workload, class, source ISA, target ISA, seconds to run before the checkpoint)
MIGRATIONS = [("npb-cg", "W", "x86_64", "x86_64", 0.02), ("npb-cg", "S", "aarch64", "aarch64", 0.5),
              ("npb-ep", "S", "x86_64", "aarch64", 0.2), ("npb-ep", "S", "aarch64", "x86_64", 1.0),
              ("npb-is", "W", "aarch64", "x86_64", 1.0), ("npb-cg", "W", "x86_64", "aarch64", 0.05)]
# A job moved back and forth at chosen migration points: (ISA, checkpoint at point N).
ROUND_TRIP = ("npb-cg", "S", [("x86_64", 100), ("aarch64", 100), ("x86_64", 100),
                              ("aarch64", 60), ("x86_64", None)])


def _verdict(out: str) -> str:
    m = re.search(r"Verification\s+=\s+(\S+)", out)
    return m[1] if m else "no result"


def _build(tmp: Path, workload: str, klass: str) -> Path:
    image = tmp / f"{workload}.{klass}.hexo"
    if not image.exists():
        print(f"== hexo build --workload {workload} --class {klass}", flush=True)
        subprocess.run([BIN / "hexo", "build", "--workload", workload, "--class", klass,
                        "-o", image], check=True)
    return image


def _migrate(tmp: Path, image: Path, isa: str, to: str, delay: float, env: dict) -> bool:
    """Run on `isa`, checkpoint for `to` after `delay` s, restore on `to`; True when the
    restored job verifies."""
    ckpt = tmp / f"{image.stem}.{isa}-{to}.ckpt"
    job = subprocess.Popen([BIN / "uhyve-ctl", "run", image, "--isa", isa, "--name", "demo"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sock = Path(env["HEXO_RUN_DIR"]) / "demo.sock"
    deadline = time.monotonic() + 10
    while not sock.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    ck = subprocess.run([BIN / "uhyve-ctl", "checkpoint", "demo", "-o", ckpt, "--to", to],
                        env=env, capture_output=True, text=True)
    job.communicate()
    if ck.returncode != 0:
        print(f"   checkpoint failed: {ck.stderr.strip()}")
        return False
    print(f"   {image.stem} {isa} -> {to}: {ck.stdout.strip().split(': ', 1)[1]}")
    t0 = time.perf_counter()
    p = subprocess.run([BIN / "uhyve-ctl", "restore", ckpt], env=env, capture_output=True,
                       text=True)
    verdict = _verdict(p.stdout)
    print(f"   {image.stem} resumed on {to}, finished in {time.perf_counter() - t0:.2f} s: "
          f"Verification = {verdict}", flush=True)
    return p.returncode == 0 and verdict == "SUCCESSFUL"


def _round_trip(tmp: Path, image: Path, legs: list, env: dict) -> bool:
    """Run, checkpoint at each leg's point for the next leg's ISA, restore, ...; True when
    the job's output across all legs verifies."""
    out, ckpt = "", None
    for n, (isa, point) in enumerate(legs):
        cmd = [BIN / "uhyve-ctl", *(["restore", ckpt] if ckpt else ["run", image]), "--isa", isa]
        if point is not None:
            ckpt = tmp / f"{image.stem}.trip{n}.ckpt"
            cmd += ["--checkpoint-at", str(point), "--checkpoint-dir", ckpt,
                    "--to", legs[n + 1][0]]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out += p.stdout
        where = f"until migration point {point}" if point else "to the end"
        print(f"   {image.stem} leg {n + 1} on {isa:8} ran {where}", flush=True)
        if p.returncode != 0:
            print(f"   leg failed: {p.stderr.strip()}")
            return False
    verdict = _verdict(out)
    print(f"   {image.stem} after {len(legs) - 1} migrations: Verification = {verdict}")
    return verdict == "SUCCESSFUL"


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="hexo-demo-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, HEXO_RUN_DIR=str(tmp / "run"))
        for kernel in ("ep", "is", "cg"):
            image = _build(tmp, f"npb-{kernel}", "S")
            for isa, backend in RUNS:
                t0 = time.perf_counter()
                p = subprocess.run([BIN / "uhyve-ctl", "run", image, "--isa", isa,
                                    "--backend", backend], capture_output=True, text=True)
                verdict = _verdict(p.stdout)
                ok = p.returncode == 0 and verdict == "SUCCESSFUL"
                failures += not ok
                print(f"   {image.stem} {isa:8} on {backend:4} {time.perf_counter() - t0:7.2f} s  "
                      f"Verification = {verdict}"
                      + ("" if ok else f"  (exit {p.returncode}) {p.stderr.strip()}"), flush=True)
        print("== stop running jobs at a migration point and resume them, on either ISA")
        for workload, klass, isa, to, delay in MIGRATIONS:
            failures += not _migrate(tmp, _build(tmp, workload, klass), isa, to, delay, env)
        print("== move one job back and forth between the ISAs")
        workload, klass, legs = ROUND_TRIP
        failures += not _round_trip(tmp, _build(tmp, workload, klass), legs, env)
    print("all runs verified" if not failures else f"{failures} run(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
