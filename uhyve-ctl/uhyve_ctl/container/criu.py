"""CRIU and pycriu, and the few CRIU invocations hexo makes. On x86-64 CRIU 4.1.1 is built
once from Debian's source under the hexo home (Debian 12's criu 3.17 cannot dump on recent
x86-64 kernels); an arm64 board uses the system's criu, Debian's 3.17, which works on its
kernel, restores the 4.1 images hexo recodes and would take hours to build under emulation."""

from __future__ import annotations

import fcntl
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from hexo.resources import package_path
from hexo.toolchain.sysroot import home

from ..errors import UhyveError

BUILD_SCRIPT = package_path("uhyve_ctl.container", "build-criu.sh")


class CriuError(UhyveError):
    """CRIU could not be built or refused a dump or restore; the message says which."""


def root() -> Path:
    return home() / "criu"


def _system() -> bool:
    return platform.machine() not in ("x86_64", "AMD64")


def ensure() -> Path:
    """The criu executable, building it (about a minute, once) if it is missing."""
    if _system():
        exe = shutil.which("criu")
        if exe is None:
            raise CriuError("criu is not installed (Debian package criu)")
        return Path(exe)
    exe = root() / "bin" / "criu"
    if exe.exists():
        return exe
    root().mkdir(parents=True, exist_ok=True)
    with open(root().parent / ".criu.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            p = subprocess.run(["bash", str(BUILD_SCRIPT), str(root())], capture_output=True,
                               text=True)
            if p.returncode != 0:
                tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-5:]
                raise CriuError("building CRIU failed:\n  " + "\n  ".join(tail))
    return exe


def pycriu():
    """The pycriu package of the CRIU in use (image decoding and encoding)."""
    ensure()
    path = str(root() / "python")
    if not _system() and path not in sys.path:
        sys.path.insert(0, path)
    import pycriu as module
    return module


def run(args: list[str], what: str, directory: Path) -> None:
    """criu ARGS with its log in DIRECTORY; the log's last lines on failure."""
    log = f"{args[0]}.log"
    p = subprocess.run([str(ensure()), *args, "-D", str(directory), "-o", log, "-v4"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        lines = (directory / log).read_text(errors="replace").splitlines() \
            if (directory / log).exists() else [p.stderr.strip()]
        errors = [ln for ln in lines if "Error" in ln] or lines
        raise CriuError(f"{what} failed: " + " | ".join(errors[-3:]))
