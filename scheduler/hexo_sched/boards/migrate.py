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

No moment has two copies of one job computing: the move is a two-phase handover. The source
is parked at its point by the checkpoint; the target restores the job held, parked too
(`hexo container restore --held`, handover.py), and reports it held; the server confirms that
the source is still parked, records its decision, and only then says `go`; the target writes
`running` to the move's record on the board and lets the job continue; the source is ended
once the server has read that. Before the `go`, any failure or deadline ends the target's
copy (the end of its input is its signal: a target that comes back from a freeze finds its
connection gone) and the source continues. A `go` that gets no answer leaves the outcome in
doubt: the source stays parked (never discarded, never resumed) until the next connection to
the target reads from the record what it did.

A board that freezes (its qemu stopped, a hung kernel) keeps its connection open and answers
nothing: every command on a board has a deadline (`step_timeout`, generous for emulated
boards). What is left to do on a board that did not answer, the server keeps in the board's
pending list (`Pending`) and does at the next connection to it (`hexo board exec` or `hexo
board migrate`) before anything else: a copy restored by a move given up on is stopped,
a move in doubt is settled, a parked source whose job runs elsewhere is ended, one whose
move failed continues.
"""

from __future__ import annotations

import contextlib
import fcntl
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

from uhyve_ctl.container import checkpoint as ckpt, images, podman, process
from uhyve_ctl.container.handover import GO

from ..hosts import HostError
from . import ssh
from .ssh import STEP_TIMEOUT, BoardConnection
from .vm import Board, state_root

BOARD_ISA = "aarch64"
REMOTE_DIR = "/var/tmp/hexo-migrate"


class MigrationError(HostError):
    """The job could not be moved; the message says where it runs now."""


class InDoubt(MigrationError):
    """The target was told to run the job and did not answer: it may run it, or not."""


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


class Pending:
    """What the server still has to do on board `name` when it next answers: a JSON list in
    the board's directory here, one entry per move ({"move", "do", "job", "source"}; `do`
    is stop, settle, end or resume). Concurrent `hexo board migrate` commands share it, so
    every change is a read-modify-write under an exclusive lock of a file beside it."""

    def __init__(self, directory: Path):
        self.file = Path(directory) / "pending.json"

    @contextlib.contextmanager
    def _locked(self):
        with open(self.file.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self) -> list[dict]:
        try:
            return json.loads(self.file.read_text())
        except FileNotFoundError:
            return []

    def entries(self) -> list[dict]:
        with self._locked():
            return self._read()

    def add(self, entry: dict) -> None:
        self._change(lambda entries: [*entries, entry])

    def remove(self, done: list[dict]) -> None:
        self._change(lambda entries: [e for e in entries if e not in done])

    def _change(self, how) -> None:
        with self._locked():
            entries = how(self._read())
            if not entries:                       # `hexo board down` removes the directory
                self.file.unlink(missing_ok=True)
                return
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(json.dumps(entries))
            os.replace(tmp, self.file)

    @contextlib.contextmanager
    def carried_out(self):
        """Whether this process may carry the entries out now (one at a time per board; a
        second connection meanwhile leaves them to the first)."""
        with open(self.file.with_suffix(".busy"), "a") as busy:
            try:
                fcntl.flock(busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True


class Here:
    """This server as one end of a move."""

    at = "here"

    def __init__(self):
        self.isa = process.host_isa()

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

    def confirm_parked(self, job: Job) -> None:
        parked = podman.parked(job.target) if job.container else process.parked(int(job.target))
        if not parked:
            raise MigrationError(f"{job.what} is no longer parked {self.at}")

    def defer(self, move_id: str, do: str, job: Job) -> bool:
        """Nothing to defer here: this server always answers itself."""
        return False

    def going(self, move_id: str, job: Job, source: str | None) -> None:
        """Nothing to keep: a restore here cannot leave its outcome in doubt."""

    def resume(self, job: Job) -> None:
        if job.container:
            podman.resume(job.target)
        else:
            process.resume(int(job.target))

    def end(self, job: Job) -> None:
        if job.container:
            podman.remove(job.target)
        else:
            os.kill(int(job.target), signal.SIGKILL)

    def restore(self, job: Job, checkpoint: Path, until_point: bool, reap: bool,
                move_id: str, commit) -> str:
        """Restored held, let go once `commit(new)` has returned."""
        if job.container:
            new = podman.restore(checkpoint, until_point=until_point, held=True)
        else:
            new = str(ckpt.restore(checkpoint, reap=reap, until_point=until_point, held=True))
        try:
            commit(new)
        except BaseException:
            self.end(Job(new))
            raise
        self.resume(Job(new))
        return new

    def forget(self, move_id: str) -> None:
        """Nothing was recorded."""

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
        self.pending = Pending(self.board.dir)
        self.conn = None

    def __enter__(self):
        self.conn = BoardConnection(self.board, self.step_timeout)
        self.conn.sh("true")            # reachable, before any job is touched
        for line in self.carry_out_pending():
            print(line, file=sys.stderr)
        return self

    def __exit__(self, *exc):
        self.conn.__exit__(*exc)

    def _hexo(self, args: list[str], puts: list[Path] = ()) -> tuple[int, str, str]:
        return self._run(["hexo", *args], puts)

    def _run(self, cmd: list[str], puts: list[Path] = (), reply=None) -> tuple[int, str, str]:
        out, err = io.BytesIO(), io.BytesIO()
        status = self.conn.run(cmd, puts=puts, stdout=out, stderr=err, reply=reply)
        return status, out.getvalue().decode(errors="replace"), err.getvalue().decode(
            errors="replace")

    def _record(self, move_id: str) -> str:
        """Where the held restore of move `move_id` writes its decisions."""
        return f"{REMOTE_DIR}/restored-{move_id}"

    def defer(self, move_id: str, do: str, job: Job) -> bool:
        """`do` (end or resume) the parked `job` at the next connection."""
        self.pending.add({"move": move_id, "do": do, "job": job.target})
        return True

    def going(self, move_id: str, job: Job, source: str | None) -> None:
        """The go is about to be sent: should its answer not come, the next connection
        settles the move (from board `source`, None: this server)."""
        self.pending.add({"move": move_id, "do": "settle", "job": job.target,
                          "source": source})

    def forget(self, move_id: str) -> None:
        """The move is over: its record goes (if the board answers), and so does whatever
        the server kept for it."""
        self.pending.remove([e for e in self.pending.entries() if e["move"] == move_id])
        with contextlib.suppress(HostError):
            self.conn.sh(f"rm -f {shlex.quote(self._record(move_id))}")

    def carry_out_pending(self) -> list[str]:
        """Do what the pending list says (Pending); what was done, one line each. A move
        whose restore still runs there keeps its entry, as does one this server could not
        finish (another board not answering)."""
        said = []
        with self.pending.carried_out() as mine:
            if not mine:
                return said
            entries = self.pending.entries()
            done = [e for e in entries if self._carry_out(e, said)]
            if done:
                self.pending.remove(done)
        return said

    def _carry_out(self, entry: dict, said: list[str]) -> bool:
        do, move_id = entry["do"], entry["move"]
        if do in ("end", "resume"):
            job = Job(entry["job"])
            if do == "end":
                self.end(job)
                said.append(f"ended the parked {job.what} {self.at}: it runs elsewhere")
            else:
                self.resume(job)
                said.append(f"{job.what} continues {self.at}: its move failed")
            return True
        if _running_restore(self.conn, move_id):       # before reading what it wrote
            said.append(f"a restore given up on is still running {self.at}; it is stopped "
                        "at the next connection")
            return False
        _, out, _ = self.conn.sh(f"cat {shlex.quote(self._record(move_id))} 2>/dev/null")
        decision, _, copy = out.strip().partition(" ")
        if decision == "running" and do == "settle":
            said.append(self._settled(entry, "end", f"the move of {copy} {self.at} went "
                                                    "through"))
        else:
            if decision in ("held", "running"):
                self.conn.sh(_end_command(Job(copy.split()[1])))
                said.append(f"stopped {copy} {self.at}: its move had been given up on")
            if do == "settle":
                said.append(self._settled(entry, "resume", f"the move of {entry['job']} to "
                                                           f"{self.name} did not happen"))
        self.conn.sh(f"rm -f {shlex.quote(self._record(move_id))}")
        return True

    def _settled(self, entry: dict, do: str, why: str) -> str:
        """The source of a move in doubt told what became of it: `do` (end or resume)."""
        job, source = Job(entry["job"]), entry["source"]
        done = {"end": "ended", "resume": "continued"}[do]
        if source is not None:
            if not (state_root() / source).is_dir():
                return f"{why}: board {source}, where {job.what} was parked, is gone"
            Pending(state_root() / source).add({"move": entry["move"], "do": do,
                                                "job": job.target})
            return f"{why}: {job.what} on {source} is {done} at its next connection"
        try:
            getattr(machine(None), do)(job)
        except Exception as e:                  # gone meanwhile: nothing is left to do
            return f"{why}: {job.what} here could not be {done} ({e})"
        return f"{why}: {job.what} here {done}"

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

    def confirm_parked(self, job: Job) -> None:
        status, _, err = self.conn.sh(f"{ssh.ENV} hexo container parked "
                                      f"{shlex.quote(job.target)}")
        if status != 0:
            raise MigrationError(f"{job.what} is no longer parked {self.at} "
                                 f"({err.strip() or status})")

    def resume(self, job: Job) -> None:
        self._hexo(["container", "resume", job.target])
        self.conn.sh(f"rm -rf {shlex.quote(self._remote(job))}")

    def end(self, job: Job) -> None:
        self.conn.sh(f"{_end_command(job)}; rm -rf {shlex.quote(self._remote(job))}")

    def restore(self, job: Job, checkpoint: Path, until_point: bool, reap: bool,
                move_id: str, commit) -> str:
        """Restored held by `hexo container restore --held` (its decisions in the move's
        record there), let go once `commit(new)` has returned. Should this connection give
        up before the go, the restore ends its copy when its input ends, and the move is
        kept pending (stop) in case it does not; after the go, InDoubt."""
        said, went = bytearray(), []

        def reply(data: bytes) -> bytes:
            said.extend(data)
            held = [ln for ln in said.decode(errors="replace").split("\n")[:-1]
                    if ln.startswith("held ")]
            if went or not held:
                return b""
            commit(held[0].split()[-1])
            went.append(True)
            return f"{GO}\n".encode()

        record = self._record(move_id)
        try:
            status, out, err = self._run(
                ["sh", "-c", 'mkdir -p "$0" && exec hexo container restore "$@"', REMOTE_DIR,
                 checkpoint.name, "--held", record, "--hold-limit",
                 f"{self.step_timeout or STEP_TIMEOUT:g}",
                 *(["--until-point"] if until_point else [])], puts=[checkpoint], reply=reply)
        except BaseException as e:              # an interrupt after the go is in doubt too
            if went:
                raise InDoubt(str(e) or type(e).__name__) from None
            if isinstance(e, HostError):
                self.pending.add({"move": move_id, "do": "stop"})
            raise
        kind = "container" if job.container else "process"
        if status == 0 and f"running {kind} " in out:
            return out.rsplit(f"running {kind} ", 1)[1].split()[0]
        self.forget(move_id)
        raise MigrationError(err.strip().splitlines()[-1] if err.strip() else
                             f"status {status}{', its copy ended there' if went else ''}")

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
    """The move's restore runs there (the bracket keeps pgrep's own shell out)."""
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
    the source job stays parked at its point until the target runs it, then it ends there
    (the module's docstring says how the two never both run). With `until_point` the job
    stops again at its next point on the target; with `reap` a process restored here is a
    child of the caller (see checkpoint.restore). A board command that has not ended after
    `step_timeout` seconds fails the move."""
    job = Job(target)
    if src == dst:
        raise MigrationError(f"{job.what}: the source and the target are the same machine")
    move_id = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="hexo-migrate.") as tmp, \
            machine(dst, step_timeout) as there, machine(src, step_timeout) as here:
        parked = here.checkpoint(job, there.isa, timeout, Path(tmp))

        def commit(new: str) -> None:
            """Phase two: the source still parked and the decision kept before the go."""
            here.confirm_parked(job)
            there.going(move_id, job, src)
        try:
            local = here.fetch(parked, Path(tmp))
            if job.container:
                copy_image(here, there, podman.load_state(local)["image"], Path(tmp))
            new = there.restore(job, local, until_point, reap, move_id, commit)
        except InDoubt as e:
            raise MigrationError(f"{job.what} may run {there.at} or not: told to run it, the "
                                 f"target did not answer ({e}); it stays parked {here.at} "
                                 f"until the next connection to {dst} settles it") from None
        except BaseException as e:
            _resume(here, job, move_id)
            if isinstance(e, Exception):
                raise MigrationError(f"restore {there.at} failed ({e}); {job.what} continues "
                                     f"{here.at}") from None
            raise
        there.forget(move_id)
        try:
            here.end(job)
        except HostError as e:
            if not here.defer(move_id, "end", job):
                raise MigrationError(f"{job.what} runs {there.at} as {new}, but its copy "
                                     f"{here.at} could not be ended ({e}); it stays parked "
                                     "there: end it once the machine answers") from None
            print(f"{job.what} runs {there.at} as {new}; its parked copy {here.at} did not "
                  f"answer ({e}) and is ended at the next connection", file=sys.stderr)
        return new


def _resume(here, job: Job, move_id: str) -> None:
    """The source continues, now or (a board not answering) at its next connection."""
    try:
        here.resume(job)
    except HostError:
        if not here.defer(move_id, "resume", job):
            raise
