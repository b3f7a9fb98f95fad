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

from uhyve_ctl.container import checkpoint as ckpt, images, podman
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
        out = _restore_on_board(conn, board, d, until_point, lambda: resume(pid),
                                f"process {pid}")
        os.kill(pid, signal.SIGKILL)
        return _restored_pid(out)


def _restore_on_board(conn, board: str, checkpoint: Path, until_point: bool, resume_source,
                      source: str) -> str:
    """`hexo container restore` of `checkpoint` on the board; its output. The parked source
    continues (resume_source) if the board does not confirm the job running."""
    try:
        status, out, err = _hexo(conn, ["container", "restore", checkpoint.name,
                                        *(["--until-point"] if until_point else [])],
                                 puts=[checkpoint])
    except BaseException:
        resume_source()
        raise
    if status != 0:
        resume_source()
        raise MigrationError(f"restore on {board} failed ({err.strip() or status}); "
                             f"{source} continues here")
    return out


def from_board(board: str, pid: int, timeout: float = 30.0, reap: bool = False) -> int:
    """Move process `pid` of `board` to this server; its pid here (with `reap` a child of
    the caller, see checkpoint.restore)."""
    return _from_board(board, str(pid), f"process {pid}", f"{REMOTE_DIR}/process-{pid}",
                       timeout, lambda host, remote, local: host.get_dir(remote, local),
                       lambda local: ckpt.restore(local, reap=reap), f"kill -KILL {pid}")


def _from_board(board: str, target: str, what: str, remote: str, timeout: float, fetch,
                restore_here, end_source: str, options: tuple[str, ...] = ()):
    """Checkpoint `target` on the board for this ISA into `remote` (left parked there, with
    the checkpoint's `options`), fetch it, restore it here; then end the source with the
    shell command `end_source`, or let it continue if the restore here failed."""
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            Board.running(board).connect() as conn:
        conn.host.sh(f"mkdir -p {REMOTE_DIR}; rm -rf {shlex.quote(remote)}")
        status, _, err = _hexo(conn, ["container", "checkpoint", target, "--to", host_isa(),
                                      "--leave-stopped", "--timeout", str(timeout),
                                      *options, "-o", remote])
        if status != 0:
            raise MigrationError(f"checkpoint on {board} failed ({err.strip() or status}); "
                                 f"{what} runs on there")
        local = Path(tmp) / Path(remote).name
        try:
            fetch(conn.host, remote, local)
            new = restore_here(local)
        except BaseException as e:
            _hexo(conn, ["container", "resume", target])
            conn.host.sh(f"rm -rf {shlex.quote(remote)}")
            if isinstance(e, Exception):
                raise MigrationError(f"restore here failed ({e}); {what} continues on "
                                     f"{board}") from None
            raise
        conn.host.sh(f"{end_source}; rm -rf {shlex.quote(remote)}")
        return new


def container_to_board(name: str, board: str, timeout: float = 30.0,
                       until_point: bool = False) -> str:
    """Move local podman container `name` to `board`, where its podman restores it; its name
    there. The source stays parked until the board runs it, then it is removed. The
    container's image goes to the board's image store first unless an intact copy is there."""
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            Board.running(board).connect() as conn:
        archive = Path(tmp) / f"container-{name}.tar"
        state = podman.checkpoint(name, archive, BOARD_ISA, timeout, leave_running=True,
                                  with_image=False)
        try:
            send_image(conn, board, state["image"])
        except BaseException:
            podman.resume(name)
            raise
        out = _restore_on_board(conn, board, archive, until_point, lambda: podman.resume(name),
                                f"container {name}")
        podman.remove(name)
        return _restored_name(out)


def send_image(conn, board: str, image: dict) -> bool:
    """Put the container image `image` (a checkpoint's `image`) into the board's image store
    unless an intact copy is there (its digest checked on the board); whether it was sent.
    The board checks the digest of what it received before keeping it."""
    sha = image["archive"]
    store = f"d={images.STORE_IN_SHELL}; "
    status, out, _ = conn.host.sh(store + f'sha256sum "$d/{sha}.tar" 2>/dev/null')
    if status == 0 and out.split()[:1] == [sha]:
        return False
    with images.saved(image["oci_id"], image["oci_name"]) as (_, local):
        status = conn.stream(store + f'set -e; mkdir -p "$d"; cat > "$d/.{sha}.part"; '
                             f'echo "{sha}  $d/.{sha}.part" | sha256sum -c --quiet; '
                             f'mv "$d/.{sha}.part" "$d/{sha}.tar"', stdin=local.read_bytes())
    if status != 0:
        raise MigrationError(f"sending the container image to {board} failed ({status})")
    return True


def container_from_board(board: str, name: str, timeout: float = 30.0) -> str:
    """Move podman container `name` of `board` to this server; its name here. The board
    checkpoints it without its image, which comes only if this server lacks it."""
    return _from_board(board, name, f"container {name}", f"{REMOTE_DIR}/container-{name}.tar",
                       timeout, _fetch_container, podman.restore,
                       f"podman rm --force --time 0 {shlex.quote(name)}", ("--without-image",))


def _fetch_container(host, remote: str, local: Path) -> bool:
    """Fetch the board's container checkpoint `remote` (made without its image) and, unless
    this server has an intact copy of the image it names in its store (checked by digest; a
    damaged one is removed) or in podman, that image from the board's store into this
    server's, its digest checked before it is kept; whether the image was fetched."""
    host.get_file(remote, local)
    image = podman.load_state(local)["image"]
    sha = image["archive"]
    with images.using(sha) as stored:
        if stored is not None or podman.has_image(image["oci_id"]):
            return False
    status, out, err = host.sh(f"echo {images.STORE_IN_SHELL}")
    if status != 0:
        raise MigrationError(f"the board's image store is unknown ({err.strip() or status})")
    with tempfile.TemporaryDirectory(prefix="hexo-image.") as tmp:
        got = Path(tmp) / f"{sha}.tar"
        host.get_file(f"{out.strip()}/{sha}.tar", got)
        images.keep(got, sha, image["oci_id"], image["oci_name"])
    return True
