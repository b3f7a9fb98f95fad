"""The README's main job: build the NPB kernels into multi-ISA images and run each image on
KVM (x86-64) and on the emulated arm64 CPU, showing NPB's own verification."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNS = [("x86_64", "kvm"), ("aarch64", "emu")]


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="hexo-demo-") as tmp:
        for kernel in ("ep", "is", "cg"):
            image = Path(tmp) / f"{kernel}.S.hexo"
            print(f"== hexo build --workload npb-{kernel} --class S", flush=True)
            subprocess.run([BIN / "hexo", "build", "--workload", f"npb-{kernel}", "--class", "S",
                            "-o", image], check=True)
            for isa, backend in RUNS:
                t0 = time.perf_counter()
                p = subprocess.run([BIN / "uhyve-ctl", "run", image, "--isa", isa,
                                    "--backend", backend], capture_output=True, text=True)
                took = time.perf_counter() - t0
                verdict = re.search(r"Verification\s+=\s+(\S+)", p.stdout)
                verdict = verdict[1] if verdict else "no result"
                ok = p.returncode == 0 and verdict == "SUCCESSFUL"
                failures += not ok
                print(f"   {isa:8} on {backend:4} {took:7.2f} s  Verification = {verdict}"
                      + ("" if ok else f"  (exit {p.returncode}) {p.stderr.strip()}"),
                      flush=True)
    print("all runs verified" if not failures else f"{failures} run(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
