"""Commands on a board over one SSH connection (each new key exchange costs 2-3 s under TCG).

hexo's code is pushed to `/opt/hexo` on first use and whenever the checkout changes (a hash of
the shipped files is kept there), so a board always runs the server's code: `uhyve-ctl` and
`hexo` on the board's PATH are wrappers around it.
"""

from __future__ import annotations

import hashlib
import io
import select
import shlex
import tarfile
import threading
import time
from pathlib import Path

from hexo.resources import package_path

from ..hosts import HostError, SshHost
from .console import ConsoleWatch

CODE_DIR = "/opt/hexo"
PACKAGES = {name: package_path(name) for name in ("hexo", "uhyve_ctl", "hexo_sched")}
SCRIPTS = {"uhyve-ctl": "uhyve_ctl.cli", "hexo": "hexo.cli"}
ENV = (f"PATH={CODE_DIR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
       f"PYTHONPATH={CODE_DIR}")


def code_bundle() -> tuple[str, bytes]:
    """(hash, tar.gz) of hexo's Python packages and the wrappers of its commands."""
    files: list[tuple[str, bytes, int]] = []
    for pkg, src in PACKAGES.items():
        for f in sorted(src.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".sh"):
                files.append((f"{pkg}/{f.relative_to(src)}", f.read_bytes(), 0o644))
    files += _plugin_metadata()
    for name, module in SCRIPTS.items():
        files.append((f"bin/{name}", (f"#!/usr/bin/python3\nimport sys\n"
                                      f"sys.path.insert(0, {CODE_DIR!r})\n"
                                      f"from {module} import main\nsys.exit(main())\n").encode(),
                      0o755))
    digest = hashlib.sha256()
    for name, data, mode in files:
        digest.update(f"{name}\0{mode}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16], _tar_gz((name, data, mode) for name, data, mode in files)


def _plugin_metadata() -> list[tuple[str, bytes, int]]:
    """A dist-info with the runtime's `hexo.commands` entry points, so that `hexo` on the
    board has its subcommands (container, ...) without installing a package there (the
    scheduler's need libraries the board has not)."""
    from importlib.metadata import entry_points
    from hexo.cli import PLUGIN_GROUP
    eps = "".join(f"{ep.name} = {ep.value}\n" for ep in entry_points(group=PLUGIN_GROUP)
                  if ep.value.startswith("uhyve_ctl."))
    info = "hexo_board-0.dist-info"
    return [(f"{info}/METADATA", b"Metadata-Version: 2.1\nName: hexo-board\nVersion: 0\n", 0o644),
            (f"{info}/entry_points.txt", f"[{PLUGIN_GROUP}]\n{eps}".encode(), 0o644)]


def _tar_gz(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tar_of_paths(paths: list[Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for p in paths:
            if not p.exists():
                raise HostError(f"--put {p}: no such file or directory")
            tar.add(p, arcname=p.resolve().name)
    return buf.getvalue()


STEP_TIMEOUT = 900.0      # one command on an emulated board: a restore under TCG takes minutes
SH_TIMEOUT = 300.0        # a short command, when steps have no deadline
CONSOLE_EVERY_S = 2.0     # how often a command's wait reads the board's console


class BoardConnection:
    """One authenticated SSH connection to a board (host key pinned), reused for all calls.

    Every command has a deadline, `step_timeout` seconds (None: none for the commands `run`
    and `stream` run, SH_TIMEOUT for `sh`'s): a board that freezes (its qemu stopped) keeps
    the TCP connection open and sends nothing, and a command waiting on it would wait for
    ever. Past the deadline the connection is closed and HostError raised. A board whose
    console (if it has one) shows a kernel oops or panic fails each command at once: its kernel
    may have died holding a lock the command waits for."""

    def __init__(self, board, step_timeout: float | None = STEP_TIMEOUT):
        self.board, self.step_timeout = board, step_timeout
        console = getattr(board, "console", None)
        self.console = ConsoleWatch(console) if console is not None else None
        self.host = SshHost(board.name, "127.0.0.1", board.port, "root", board.image.client_key,
                            board.known_hosts, connect_timeout=30.0,
                            io_timeout=min(60.0, step_timeout or 60.0))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.host.close()

    def sync_code(self) -> None:
        """Install the checkout's hexo code on the board unless it is already there."""
        version, bundle = code_bundle()
        rc, out, _ = self.sh(f"cat {CODE_DIR}/VERSION 2>/dev/null")
        if out.strip() == version:
            return
        new = f"{CODE_DIR}.new"
        status = self.stream(
            f"set -e; rm -rf {new}; mkdir -p {new}; tar -xzf - -C {new}; "
            f"echo {version} > {new}/VERSION; rm -rf {CODE_DIR}; mv {new} {CODE_DIR}; "
            f"for s in {' '.join(SCRIPTS)}; do ln -sf {CODE_DIR}/bin/$s /usr/local/bin/$s; done",
            stdin=bundle)
        if status != 0:
            raise HostError(f"{self.board.name}: installing hexo's code failed ({status})")

    def run(self, cmd: list[str], puts: list[Path] = (), stdout=None, stderr=None,
            reply=None) -> int:
        """Run cmd in a fresh directory holding copies of puts; stream its output (answered
        by `reply`, see stream); its status."""
        self.sync_code()
        rc, out, err = self.sh("mktemp -d /var/tmp/hexo-exec.XXXXXX")
        if rc != 0:
            raise HostError(f"{self.board.name}: mktemp failed: {err.strip()}")
        work = out.strip()
        if puts:
            status = self.stream(f"tar -xzf - -C {work}", stdin=_tar_of_paths(list(puts)))
            if status != 0:
                raise HostError(f"{self.board.name}: copying --put files failed ({status})")
        return self.stream(f"cd {work} && {ENV} {shlex.join(cmd)}; st=$?; cd /; rm -rf {work}; "
                           "exit $st", stdout=stdout, stderr=stderr, reply=reply)

    def sh(self, script: str) -> tuple[int, str, str]:
        """A short command's status, stdout and stderr, within the step deadline."""
        out, err = io.BytesIO(), io.BytesIO()
        status = self.stream(script, stdout=out, stderr=err,
                             timeout=self.step_timeout or SH_TIMEOUT)
        return status, out.getvalue().decode(errors="replace"), err.getvalue().decode(
            errors="replace")

    def stream(self, script: str, stdin: bytes | None = None, stdout=None, stderr=None,
               timeout: float | None = None, reply=None) -> int:
        """Run a shell script on the board, copying its output to the given binary files as
        it comes; its exit status (128+N when killed by signal N). HostError once it has
        run for `timeout` seconds, by default `step_timeout` (the script may still run
        there). With `reply` (instead of `stdin`) the script's input stays open: each piece
        of its output goes to reply(), and what that returns is sent to it."""
        import paramiko
        timeout = timeout or self.step_timeout
        deadline = time.monotonic() + (timeout or float("inf"))
        self._check_console()
        console_due = time.monotonic() + CONSOLE_EVERY_S
        chan = self.host.open_channel()
        try:
            chan.settimeout(timeout)
            # paramiko waits for the command's acceptance without a limit: past the host's
            # I/O timeout the connection is closed, which ends the wait
            watchdog = threading.Timer(self.host.io_timeout, self.host.close)
            watchdog.daemon = True
            watchdog.start()
            try:
                chan.exec_command(script)
                watchdog.cancel()
                if stdin is not None:
                    chan.sendall(stdin)
                if reply is None:
                    chan.shutdown_write()
            except (paramiko.SSHException, OSError, EOFError) as e:
                self._give_up(f"did not take the command ({e or 'no answer'})")
            finally:
                watchdog.cancel()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._give_up(f"no end of the command within {timeout:g} s")
                select.select([chan], [], [], min(1.0, left))
                got = False
                while chan.recv_ready():
                    data = chan.recv(65536)
                    _write(stdout, data)
                    if reply is not None and data:
                        self._send(chan, reply(data))
                    got = True
                while chan.recv_stderr_ready():
                    _write(stderr, chan.recv_stderr(65536))
                    got = True
                if not got and chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if not got and chan.closed:
                    break
                if time.monotonic() >= console_due:
                    self._check_console()
                    console_due = time.monotonic() + CONSOLE_EVERY_S
            status = chan.recv_exit_status()
            return status if status >= 0 else 255
        finally:
            chan.close()

    def _check_console(self) -> None:
        report = self.console.check() if self.console is not None else None
        if report is not None and report.fatal:
            self._give_up(f"its kernel failed: {report.summary()} (console {self.console.path})")

    def _send(self, chan, data: bytes) -> None:
        import paramiko
        try:
            chan.sendall(data)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._give_up(f"did not take the answer ({e or 'connection lost'})")

    def _give_up(self, why: str):
        self.host.close()                      # a later call connects afresh
        raise HostError(f"{self.board.name}: {why}")

    def power_off(self) -> None:
        """Sync, remount read-only and power off (qemu then exits); the command does not
        return, so its channel is not waited for."""
        chan = self.host.open_channel()
        chan.exec_command("sync; echo u > /proc/sysrq-trigger; echo o > /proc/sysrq-trigger")


def _write(f, data: bytes) -> None:
    if f is not None and data:
        f.write(data)
        f.flush()
