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

A board that freezes (its qemu stopped, a hung kernel) keeps its connection open and answers
nothing: every command on a board has a deadline (`step_timeout`, generous for emulated
boards), after which the move gives up and the source resumes. A restore given up on may
still bring the job up on the target once it runs again, so the target is marked: its
restore writes what it restored to a file named by the move (the copy's pid or container
name, known only there), the server records the move in the board's `abandoned` list, and
every later connection to the board stops what such a file names before doing anything else.
The alternative, a target that restores the job stopped and starts it only on a go from the
server, cannot be sound either: a target that freezes after the go and before its answer
leaves the server unable to tell whether the job runs there, so the source could never
resume; and a job recoded for another ISA does not wait at its point on restore. The window
left is the time from the board thawing to its next connection from this server (`hexo board
exec` or `hexo board migrate`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shlex
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from uhyve_ctl.container import checkpoint as ckpt, images, podman
from uhyve_ctl.container.process import host_isa, resume

from ..hosts import HostError
from .ssh import STEP_TIMEOUT, BoardConnection
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

    def abandon(self, move_id: str) -> None:
        """Nothing to mark: a restore here has ended when it returns or raises."""

    def forget(self, move_id: str) -> None:
        """Nothing was recorded."""

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

    def restore(self, job: Job, checkpoint: Path, until_point: bool, reap: bool,
                move_id: str) -> str:
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
    """A board as one end of a move, over one SSH connection from this server (`board`: a
    booted board VM by default)."""

    isa = BOARD_ISA

    def __init__(self, name: str, step_timeout: float | None = STEP_TIMEOUT, board=None):
        self.name, self.at = name, f"on {name}"
        self.board = board or Board.running(name)
        self.step_timeout = step_timeout
        self.conn = None

    def __enter__(self):
        self.conn = BoardConnection(self.board, self.step_timeout)
        self.conn.sh("true")            # reachable, before any job is touched
        for line in self.stop_abandoned():
            print(line, file=sys.stderr)
        return self

    def __exit__(self, *exc):
        self.conn.__exit__(*exc)

    def _hexo(self, args: list[str], puts: list[Path] = ()) -> tuple[int, str, str]:
        return self._run(["hexo", *args], puts)

    def _run(self, cmd: list[str], puts: list[Path] = ()) -> tuple[int, str, str]:
        out, err = io.BytesIO(), io.BytesIO()
        status = self.conn.run(cmd, puts=puts, stdout=out, stderr=err)
        return status, out.getvalue().decode(errors="replace"), err.getvalue().decode(
            errors="replace")

    @property
    def _abandoned_file(self) -> Path:
        return Path(self.board.dir) / "abandoned.json"

    def _abandoned(self) -> list[str]:
        try:
            return json.loads(self._abandoned_file.read_text())
        except FileNotFoundError:
            return []

    def _keep_abandoned(self, moves: list[str]) -> None:
        if not moves:
            self._abandoned_file.unlink(missing_ok=True)
            return
        tmp = self._abandoned_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(moves))
        os.replace(tmp, self._abandoned_file)

    def _restored(self, move_id: str) -> str:
        """Where the restore of move `move_id` writes what it restored."""
        return f"{REMOTE_DIR}/restored-{move_id}"

    def abandon(self, move_id: str) -> None:
        """The move's restore was given up on: whatever it restored is stopped at the next
        connection (a file here: the board may not answer now)."""
        self._keep_abandoned([*self._abandoned(), move_id])

    def forget(self, move_id: str) -> None:
        """The move is over: its restore's record goes (if the board answers)."""
        with contextlib.suppress(HostError):
            self.conn.sh(f"rm -f {shlex.quote(self._restored(move_id))}")

    def stop_abandoned(self) -> list[str]:
        """Stop the copies restored by moves given up on; what was done, one line each. A
        restore still running keeps its move on the list, one that never restored anything
        leaves it."""
        moves, said = self._abandoned(), []
        pending = []
        for move_id in moves:
            marker = shlex.quote(self._restored(move_id))
            if _running_restore(self.conn, move_id):       # before reading what it wrote
                pending.append(move_id)
                said.append(f"a restore given up on is still running {self.at}; it is stopped "
                            "at the next connection")
                continue
            _, out, _ = self.conn.sh(f"cat {marker} 2>/dev/null")
            for kind in ("process", "container"):
                if f"restored {kind} " in out:
                    target = out.rsplit(f"restored {kind} ", 1)[1].split()[0]
                    self.conn.sh(_end_command(Job(target)))
                    said.append(f"stopped {kind} {target} {self.at}: its move had been given "
                                "up on and the job went on at its source")
            self.conn.sh(f"rm -f {marker}")
        if moves != pending:
            self._keep_abandoned(pending)
        return said

    def _remote(self, job: Job) -> str:
        return f"{REMOTE_DIR}/{job.file_name}"

    def checkpoint(self, job: Job, to_isa: str, timeout: float, tmp: Path) -> str:
        remote = self._remote(job)
        self.conn.sh(f"mkdir -p {REMOTE_DIR}; rm -rf {shlex.quote(remote)}")
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
        self.conn.sh(f"rm -rf {shlex.quote(self._remote(job))}")

    def end(self, job: Job) -> None:
        self.conn.sh(f"{_end_command(job)}; rm -rf {shlex.quote(self._remote(job))}")

    def restore(self, job: Job, checkpoint: Path, until_point: bool, reap: bool,
                move_id: str) -> str:
        """Restored by `hexo container restore`, its report kept in the move's file too (what
        `stop_abandoned` reads)."""
        script = 'mkdir -p "${0%/*}"; hexo container restore "$@" > "$0"; st=$?; cat "$0"; exit $st'
        status, out, err = self._run(["sh", "-c", script, self._restored(move_id),
                                      checkpoint.name,
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
        status, out, _ = self.conn.sh(self._store() + f'sha256sum "$d/{sha}.tar" '
                                           '2>/dev/null')
        return status == 0 and out.split()[:1] == [sha]

    @contextlib.contextmanager
    def image_archive(self, image: dict, tmp: Path):
        status, out, err = self.conn.sh(f"echo {images.STORE_IN_SHELL}")
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


def _end_command(job: Job) -> str:
    return (f"podman rm --force --time 0 {shlex.quote(job.target)}" if job.container
            else f"kill -KILL {int(job.target)}")


def _running_restore(conn: BoardConnection, move_id: str) -> bool:
    """The move's restore script runs there (the bracket keeps pgrep's own shell out)."""
    status, _, _ = conn.sh(f"pgrep -f 'restored-[{move_id[0]}]{move_id[1:]}' >/dev/null")
    return status == 0


def machine(board: str | None, step_timeout: float = STEP_TIMEOUT) -> Here | OnBoard:
    """One end of a move: board `board`, or this server for None."""
    return Here() if board is None else OnBoard(board, step_timeout)


def copy_image(src, dst, image: dict, tmp: Path) -> bool:
    """The container image `image` (a checkpoint's `image`) into `dst`'s store unless `dst`
    has an intact copy, from `src`'s; whether it was copied."""
    if dst.has_image(image):
        return False
    with src.image_archive(image, tmp) as archive:
        dst.keep_image(image, archive)
    return True


def move(target: str, src: str | None = None, dst: str | None = None, timeout: float = 30.0,
         until_point: bool = False, reap: bool = False,
         step_timeout: float = STEP_TIMEOUT) -> str:
    """Move process (pid) or container (name) `target` from board `src` to board `dst` (None:
    this server); its pid or name there. The target is reached before the job is touched;
    the source job stays parked at its point until the target runs it, then it ends there.
    With `until_point` the job stops again at its next point on the target; with `reap` a
    process restored here is a child of the caller (see checkpoint.restore). A board command
    that has not ended after `step_timeout` seconds fails the move (the module's docstring
    says what becomes of a restore given up on)."""
    job = Job(target)
    if src == dst:
        raise MigrationError(f"{job.what}: the source and the target are the same machine")
    move_id = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            machine(dst, step_timeout) as there, machine(src, step_timeout) as here:
        parked = here.checkpoint(job, there.isa, timeout, Path(tmp))
        restoring = False
        try:
            local = here.fetch(parked, Path(tmp))
            if job.container:
                copy_image(here, there, podman.load_state(local)["image"], Path(tmp))
            restoring = True
            new = there.restore(job, local, until_point, reap, move_id)
        except BaseException as e:
            if restoring:
                there.abandon(move_id)
            here.resume(job)
            if isinstance(e, Exception):
                raise MigrationError(f"restore {there.at} failed ({e}); {job.what} continues "
                                     f"{here.at}") from None
            raise
        there.forget(move_id)
        try:
            here.end(job)
        except HostError as e:
            raise MigrationError(f"{job.what} runs {there.at} as {new}, but its copy {here.at} "
                                 f"could not be ended ({e}); it stays parked there: end it "
                                 "once the machine answers") from None
        return new
