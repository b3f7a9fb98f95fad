"""Linux-mode processes: started from a .hexo image, stopped at a migration point.

The image's executable for this ISA is unpacked under the hexo home by image digest, next to a
copy of the image, so that a running process leads back to its image (and its migration
metadata) through /proc/PID/exe alone (inside a container, under /proc/PID/root). The
migration point is armed by writing the shared page's migrate_request through /proc/PID/mem
(kernel-images/linux/runtime.c); the process saves its registers at LINUX_CONTEXT_ADDR, marks
the page stopped and parks in short sleeps until the page says running again (resume()).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import time
from pathlib import Path

from hexo import abi
from hexo.image import Image
from hexo.toolchain.sysroot import home

from .. import UhyveError

LINUX_RUNNING, LINUX_STOPPED = 1, 2     # shared page guest_state (kernel-images/linux)
IMAGE_COPY = "image.hexo"
STOP_AT_POINT = "HEXO_STOP_AT_POINT"    # kernel-images/linux/runtime.c


class ProcessError(UhyveError):
    """The process is not a hexo Linux-mode process or did not reach a migration point."""


def host_isa() -> str:
    return {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[platform.machine()]


def open_image(path: Path) -> Image:
    image = Image(path)
    if image.manifest.get("runtime") != "linux":
        raise ProcessError(f"{path}: not a Linux-mode image (build it with hexo build --linux)")
    return image


def executable(image: Image, isa: str) -> Path:
    """The image's `isa` executable, unpacked once under the hexo home."""
    # Keyed by the whole image, not only the build id: the id covers the executables, while
    # the copy must also carry the image's migration metadata.
    digest = hashlib.sha256(Path(image.path).read_bytes()).hexdigest()[:32]
    where = home() / "linux" / digest
    exe = where / isa
    if not exe.exists():
        where.mkdir(parents=True, exist_ok=True)
        if not (where / IMAGE_COPY).exists():
            shutil.copyfile(image.path, where / f".{IMAGE_COPY}.tmp")
            os.replace(where / f".{IMAGE_COPY}.tmp", where / IMAGE_COPY)
        tmp = where / f".{isa}.tmp"
        tmp.write_bytes(image.payload(f"elf.{isa}"))
        tmp.chmod(0o755)
        os.replace(tmp, exe)
    return exe


def image_of(pid: int) -> tuple[Image, str]:
    """The image and ISA of a running hexo Linux-mode process."""
    try:
        exe = Path(os.readlink(f"/proc/{pid}/exe"))
    except FileNotFoundError:
        raise ProcessError(f"no process {pid}") from None
    except PermissionError:
        raise ProcessError(f"process {pid}: permission denied (run as root)") from None
    copy = exe.parent / IMAGE_COPY
    root = Path(f"/proc/{pid}/root")
    if not os.path.samefile(root, "/"):         # a container's: seen from here, under its root
        copy = root / copy.relative_to("/")
    if exe.name not in abi.ISA_IDS or not copy.exists():
        raise ProcessError(f"process {pid} ({exe}) was not started by hexo container run")
    return open_image(copy), exe.name


def check_movable(pid: int, image: Image, isa: str, to_isa: str, what: str) -> None:
    """Refuse, before the job is stopped, a move it cannot make (`what`: how to name it)."""
    if to_isa not in abi.ISA_IDS:
        raise ProcessError(f"unknown ISA {to_isa!r} (one of {', '.join(abi.ISA_IDS)})")
    if to_isa != isa and "migration" not in image.manifest:
        raise ProcessError(f"{image.path}: built without --migratable, it cannot change ISA")
    tcp = tcp_connections(pid)
    if tcp:
        raise ProcessError(f"{what} has {len(tcp)} open TCP connection(s), which hexo does not "
                           f"migrate yet; it keeps running")


def tcp_connections(pid: int) -> list[str]:
    """Local addresses of the process's TCP connections (listening sockets excluded)."""
    inodes, found = set(), []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}") as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[9] in inodes and fields[3] != "0A":      # 0A: LISTEN
                        found.append(fields[1])
    except FileNotFoundError:
        raise ProcessError(f"process {pid} has ended") from None
    return found


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "X"
    return stat[stat.rindex(")") + 2]


def _shared_page(mem) -> dict:
    """The shared page as the process sees it (all zero while it is not mapped yet)."""
    mem.seek(abi.LINUX_PAGE_ADDR)
    try:
        data = mem.read(abi.SHARED_PAGE.size)
    except OSError:
        data = bytes(abi.SHARED_PAGE.size)
    if len(data) < abi.SHARED_PAGE.size:             # no memory left: the process has ended
        raise ProcessError("the process ended before it reached a migration point")
    return abi.SHARED_PAGE.unpack(data)


def _at_point(mem) -> bool:
    return _shared_page(mem)["guest_state"] == LINUX_STOPPED


def _write_field(mem, field: str, value: int) -> None:
    mem.seek(abi.LINUX_PAGE_ADDR + abi.SHARED_PAGE.offset(field))
    mem.write(value.to_bytes(4, "little"))


def _request_migration(mem, value: int) -> None:
    _write_field(mem, "migrate_request", value)


def resume(pid: int) -> None:
    """Let process `pid`, parked at a migration point, continue there."""
    try:
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
            if _at_point(mem):
                _write_field(mem, "guest_state", LINUX_RUNNING)
    except FileNotFoundError:
        raise ProcessError(f"no process {pid}") from None


def parked(pid: int) -> bool:
    """Process `pid` waits at a migration point (its shared page says stopped)."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            return _at_point(mem)
    except (FileNotFoundError, ProcessError):
        return False


def stop_at_point(pid: int, isa: str, timeout: float) -> dict:
    """Arm the migration point of `pid` (unless it already waits at one: HEXO_STOP_AT_POINT,
    restore --until-point) and wait until it has stopped there; its registers at the point
    by `isa`'s callee-saved names, plus pc and sp."""
    deadline = time.monotonic() + timeout
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        while _shared_page(mem)["magic"] != abi.SHARED_PAGE_MAGIC:
            if time.monotonic() > deadline or _state(pid) in "ZX":
                raise ProcessError(f"process {pid} has no hexo shared page")
            time.sleep(0.005)           # a process just started maps it first thing
        if not _at_point(mem):
            _request_migration(mem, abi.MIGRATE_REQUESTED)
        while not _at_point(mem):
            if _state(pid) in "ZX":
                raise ProcessError(f"process {pid} ended before it reached a migration point")
            if time.monotonic() > deadline:
                _request_migration(mem, 0)
                raise ProcessError(f"process {pid} reached no migration point in {timeout} s; "
                                   f"it keeps running")
            time.sleep(0.005)
        mem.seek(abi.LINUX_CONTEXT_ADDR)
        ctx = abi.CPU_CONTEXT.unpack(mem.read(abi.CPU_CONTEXT.size))
    regs = {"pc": ctx["pc"], "sp": ctx["sp"]}
    regs.update({n: ctx[f"callee{i}"] for i, n in enumerate(abi.CALLEE_SAVED[isa])})
    return regs
