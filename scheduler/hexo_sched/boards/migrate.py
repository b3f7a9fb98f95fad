"""Linux-mode processes and podman containers moved between two machines, this server and a
board or two boards (`hexo board migrate`): a CRIU checkpoint, recoded when the ISAs differ,
restored on the other side (a container by the target's podman). The source stays parked at
its migration point, restorable, until the target reports the job running; if anything
fails before that it continues where it was.

One path for every pair of machines, with this server as the hub: the checkpoint (and a
container's image, only when the target lacks an intact copy) is brought here and sent on.
Boards never connect to each other. This server alone holds the boards' SSH key and pins
their host keys, so a move between boards needs no new credential anywhere (a board given a
key to another would let one compromised board into all of them), and boards that reach only
the server (qemu's user network here, a private link to the server on real hardware) can
still trade jobs. The cost is a second copy over the server's link, small beside the run
time of a job worth moving.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from uhyve_ctl.container import checkpoint as ckpt, images, podman
from uhyve_ctl.container.process import host_isa, resume

from ..hosts import HostError
from .vm import Board

BOARD_ISA = "aarch64"
REMOTE_DIR = "/var/tmp/hexo-migrate"


class MigrationError(HostError):
    """The job could not be moved; the message says where it runs now."""


@dataclass(frozen=True)
class Job:
    """What moves: a process (by pid) or a podman container (by name)."""

    target: str

    @property
    def container(self) -> bool:
        return not self.target.isdigit()

    @property
    def what(self) -> str:
        return f"container {self.target}" if self.container else f"process {self.target}"

    @property
    def file_name(self) -> str:
        """Its checkpoint: a directory for a process, an archive for a container."""
        return f"container-{self.target}.tar" if self.container else f"process-{self.target}"


class Here:
    """This server as one end of a move."""

    at = "here"

    def __init__(self):
        self.isa = host_isa()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def checkpoint(self, job: Job, to_isa: str, timeout: float, tmp: Path) -> Path:
        """The job parked at its next point, dumped for `to_isa` (a container without its
        image) into `tmp`; the checkpoint's path here."""
        out = tmp / job.file_name
        if job.container:
            podman.checkpoint(job.target, out, to_isa, timeout, leave_running=True,
                              with_image=False)
        else:
            ckpt.checkpoint(int(job.target), out, to_isa, timeout, leave_stopped=True)
        return out

    def fetch(self, checkpoint: Path, tmp: Path) -> Path:
        return checkpoint

    def resume(self, job: Job) -> None:
        if job.container:
            podman.resume(job.target)
        else:
            resume(int(job.target))

    def end(self, job: Job) -> None:
        if job.container:
            podman.remove(job.target)
        else:
            os.kill(int(job.target), signal.SIGKILL)

    def restore(self, job: Job, checkpoint: Path, until_point: bool, reap: bool) -> str:
        if job.container:
            return podman.restore(checkpoint, until_point=until_point)
        return str(ckpt.restore(checkpoint, reap=reap, until_point=until_point))

    def has_image(self, image: dict) -> bool:
        """An intact copy in the store (a damaged one is removed) or the image in podman."""
        with images.using(image["archive"]) as stored:
            return stored is not None or podman.has_image(image["oci_id"])

    @contextlib.contextmanager
    def image_archive(self, image: dict, tmp: Path):
        with images.saved(image["oci_id"], image["oci_name"]) as (_, stored):
            yield stored

    def keep_image(self, image: dict, archive: Path) -> None:
        images.keep(archive, image["archive"], image["oci_id"], image["oci_name"])


class OnBoard:
    """A board as one end of a move, over one SSH connection from this server."""

    isa = BOARD_ISA

    def __init__(self, name: str):
        self.name, self.at = name, f"on {name}"
        self.board = Board.running(name)
        self.conn = None

    def __enter__(self):
        self.conn = self.board.connect()
        self.conn.host.sh("true")            # reachable, before any job is touched
        return self

    def __exit__(self, *exc):
        self.conn.__exit__(*exc)

    def _hexo(self, args: list[str], puts: list[Path] = ()) -> tuple[int, str, str]:
        out, err = io.BytesIO(), io.BytesIO()
        status = self.conn.run(["hexo", *args], puts=puts, stdout=out, stderr=err)
        return status, out.getvalue().decode(errors="replace"), err.getvalue().decode(
            errors="replace")

    def _remote(self, job: Job) -> str:
        return f"{REMOTE_DIR}/{job.file_name}"

    def checkpoint(self, job: Job, to_isa: str, timeout: float, tmp: Path) -> str:
        remote = self._remote(job)
        self.conn.host.sh(f"mkdir -p {REMOTE_DIR}; rm -rf {shlex.quote(remote)}")
        status, _, err = self._hexo(["container", "checkpoint", job.target, "--to", to_isa,
                                     "--leave-stopped", "--timeout", str(timeout),
                                     *(["--without-image"] if job.container else []),
                                     "-o", remote])
        if status != 0:
            raise MigrationError(f"checkpoint {self.at} failed ({err.strip() or status}); "
                                 f"{job.what} runs on there")
        return remote

    def fetch(self, remote: str, tmp: Path) -> Path:
        local = tmp / Path(remote).name
        if local.suffix == ".tar":
            self.conn.host.get_file(remote, local)
        else:
            self.conn.host.get_dir(remote, local)
        return local

    def resume(self, job: Job) -> None:
        self._hexo(["container", "resume", job.target])
        self.conn.host.sh(f"rm -rf {shlex.quote(self._remote(job))}")

    def end(self, job: Job) -> None:
        end = (f"podman rm --force --time 0 {shlex.quote(job.target)}" if job.container
               else f"kill -KILL {int(job.target)}")
        self.conn.host.sh(f"{end}; rm -rf {shlex.quote(self._remote(job))}")

    def restore(self, job: Job, checkpoint: Path, until_point: bool, reap: bool) -> str:
        status, out, err = self._hexo(["container", "restore", checkpoint.name,
                                       *(["--until-point"] if until_point else [])],
                                      puts=[checkpoint])
        if status != 0:
            raise MigrationError(err.strip() or f"status {status}")
        kind = "container" if job.container else "process"
        return out.rsplit(f"restored {kind} ", 1)[1].split()[0]

    def _store(self) -> str:
        return f"d={images.STORE_IN_SHELL}; "

    def has_image(self, image: dict) -> bool:
        sha = image["archive"]
        status, out, _ = self.conn.host.sh(self._store() + f'sha256sum "$d/{sha}.tar" '
                                           '2>/dev/null')
        return status == 0 and out.split()[:1] == [sha]

    @contextlib.contextmanager
    def image_archive(self, image: dict, tmp: Path):
        status, out, err = self.conn.host.sh(f"echo {images.STORE_IN_SHELL}")
        if status != 0:
            raise MigrationError(f"the image store {self.at} is unknown "
                                 f"({err.strip() or status})")
        local = tmp / f"{image['archive']}.tar"
        self.conn.host.get_file(f"{out.strip()}/{local.name}", local)
        yield local

    def keep_image(self, image: dict, archive: Path) -> None:
        """Streamed into the board's store, its digest checked there before it is kept."""
        sha = image["archive"]
        status = self.conn.stream(self._store() + f'set -e; mkdir -p "$d"; cat > '
                                  f'"$d/.{sha}.part"; echo "{sha}  $d/.{sha}.part" | '
                                  f'sha256sum -c --quiet; mv "$d/.{sha}.part" "$d/{sha}.tar"',
                                  stdin=archive.read_bytes())
        if status != 0:
            raise MigrationError(f"sending the container image {self.at} failed ({status})")


def machine(board: str | None) -> Here | OnBoard:
    """One end of a move: board `board`, or this server for None."""
    return Here() if board is None else OnBoard(board)


def copy_image(src, dst, image: dict, tmp: Path) -> bool:
    """The container image `image` (a checkpoint's `image`) into `dst`'s store unless `dst`
    has an intact copy, from `src`'s; whether it was copied."""
    if dst.has_image(image):
        return False
    with src.image_archive(image, tmp) as archive:
        dst.keep_image(image, archive)
    return True


def move(target: str, src: str | None = None, dst: str | None = None, timeout: float = 30.0,
         until_point: bool = False, reap: bool = False) -> str:
    """Move process (pid) or container (name) `target` from board `src` to board `dst` (None:
    this server); its pid or name there. The target is reached before the job is touched;
    the source job stays parked at its point until the target runs it, then it ends there.
    With `until_point` the job stops again at its next point on the target; with `reap` a
    process restored here is a child of the caller (see checkpoint.restore)."""
    job = Job(target)
    if src == dst:
        raise MigrationError(f"{job.what}: the source and the target are the same machine")
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, machine(dst) as there, \
            machine(src) as here:
        parked = here.checkpoint(job, there.isa, timeout, Path(tmp))
        try:
            local = here.fetch(parked, Path(tmp))
            if job.container:
                copy_image(here, there, podman.load_state(local)["image"], Path(tmp))
            new = there.restore(job, local, until_point, reap)
        except BaseException as e:
            here.resume(job)
            if isinstance(e, Exception):
                raise MigrationError(f"restore {there.at} failed ({e}); {job.what} continues "
                                     f"{here.at}") from None
            raise
        here.end(job)
        return new
