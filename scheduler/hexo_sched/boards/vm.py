"""Board VMs: boot, find, check and shut down qemu-system-aarch64 boards.

Each board has a state directory (`$HEXO_HOME/boards/NAME`): its qcow2 overlay over the cached
image (so several boards share one image and none changes it), its serial console log, qemu's
pid file and a known_hosts file pinning the image's host key to the board's forwarded port. A
board whose qemu is gone without `down` has crashed (a guest panic ends qemu too); one whose
console shows a kernel failure (console.py) has failed although qemu runs on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hexo.toolchain.sysroot import home

from .console import scan
from .image import BoardImage, require
from .qemu import qemu_argv

BOOT_TIMEOUT = 300.0          # to SSH answering; ~15 s on an idle host, TCG under load is slower
DOWN_TIMEOUT = 60.0
STALL_ANSWER_S = 30.0         # a board whose kernel reported a stall fails if sshd is this slow
CHECK_TIMEOUT = 120.0         # `check`'s SSH command; minutes only on a wedged or swamped host


@dataclass(frozen=True)
class Failure:
    """Why a board is unusable: `kind` 'crashed' (qemu gone) or 'failed' (its kernel)."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class BoardError(RuntimeError):
    """A board cannot be started, reached or found."""


def state_root() -> Path:
    return Path(os.environ.get("HEXO_BOARD_STATE", home() / "boards"))


@dataclass
class Board:
    name: str
    port: int
    cpus: int
    mem: str
    image_dir: str
    started: float

    @property
    def dir(self) -> Path:
        return state_root() / self.name

    @property
    def image(self) -> BoardImage:
        return BoardImage(Path(self.image_dir))

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @classmethod
    def load(cls, name: str) -> "Board":
        try:
            return cls(**json.loads((state_root() / name / "board.json").read_text()))
        except FileNotFoundError:
            raise BoardError(f"no board {name!r} (hexo board up {name})") from None

    @classmethod
    def running(cls, name: str) -> "Board":
        """Board NAME, unless it has crashed or failed (BoardError saying how)."""
        b = cls.load(name)
        why = b.failure()
        if why is not None:
            raise BoardError(f"board {name} has {why} (console {b.console}; hexo board "
                             f"down {name} cleans up)")
        return b

    def failure(self, stalls: bool = True) -> "Failure | None":
        """How the board is unusable, from its qemu and its console (no SSH log-in): qemu
        gone ('crashed'), a kernel oops or panic, or (`stalls`) a kernel stall on a board
        whose sshd is silent ('failed')."""
        report = scan(self.console)
        if self.pid() is None:
            return Failure("crashed", report.summary() if report else self.last_console_line())
        if report is not None and (report.fatal or stalls
                                   and not self.ssh_answers(STALL_ANSWER_S)):
            return Failure("failed", f"its kernel reported {report.summary()}")
        return None

    def pid(self) -> int | None:
        """qemu's pid while it runs, else None."""
        try:
            pid = int((self.dir / "qemu.pid").read_text())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if str(self.dir).encode() in f.read():
                    return pid
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        return None

    def ssh_answers(self, timeout: float = 5.0) -> bool:
        """sshd sent its banner through the port forward (no key exchange: that costs ~2 s)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def state(self) -> str:
        why = self.failure()
        if why is not None:
            return f"{why.kind} ({why.detail[:60]})"
        return "running" if self.ssh_answers() else "running, SSH not answering"

    def last_console_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.console.read_text(errors="replace").splitlines()
                     if ln.strip()]
        except FileNotFoundError:
            lines = []
        return lines[-1] if lines else "qemu exited, console empty"

    def connect(self):
        from .ssh import BoardConnection
        return BoardConnection(self)


def list_boards() -> list[Board]:
    root = state_root()
    if not root.is_dir():
        return []
    return [Board.load(d.name) for d in sorted(root.iterdir()) if (d / "board.json").exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def up(name: str, cpus: int = 2, mem: str = "2G", timeout: float = BOOT_TIMEOUT) -> Board:
    """Boot board NAME (or return it if it already runs) and wait until SSH logs in."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise BoardError(f"bad board name {name!r}: letters, digits, - and _ only")
    d = state_root() / name
    if (d / "board.json").exists():
        b = Board.load(name)
        if b.pid() is not None:
            return b
        _remove(b)
    image = require()
    d.mkdir(parents=True)
    overlay = d / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.disk), "-F", "raw",
                    str(overlay)], check=True)
    for _attempt in range(3):
        b = Board(name, _free_port(), cpus, mem, str(image.dir), time.time())
        (d / "board.json").write_text(json.dumps(asdict(b), indent=1))
        b.known_hosts.write_text(f"[127.0.0.1]:{b.port} {image.host_key}\n")
        argv = qemu_argv(image, disk=overlay, disk_format="qcow2", cpus=cpus, mem=mem,
                         init="/sbin/hexo-board-init", ssh_port=b.port)
        p = subprocess.run([*argv, "-serial", f"file:{b.console}", "-pidfile",
                            str(d / "qemu.pid"), "-daemonize"], capture_output=True, text=True)
        if p.returncode == 0:
            break
        if "hostfwd" not in p.stderr:                 # not a port taken since we chose it
            _remove(b)
            raise BoardError(f"qemu-system-aarch64 failed for board {name}: {p.stderr.strip()}")
    else:
        _remove(b)
        raise BoardError(f"board {name}: no free port for SSH after 3 tries")
    _wait_for_ssh(b, timeout)
    return b


def check(name: str, conn=None, timeout: float = CHECK_TIMEOUT) -> float:
    """Whether board NAME works: its qemu runs, its console shows no kernel failure and one
    command runs over SSH (on `conn`, an open BoardConnection to it, if given); that command's
    seconds, or BoardError saying what is wrong."""
    from ..hosts import HostError
    from .ssh import BoardConnection
    b = Board.running(name)
    t0 = time.monotonic()
    try:
        with contextlib.nullcontext(conn) if conn else BoardConnection(b, timeout) as c:
            status, out, _ = c.sh("echo ok")
    except HostError as e:
        Board.running(name)                           # failed meanwhile: that, not a timeout
        raise BoardError(f"board {name} does not answer: {e} (console {b.console})") from None
    if (status, out) != (0, "ok\n"):
        raise BoardError(f"board {name}: 'echo ok' gave {status} {out!r}")
    return time.monotonic() - t0


def _wait_for_ssh(b: Board, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = b.failure(stalls=False)                  # sshd is not up yet anyway
        if why is not None:
            raise BoardError(f"board {b.name} {why.kind} while booting: {why.detail} "
                             f"(console {b.console})")
        if b.ssh_answers():
            with b.connect() as conn:
                conn.sync_code()
            return
        time.sleep(1.0)
    raise BoardError(f"board {b.name}: SSH did not answer within {timeout:.0f} s "
                     f"(console {b.console}); it is still running: hexo board down {b.name}")


def down(name: str, timeout: float = DOWN_TIMEOUT) -> str:
    """Power the board off from inside (file systems synced and read-only first), wait for
    qemu to exit, remove its state. A crashed board is only cleaned up; one whose kernel
    failed is not logged in to: its qemu is terminated."""
    b = Board.load(name)
    pid, why = b.pid(), b.failure()
    if pid is None:
        _remove(b)
        return f"had crashed ({why.detail}); cleaned up"
    how = "shut down"
    if why is not None:                               # its kernel cannot be trusted to
        how = f"{why}; qemu terminated"               # power off
    else:
        try:
            with b.connect() as conn:
                conn.power_off()
        except Exception as e:                        # unreachable: end qemu from outside
            how = f"unreachable over SSH ({e}); qemu terminated"
    if how != "shut down":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while b.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if b.pid() is not None:
        os.kill(pid, signal.SIGKILL)
        how = "did not power off in time; qemu killed"
    _remove(b)
    return how


def _remove(b: Board) -> None:
    """A board's files here; what was pending on it (migrate.Pending) goes with its disk."""
    for f in ("disk.qcow2", "qemu.pid", "known_hosts", "console.log", "board.json",
              "pending.json", "pending.tmp", "pending.lock", "pending.busy"):
        (b.dir / f).unlink(missing_ok=True)
    b.dir.rmdir()
