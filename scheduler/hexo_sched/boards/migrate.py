"""Linux-mode processes and podman containers moved between this server and a board (`hexo
board migrate`): a CRIU checkpoint recoded for the other ISA, restored on the other side (a
container by the target's podman). The source process stays
parked at its migration point, restorable, until the target reports the job running; if
the restore fails it continues where it was."""

from __future__ import annotations

import io
import os
import shlex
import signal
import tempfile
from pathlib import Path

from uhyve_ctl.container import checkpoint as ckpt, podman
from uhyve_ctl.container.process import host_isa, resume

from ..hosts import HostError
from .vm import Board

BOARD_ISA = "aarch64"
REMOTE_DIR = "/var/tmp/hexo-migrate"


class MigrationError(HostError):
    """The job could not be moved; the message says where it runs now."""


def _hexo(conn, args: list[str], puts: list[Path] = ()) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    status = conn.run(["hexo", *args], puts=puts, stdout=out, stderr=err)
    return status, out.getvalue().decode(errors="replace"), err.getvalue().decode(
        errors="replace")


def _restored_pid(out: str) -> int:
    return int(out.rsplit("restored process ", 1)[1].split()[0])


def _restored_name(out: str) -> str:
    return out.rsplit("restored container ", 1)[1].split()[0]


def to_board(pid: int, board: str, timeout: float = 30.0, until_point: bool = False) -> int:
    """Move local process `pid` to `board`; its pid there."""
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            Board.running(board).connect() as conn:
        d = Path(tmp) / f"process-{pid}"
        ckpt.checkpoint(pid, d, BOARD_ISA, timeout, leave_stopped=True)
        try:
            status, out, err = _hexo(conn, ["container", "restore", d.name,
                                            *(["--until-point"] if until_point else [])],
                                     puts=[d])
        except BaseException:
            resume(pid)
            raise
        if status != 0:
            resume(pid)
            raise MigrationError(f"restore on {board} failed ({err.strip() or status}); "
                                 f"process {pid} continues here")
        os.kill(pid, signal.SIGKILL)
        return _restored_pid(out)


def from_board(board: str, pid: int, timeout: float = 30.0, reap: bool = False) -> int:
    """Move process `pid` of `board` to this server; its pid here (with `reap` a child of
    the caller, see checkpoint.restore)."""
    remote = f"{REMOTE_DIR}/process-{pid}"
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            Board.running(board).connect() as conn:
        conn.host.sh(f"rm -rf {remote}")
        status, _, err = _hexo(conn, ["container", "checkpoint", str(pid), "--to", host_isa(),
                                      "--leave-stopped", "--timeout", str(timeout),
                                      "-o", remote])
        if status != 0:
            raise MigrationError(f"checkpoint on {board} failed ({err.strip() or status}); "
                                 f"the job runs on there")
        local = Path(tmp) / f"process-{pid}"
        try:
            conn.host.get_dir(remote, local)
            new = ckpt.restore(local, reap=reap)
        except BaseException as e:
            _hexo(conn, ["container", "resume", str(pid)])
            conn.host.sh(f"rm -rf {remote}")
            if isinstance(e, Exception):
                raise MigrationError(f"restore here failed ({e}); process {pid} continues on "
                                     f"{board}") from None
            raise
        conn.host.sh(f"kill -KILL {pid}; rm -rf {shlex.quote(remote)}")
        return new


def container_to_board(name: str, board: str, timeout: float = 30.0,
                       until_point: bool = False) -> str:
    """Move local podman container `name` to `board`, where its podman restores it; its name
    there. The source stays parked until the board runs it, then it is removed."""
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            Board.running(board).connect() as conn:
        archive = Path(tmp) / f"container-{name}.tar"
        podman.checkpoint(name, archive, BOARD_ISA, timeout, leave_running=True)
        try:
            status, out, err = _hexo(conn, ["container", "restore", archive.name,
                                            *(["--until-point"] if until_point else [])],
                                     puts=[archive])
        except BaseException:
            podman.resume(name)
            raise
        if status != 0:
            podman.resume(name)
            raise MigrationError(f"restore on {board} failed ({err.strip() or status}); "
                                 f"container {name} continues here")
        podman.remove(name)
        return _restored_name(out)


def container_from_board(board: str, name: str, timeout: float = 30.0) -> str:
    """Move podman container `name` of `board` to this server; its name here."""
    remote = f"{REMOTE_DIR}/container-{name}.tar"
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            Board.running(board).connect() as conn:
        conn.host.sh(f"mkdir -p {REMOTE_DIR}; rm -f {shlex.quote(remote)}")
        status, _, err = _hexo(conn, ["container", "checkpoint", name, "--to", host_isa(),
                                      "--leave-stopped", "--timeout", str(timeout),
                                      "-o", remote])
        if status != 0:
            raise MigrationError(f"checkpoint on {board} failed ({err.strip() or status}); "
                                 f"the container runs on there")
        local = Path(tmp) / f"container-{name}.tar"
        try:
            conn.host.get_file(remote, local)
            new = podman.restore(local)
        except BaseException as e:
            _hexo(conn, ["container", "resume", name])
            conn.host.sh(f"rm -f {shlex.quote(remote)}")
            if isinstance(e, Exception):
                raise MigrationError(f"restore here failed ({e}); container {name} continues "
                                     f"on {board}") from None
            raise
        conn.host.sh(f"podman rm --force --time 0 {shlex.quote(name)}; "
                     f"rm -f {shlex.quote(remote)}")
        return new
