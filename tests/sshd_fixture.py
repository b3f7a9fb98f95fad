"""A real OpenSSH server on 127.0.0.1 with a generated host key and user key (needs root)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    user_key: Path
    known_hosts: Path
    proc: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def usable() -> str | None:
    """Why a test sshd cannot run here, or None."""
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        return "openssh-server is not installed (make deps installs it)"
    if os.geteuid() != 0:
        return "a test sshd that logs in as this user needs root"
    return None


def start(d: Path) -> Sshd:
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / name],
                       check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nMaxStartups 50\n"
        "MaxSessions 50\nSubsystem sftp internal-sftp\n"
        # the emulated board runs the code under test, as the server does
        + "".join(f"SetEnv {k}={os.environ[k]}\n" for k in ("PYTHONPATH", "HEXO_HOME")
                  if k in os.environ))
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    return Sshd(port, d / "user_key", d / "known_hosts", _serve(d, port))


def restart(s: Sshd) -> None:
    """Serve again on the same port with the same keys after stop(): a board that comes
    back."""
    s.proc = _serve(s.user_key.parent, s.port)


def _serve(d: Path, port: int) -> subprocess.Popen:
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", d / "sshd_config"],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "a"))
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd failed: {(d / 'sshd.log').read_text()}")
            time.sleep(0.05)
    return proc


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def stop(s: Sshd) -> None:
    """Stop the listener and the per-connection sshd processes it forked: every connection
    to it drops, as when a board goes away."""
    sessions = _children(s.proc.pid)
    s.proc.terminate()
    s.proc.wait(10)
    for pid in sessions:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def freeze(s: Sshd, thaw: bool = False) -> None:
    """Stop (or continue) the listener and its sessions: a board that hangs, its TCP
    connections open but nothing answering."""
    for pid in [s.proc.pid, *_children(s.proc.pid)]:
        try:
            os.kill(pid, signal.SIGCONT if thaw else signal.SIGSTOP)
        except ProcessLookupError:
            pass


def cluster_config(directory: Path, s: Sshd, hexo: str, uhyve_ctl: str,
                   known_hosts: Path | None = None, **daemon) -> Path:
    """A hexo-schedd config: a one-core KVM server here and a one-core board reached over
    the sshd `s` (the emulated arm64 stand-in for a board); `daemon` adds [daemon] keys."""
    board = board_section("board0", s.port, s.user_key, known_hosts or s.known_hosts,
                          directory / "board", uhyve_ctl)
    return server_config(directory, hexo, uhyve_ctl, board, **daemon)


def board_section(name: str, port: int, key: Path, known_hosts: Path, board_dir, uhyve_ctl: str,
                  **extra) -> str:
    """One [[board]] of a hexo-schedd config: one core, reached over SSH on 127.0.0.1."""
    more = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    return f"""
[[board]]
name = "{name}"
cores = 1
ram = "1G"
link_mbit = 100
host = "127.0.0.1"
port = {port}
user = "root"
key = "{key}"
known_hosts = "{known_hosts}"
work_dir = "{board_dir}/work"
run_dir = "{board_dir}/run"
uhyve_ctl = "{uhyve_ctl}"
{more}"""


def server_config(directory: Path, hexo: str, uhyve_ctl: str, boards: str, **daemon) -> Path:
    """directory/cluster.toml: a one-core KVM server here and the given [[board]] sections."""
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in daemon.items())
    cfg = directory / "cluster.toml"
    cfg.write_text(f"""[daemon]
state_dir = "state"
metrics_port = 0
hexo = "{hexo}"
{extra}
[server]
name = "server"
cores = 1
ram = "2G"
work_dir = "server/work"
run_dir = "server/run"
uhyve_ctl = "{uhyve_ctl}"
{boards}""")
    return cfg
