"""Reaching a machine: shell commands and file copies, locally or over SSH (paramiko).

Both kinds run the same shell text, so a job is launched, probed and checkpointed the same way
on the server and on a board. SSH is key-based and the board's host key must already be in the
configured known_hosts file: an unknown or changed key refuses the connection.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import stat
import subprocess
import threading
from pathlib import Path

from .errors import SchedError


PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)     # loaded here: nothing to load after fork


class HostError(SchedError, RuntimeError):
    """A machine could not be reached or a command could not be run there."""


class LocalHost:
    """The server: the daemon's own machine."""

    remote = False

    def __init__(self, name: str):
        self.name = name

    def sh(self, script: str, timeout: float = 300.0) -> tuple[int, str, str]:
        try:
            p = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                               timeout=timeout, preexec_fn=_die_with_parent)
        except subprocess.TimeoutExpired:
            raise HostError(f"{self.name}: command timed out after {timeout:g} s") from None
        return p.returncode, p.stdout, p.stderr

    def put_dir(self, local: Path, remote: str) -> None:
        if os.path.abspath(local) != os.path.abspath(remote):
            shutil.copytree(local, remote, dirs_exist_ok=True)

    def get_dir(self, remote: str, local: Path) -> None:
        self.put_dir(Path(remote), str(local))

    def put_file(self, local: Path, remote: str) -> None:
        os.makedirs(os.path.dirname(remote), exist_ok=True)
        shutil.copyfile(local, remote + ".part")
        os.replace(remote + ".part", remote)

    def get_file(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def files(self, fn):
        """Call fn(reader) with a reader of this machine's files (see FileReader)."""
        return fn(LocalFiles())

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        pass


class LocalFiles:
    """FileReader for this machine. read(path) -> text or None; read_bytes(path, offset,
    limit) -> bytes or None; size(path) -> int or None; exists(path) -> bool."""

    def read(self, path: str) -> str | None:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str, offset: int = 0, limit: int = -1) -> bytes | None:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return None

    def size(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)


class SftpFiles:
    """FileReader over one SFTP session: no shell starts on the board for it."""

    def __init__(self, sftp):
        self.sftp = sftp

    def read(self, path: str) -> str | None:
        try:
            with self.sftp.open(path) as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str, offset: int = 0, limit: int = -1) -> bytes | None:
        try:
            with self.sftp.open(path) as f:
                f.seek(offset)
                return f.read(limit if limit >= 0 else None)
        except FileNotFoundError:
            return None

    def size(self, path: str) -> int | None:
        try:
            return self.sftp.stat(path).st_size
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self.size(path) is not None


class SshHost:
    """A board over SSH. One connection, reopened when it drops; calls are serialized."""

    remote = True

    def __init__(self, name: str, host: str, port: int, user: str, key: Path,
                 known_hosts: Path, connect_timeout: float = 10.0, io_timeout: float = 60.0):
        self.name, self.host, self.port, self.user = name, host, port, user
        self.key, self.known_hosts, self.connect_timeout = key, known_hosts, connect_timeout
        self.io_timeout = io_timeout      # a board that does not answer for this long fails
                                          # the call: a frozen board must not hang a thread
        self._client = None
        self._lock = threading.RLock()

    def _connect(self):
        import paramiko
        if self._client is not None and self._client.get_transport() is not None \
                and self._client.get_transport().is_active():
            return self._client
        if not self.known_hosts or not os.path.exists(self.known_hosts):
            raise HostError(f"{self.name}: known_hosts file {self.known_hosts} does not exist; "
                            "add the board's host key there first")
        c = paramiko.SSHClient()
        c.load_host_keys(str(self.known_hosts))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            c.connect(self.host, port=self.port, username=self.user, key_filename=str(self.key),
                      timeout=self.connect_timeout, allow_agent=False, look_for_keys=False)
        except paramiko.BadHostKeyException as e:
            raise HostError(f"{self.name}: host key of {self.host}:{self.port} does not match "
                            f"{self.known_hosts}: {e}") from None
        except paramiko.SSHException as e:
            raise HostError(f"{self.name}: SSH to {self.user}@{self.host}:{self.port} refused: "
                            f"{e}") from None
        except OSError as e:
            raise HostError(f"{self.name}: cannot reach {self.host}:{self.port}: {e}") from None
        self._client = c
        return c

    def sh(self, script: str, timeout: float = 300.0) -> tuple[int, str, str]:
        import paramiko
        with self._lock:
            c = self._connect()
            try:
                with self._watchdog():
                    _, out, err = c.exec_command(script, timeout=timeout)
                o, e = out.read().decode(errors="replace"), err.read().decode(errors="replace")
                return out.channel.recv_exit_status(), o, e
            except (paramiko.SSHException, OSError, TimeoutError) as e:
                self.close()
                raise HostError(f"{self.name}: command failed over SSH: {e}") from None

    def open_channel(self):
        """A new session channel on the connection, for commands that stream (board exec)."""
        import paramiko
        with self._lock:
            try:
                c = self._connect()
                with self._watchdog():
                    return c.get_transport().open_session()
            except (paramiko.SSHException, EOFError) as e:
                self.close()
                raise HostError(f"{self.name}: cannot open an SSH channel: {e}") from None

    def _sftp(self, fn):
        import paramiko
        with self._lock:
            c = self._connect()
            try:
                with self._watchdog():
                    s = c.open_sftp()
                with s:
                    s.get_channel().settimeout(self.io_timeout)
                    return fn(s)
            except (paramiko.SSHException, EOFError, TimeoutError) as e:
                self.close()
                raise HostError(f"{self.name}: SFTP failed: {e}") from None
            except OSError as e:
                raise HostError(f"{self.name}: SFTP failed: {e}") from None

    @contextlib.contextmanager
    def _watchdog(self):
        """Opening a channel waits for the board without a limit in paramiko (a channel's
        data has its own timeout): past `io_timeout` the connection is closed, which ends
        the wait with an error."""
        client = self._client
        t = threading.Timer(self.io_timeout, client.close if client else lambda: None)
        t.daemon = True
        t.start()
        try:
            yield
        finally:
            t.cancel()

    def put_dir(self, local: Path, remote: str) -> None:
        def go(s):
            _sftp_mkdirs(s, remote)
            for entry in sorted(Path(local).iterdir()):
                if entry.is_dir():
                    self.put_dir(entry, f"{remote}/{entry.name}")
                else:
                    s.put(str(entry), f"{remote}/{entry.name}")
        self._sftp(go)

    def get_dir(self, remote: str, local: Path) -> None:
        def go(s):
            Path(local).mkdir(parents=True, exist_ok=True)
            for a in s.listdir_attr(remote):
                if stat.S_ISDIR(a.st_mode):
                    self.get_dir(f"{remote}/{a.filename}", Path(local) / a.filename)
                else:
                    s.get(f"{remote}/{a.filename}", str(Path(local) / a.filename))
        self._sftp(go)

    def put_file(self, local: Path, remote: str) -> None:
        def go(s):
            _sftp_mkdirs(s, os.path.dirname(remote))
            s.put(str(local), remote + ".part")
            s.posix_rename(remote + ".part", remote)
        self._sftp(go)

    def get_file(self, remote: str, local: Path) -> None:
        self._sftp(lambda s: s.get(remote, str(local)))

    def exists(self, path: str) -> bool:
        return self._sftp(lambda s: SftpFiles(s).exists(path))

    def files(self, fn):
        return self._sftp(lambda s: fn(SftpFiles(s)))

    def rmtree(self, path: str) -> None:
        def rm(s, p):
            try:
                attrs = s.listdir_attr(p)
            except FileNotFoundError:
                return
            except OSError:                       # not a directory
                s.remove(p)
                return
            for a in attrs:
                child = f"{p}/{a.filename}"
                if stat.S_ISDIR(a.st_mode):
                    rm(s, child)
                else:
                    s.remove(child)
            s.rmdir(p)
        self._sftp(lambda s: rm(s, path))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _die_with_parent() -> None:
    """A command the daemon waits for (a checkpoint request) must not outlive it: a restarted
    daemon would otherwise race it. Jobs are not affected: they start in their own session
    from a shell that has already exited."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _sftp_mkdirs(s, path: str) -> None:
    parts, cur = [p for p in path.split("/") if p], ""
    for p in parts:
        cur += "/" + p
        try:
            s.stat(cur)
        except FileNotFoundError:
            s.mkdir(cur)


def quote(*words) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)
