"""CRIU and pycriu, and the few CRIU invocations hexo makes. On x86-64 CRIU 4.1.1 is built
once from Debian's source under the hexo home (Debian 12's criu 3.17 cannot dump on recent
x86-64 kernels); an arm64 board uses the system's criu, Debian's 3.17, which works on its
kernel, restores the 4.1 images hexo recodes and would take hours to build under emulation."""

from __future__ import annotations

import fcntl
import os
import platform
import signal
import shutil
import subprocess
import sys
from pathlib import Path

from hexo.resources import package_path
from hexo.toolchain.sysroot import home

from .. import UhyveError

BUILD_SCRIPT = package_path("uhyve_ctl.container", "build-criu.sh")
TIMEOUT = 120.0     # seconds a dump or restore may take; 0.1-10 s on a loaded emulated board


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


def run(args: list[str], what: str, directory: Path, timeout: float = TIMEOUT) -> None:
    """criu ARGS with its log in DIRECTORY; the log's last lines on failure. A CRIU that has
    not finished in `timeout` seconds is ended with every task it was restoring: Debian's
    CRIU 3.17 restoring damaged pages retries a short read for ever, its restored task
    spinning and its log growing, which starved a board until SSH could not open a channel."""
    log = directory / f"{args[0]}.log"
    p = subprocess.Popen([str(ensure()), *args, "-D", str(directory), "-o", log.name, "-v4"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_tree(p.pid)
        p.communicate()
        raise CriuError(f"{what} did not finish in {timeout:g} s (" + " | ".join(
            _log_tail(log, err="")[-2:]) + "); CRIU and the tasks it restored were ended") \
            from None
    if p.returncode != 0:
        lines = _log_tail(log, err)
        errors = [ln for ln in lines if "Error" in ln] or lines
        raise CriuError(f"{what} failed: " + " | ".join(errors[-3:]))


def _log_tail(log: Path, err: str) -> list[str]:
    """The last lines of a CRIU log (which can grow without bound), else its stderr."""
    if not log.exists():
        return [err.strip()]
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 65536))
        return f.read().decode(errors="replace").splitlines()[1:] or [err.strip()]


def _end_tree(pid: int) -> None:
    """SIGKILL `pid` and all its descendants, the deepest first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    order, todo = [], [pid]
    while todo:
        p = todo.pop()
        order.append(p)
        todo.extend(children.get(p, []))
    for p in reversed(order):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
