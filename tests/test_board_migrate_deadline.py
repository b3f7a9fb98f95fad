"""`hexo board migrate` against a board that freezes: every board command has a deadline, the
source resumes when the target's restore is given up on, and the copy that restore brings up
once the target runs again is stopped at the next connection to it. The board is a real sshd on
loopback; its `hexo` is a stand-in whose restore the test freezes (SIGSTOP) and thaws."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import sshd_fixture
from hexo_sched.boards import migrate, ssh
from hexo_sched.hosts import HostError

pytestmark = [pytest.mark.timeout(300),              # a hang is what these tests are about
              pytest.mark.skipif(sshd_fixture.usable() is not None,
                                 reason=str(sshd_fixture.usable()))]


def loopback_board(s, directory: Path) -> SimpleNamespace:
    """What a board connection needs of a board, for the sshd `s` (its console log a file no
    kernel writes)."""
    directory.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(name="lb", port=s.port, image=SimpleNamespace(client_key=s.user_key),
                           known_hosts=s.known_hosts, dir=directory,
                           console=directory / "console.log")


def wait_for_file(path: Path, text: str = "", timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never held {text!r}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_command_on_a_frozen_board_fails_at_its_deadline(tmp_path, sshd):
    conn = ssh.BoardConnection(loopback_board(sshd, tmp_path / "lb"), step_timeout=3)
    assert conn.sh("echo up")[1] == "up\n"
    sshd_fixture.freeze(sshd)
    try:
        t0 = time.monotonic()
        with pytest.raises(HostError):
            conn.sh("echo never")                          # on the open connection
        assert time.monotonic() - t0 < 30
    finally:
        sshd_fixture.freeze(sshd, thaw=True)
    assert conn.sh("echo back")[1] == "back\n"            # a new connection once it answers
    with pytest.raises(HostError, match="no end of the command within 3 s"):
        conn.stream("sleep 30")
    conn.host.close()


class Source:
    """The move's source: a parked process that only records what is done to it."""

    at, isa = "here", "x86_64"

    def __init__(self, tmp: Path):
        self.tmp, self.done = tmp, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def checkpoint(self, job, to_isa, timeout, tmp):
        out = tmp / job.file_name
        out.mkdir()
        (out / "state.json").write_text("{}")
        return out

    def fetch(self, checkpoint, tmp):
        return checkpoint

    def resume(self, job):
        self.done.append("resume")

    def end(self, job):
        self.done.append("end")


def fake_restoring_board(tmp_path, sshd, monkeypatch, source) -> tuple[SimpleNamespace, Path]:
    """The loopback board, whose `hexo container restore` logs its pid, waits a second and
    brings up a stand-in copy (a sleep) it reports as restored; moves go from `source` to
    it with 4 s steps. The board and the log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "restore.log"
    bin_dir.mkdir()
    fake = bin_dir / "hexo"
    fake.write_text(f"""#!/bin/sh
echo "restore $$" >> {log}
sleep 1
sleep 600 &
echo "copy $!" >> {log}
echo "restored process $!"
""")
    fake.chmod(0o755)
    monkeypatch.setattr(ssh, "ENV", f"PATH={bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(ssh.BoardConnection, "sync_code", lambda self: None)
    board = loopback_board(sshd, tmp_path / "lb")
    target = migrate.OnBoard("lb", step_timeout=4, board=board)
    monkeypatch.setattr(migrate, "machine",
                        lambda name, step_timeout: source if name is None else target)
    return board, log


def test_a_source_that_cannot_be_ended_is_reported_with_where_the_job_runs(tmp_path, sshd,
                                                                           monkeypatch):
    source = Source(tmp_path)

    def frozen(job):
        raise HostError("src: no end of the command within 4 s")
    source.end = frozen
    _, log = fake_restoring_board(tmp_path, sshd, monkeypatch, source)
    try:
        with pytest.raises(migrate.MigrationError, match=r"process 4242 runs on lb as \d+, but "
                                                         "its copy here could not be ended"):
            migrate.move("4242", None, "lb", step_timeout=4)
        assert source.done == []                           # not resumed: the job runs there
    finally:
        os.kill(int(wait_for_file(log, "copy ").split("copy ")[1].split()[0]), signal.SIGKILL)


def test_a_frozen_restore_is_given_up_the_source_resumes_and_the_copy_is_stopped_later(
        tmp_path, sshd, monkeypatch):
    source = Source(tmp_path)
    board, log = fake_restoring_board(tmp_path, sshd, monkeypatch, source)
    later = migrate.OnBoard("lb", board=board)       # the next connections to the board

    def freeze_restore():
        pid = int(wait_for_file(log, "restore ").split()[1])
        os.kill(pid, signal.SIGSTOP)                     # the target stops mid-restore
        return pid

    frozen = []
    t = threading.Thread(target=lambda: frozen.append(freeze_restore()))
    t.start()
    t0 = time.monotonic()
    with pytest.raises(migrate.MigrationError, match="no end of the command within 4 s.*"
                                                     "continues here"):
        migrate.move("4242", None, "lb", step_timeout=4)
    t.join()
    assert time.monotonic() - t0 < 60
    assert source.done == ["resume"]                     # the source goes on, never ended
    assert len(later._abandoned()) == 1
    with later:                                        # the restore is still frozen there
        pass
    assert len(later._abandoned()) == 1
    os.kill(frozen[0], signal.SIGCONT)                   # the target runs again: its copy too
    copy = int(wait_for_file(log, "copy ").split("copy ")[1].split()[0])
    assert alive(copy)
    with later:                                        # the next connection stops it
        pass
    for _ in range(100):
        if not alive(copy):
            break
        time.sleep(0.05)
    assert not alive(copy)
    assert later._abandoned() == []
    assert not later._abandoned_file.exists()            # `hexo board down` removes the dir
