"""Cross-ISA checkpoint of a Linux process and of a podman container vs a plain same-ISA
dump (pyperf), measured side by side in this one run: the time H-Container reports as added
migration time (10-100 ms in the paper) and the checkpoint size.

    .venv/bin/python bench/container.py [-o results.json] [pyperf options]

A small Linux-mode job (tests/programs/migratable.c) runs; "plain" stops it with SIGSTOP and
runs `criu dump`; "hexo" runs `hexo container checkpoint --to aarch64`: arm the migration
point, wait for it, `criu dump`, recode the images for aarch64. The same job in a podman
container: "podman" is `podman container checkpoint --export`, "podman-hexo" is
`hexo container checkpoint CONTAINER --to aarch64` (park at a point, podman's export, recode,
seccomp filter rebuilt, the image, saved once per machine, copied into the archive);
"podman-hexo-lean" the same without the image, as `hexo board migrate` sends it to a board
that already keeps it. Needs root (CRIU), podman and runc.
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
TAG = "localhost/hexo-bench-migratable"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
_last_size = {}


def build_image() -> None:
    """Once per run, in the parent process only (pyperf workers re-run this script)."""
    from hexo.toolchain.build import BuildRequest, build
    from uhyve_ctl.container import criu
    IMAGES.mkdir(parents=True, exist_ok=True)
    build(BuildRequest([ROOT / "tests" / "programs" / "migratable.c"], IMAGE, "migratable",
                       migratable=True, linux=True))
    criu.ensure()
    from uhyve_ctl.container import oci
    oci.build(IMAGE, TAG)


def _start():
    from uhyve_ctl.container import process
    exe = process.executable(process.open_image(IMAGE), process.host_isa())
    p = subprocess.Popen([exe, ROUNDS], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    time.sleep(0.05)            # past start-up, inside the job's loop
    return p.pid, p.wait


def _start_container():
    name = f"hexo-bench-{os.getpid()}"
    subprocess.run(["podman", "--runtime", "runc", "run", "-d", *ULIMITS, "--name", name, TAG,
                    ROUNDS], check=True, capture_output=True)
    time.sleep(0.05)
    return name, lambda: subprocess.run(["podman", "rm", "-f", "-t", "0", name],
                                        capture_output=True)


def _size(ck: Path) -> int:
    if ck.is_file():
        return ck.stat().st_size
    return sum(f.stat().st_size for f in ck.iterdir() if f.suffix == ".img")


def _carried_image(archive: Path) -> int:
    """Bytes of an archive that carry the container's image (podman save, image.hexo)."""
    import tarfile
    from uhyve_ctl.container.podman import IMAGE_ARCHIVE
    from uhyve_ctl.container.process import IMAGE_COPY
    with tarfile.open(archive) as tar:
        return sum(m.size for m in tar.getmembers() if m.name in (IMAGE_ARCHIVE, IMAGE_COPY))


def _plain_dump(pid: int, out: Path) -> None:
    from uhyve_ctl.container import criu
    os.kill(pid, signal.SIGSTOP)
    out.mkdir()
    criu.run(["dump", "-t", str(pid)], "criu dump", out)


def _hexo_checkpoint(pid: int, out: Path) -> None:
    from uhyve_ctl.container.checkpoint import checkpoint
    checkpoint(pid, out, "aarch64")


def _podman_export(name: str, out: Path) -> None:
    from uhyve_ctl.container.podman import podman
    podman(["container", "checkpoint", name, "--export", str(out), "--compress", "none"],
           "podman checkpoint")


def _hexo_container_checkpoint(name: str, out: Path) -> None:
    from uhyve_ctl.container.podman import checkpoint
    checkpoint(name, out, "aarch64")


def _hexo_container_checkpoint_lean(name: str, out: Path) -> None:
    from uhyve_ctl.container.podman import checkpoint
    checkpoint(name, out, "aarch64", with_image=False)


def timed(name: str, start, dump):
    """pyperf's time function: `dump` of a freshly started job, per loop."""
    def run(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            job, end = start()
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / ("ck.tar" if start is _start_container else "ck")
                t0 = time.perf_counter()
                dump(job, out)
                total += time.perf_counter() - t0
                _last_size[name] = _size(out)
                if name == "podman-hexo":
                    _last_size["carried"] = _carried_image(out)
            end()
        return total
    return run


def _report(what: str, t: dict, hexo: str, plain: str) -> None:
    print(f"\n{what}, cross-ISA (hexo) vs same-ISA plain:")
    print(f"  time: {t[hexo] * 1e3:.1f} ms vs {t[plain] * 1e3:.1f} ms = "
          f"{t[hexo] / t[plain]:.2f}x, added {(t[hexo] - t[plain]) * 1e3:.1f} ms "
          f"(H-Container: 10-100 ms)")
    print(f"  size: {_last_size[hexo]} vs {_last_size[plain]} bytes = "
          f"{_last_size[hexo] / _last_size[plain]:.2f}x")


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        build_image()
    funcs = {"plain": timed("plain", _start, _plain_dump),
             "hexo": timed("hexo", _start, _hexo_checkpoint),
             "podman": timed("podman", _start_container, _podman_export),
             "podman-hexo": timed("podman-hexo", _start_container, _hexo_container_checkpoint),
             "podman-hexo-lean": timed("podman-hexo-lean", _start_container,
                                       _hexo_container_checkpoint_lean)}
    names = {"plain": "criu-dump-same-isa", "hexo": "hexo-checkpoint-to-aarch64",
             "podman": "podman-export-same-isa", "podman-hexo": "hexo-container-to-aarch64",
             "podman-hexo-lean": "hexo-container-to-aarch64-image-kept"}
    results = {k: runner.bench_time_func(names[k], f) for k, f in funcs.items()}
    if runner.args.worker or any(b is None for b in results.values()):
        return
    t = {k: b.mean() for k, b in results.items()}
    for f in funcs.values():
        f(1)
    _report("Linux process checkpoint", t, "hexo", "plain")
    _report("podman container checkpoint (archive)", t, "podman-hexo", "podman")
    print(f"  of which {_last_size['carried']} bytes carry the image for the target "
          f"(podman save, image.hexo): without them "
          f"{(_last_size['podman-hexo'] - _last_size['carried']) / _last_size['podman']:.2f}x")
    _report("podman container checkpoint, the image kept on the target", t,
            "podman-hexo-lean", "podman")


if __name__ == "__main__":
    sys.exit(main())
