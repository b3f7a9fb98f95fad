"""`hexo board migrate` against boards that freeze, and its two-phase handover: every board
command has a deadline; a restore given up on before the go ends its own copy when the target
runs again, and the source continues; a go left unanswered keeps the source parked until the
next connection to the target settles the move; a parked source whose board does not answer
is ended at that board's next connection; concurrent moves share each board's pending list.
The boards are real sshds on loopback; their `hexo` is a stand-in (a stopped `sleep` is the
held copy) whose steps the test freezes (SIGSTOP) and thaws."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
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


def loopback_board(s, directory: Path, name: str = "lb") -> SimpleNamespace:
    """What a board connection needs of a board, for the sshd `s` (its console log a file no
    kernel writes)."""
    directory.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(name=name, port=s.port,
                           image=SimpleNamespace(client_key=s.user_key),
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
    """The move's source here: a parked process that only records what is done to it."""

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

    def confirm_parked(self, job):
        self.done.append("confirmed")

    def defer(self, move_id, do, job):
        return False

    def resume(self, job):
        self.done.append("resume")

    def end(self, job):
        self.done.append("end")


# The board's `hexo`: `container restore CK --held RECORD ...` logs its pid, takes a second,
# brings up a stand-in copy held (a stopped sleep), records and reports it, then reads one
# line: `go` records running, continues the copy (`after_go` first: a freeze between the two)
# and reports it; anything else or the end of input ends the copy. Checkpoint, parked and
# resume are logged and succeed. Like the real one it outlives the loss of its output.
FAKE_HEXO = """#!/bin/sh
trap '' PIPE
log={log}
case "$2" in
restore) ;;
checkpoint) mkdir -p "$(eval echo \\${{$#}})"; echo "checkpoint $3" >> $log; exit 0 ;;
*) echo "$2 $3" >> $log; exit 0 ;;
esac
record=$5
echo "restore $$" >> $log
sleep 1
sleep 600 &
copy=$!
kill -STOP $copy
echo "copy $copy" >> $log
echo "held process $copy" > $record
echo "restored process $copy"
echo "held process $copy"
if read -r line && [ "$line" = go ]; then
    echo "running process $copy" > $record
    {after_go}
    kill -CONT $copy
    echo "continued $copy" >> $log
    echo "running process $copy"
    exit 0
fi
kill -KILL $copy
echo "discarded process $copy" > $record
echo "discarded $copy" >> $log
echo "discarded process $copy"
exit 1
"""


def fake_boards(tmp_path, monkeypatch, source, sshds: dict, after_go: str = "") -> Path:
    """Loopback boards named by `sshds` (name: sshd) with the stand-in `hexo`; moves go with
    4 s steps, from `source` for this server. The stand-in's log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "hexo.log"
    bin_dir.mkdir()
    fake = bin_dir / "hexo"
    fake.write_text(FAKE_HEXO.format(log=log, after_go=after_go))
    fake.chmod(0o755)
    monkeypatch.setattr(ssh, "ENV", f"PATH={bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(ssh.BoardConnection, "sync_code", lambda self: None)
    monkeypatch.setenv("HEXO_BOARD_STATE", str(tmp_path / "boards"))
    boards = {name: loopback_board(s, tmp_path / "boards" / name, name)
              for name, s in sshds.items()}
    monkeypatch.setattr(migrate, "machine", lambda name, step_timeout=4: (
        source if name is None else migrate.OnBoard(name, step_timeout, board=boards[name])))
    return log


def logged(log: Path, word: str) -> int:
    """The pid the stand-in logged after `word`, once it has."""
    return int(wait_for_file(log, f"{word} ").split(f"{word} ")[1].split()[0])


def later(name: str = "lb") -> migrate.OnBoard:
    """The next connection to board `name` (it carries out what is pending there)."""
    return migrate.machine(name)


def test_a_source_that_cannot_be_ended_is_reported_with_where_the_job_runs(tmp_path, sshd,
                                                                           monkeypatch):
    source = Source(tmp_path)

    def frozen(job):
        raise HostError("src: no end of the command within 4 s")
    source.end = frozen
    log = fake_boards(tmp_path, monkeypatch, source, {"lb": sshd})
    try:
        with pytest.raises(migrate.MigrationError, match=r"process 4242 runs on lb as \d+, but "
                                                         "its copy here could not be ended"):
            migrate.move("4242", None, "lb", step_timeout=4)
        assert source.done == ["confirmed"]                # not resumed: the job runs there
        assert "continued" in log.read_text()
    finally:
        os.kill(logged(log, "copy"), signal.SIGKILL)
    assert migrate.Pending(tmp_path / "boards" / "lb").entries() == []


def test_a_restore_given_up_on_before_the_go_ends_its_own_copy(tmp_path, sshd, monkeypatch):
    source = Source(tmp_path)
    log = fake_boards(tmp_path, monkeypatch, source, {"lb": sshd})

    def freeze_restore():
        pid = logged(log, "restore")
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
    pending = migrate.Pending(tmp_path / "boards" / "lb")
    assert [e["do"] for e in pending.entries()] == ["stop"]
    with later():                                      # the restore is still frozen there
        pass
    assert len(pending.entries()) == 1
    os.kill(frozen[0], signal.SIGCONT)                   # the target runs again: no go for it
    copy = logged(log, "discarded")
    assert not alive(copy) and "continued" not in log.read_text()
    with later():
        pass
    assert pending.entries() == []
    assert not pending.file.exists()                     # `hexo board down` removes the dir


def test_an_unanswered_go_keeps_the_source_parked_until_the_move_is_settled(
        tmp_path, sshd, monkeypatch):
    """The target records `running` and freezes before it answers: the server cannot know
    whether the job runs there, so the source neither resumes nor ends. The next connection
    to the target reads the record and ends the source; the copy runs on."""
    source = Source(tmp_path)
    log = fake_boards(tmp_path, monkeypatch, source, {"lb": sshd}, after_go="sleep 8")
    try:
        with pytest.raises(migrate.MigrationError, match="process 4242 may run on lb or not.*"
                                                         "stays parked here until the next "
                                                         "connection to lb settles it"):
            migrate.move("4242", None, "lb", step_timeout=4)
        assert source.done == ["confirmed"]              # parked: neither resumed nor ended
        pending = migrate.Pending(tmp_path / "boards" / "lb")
        assert [e["do"] for e in pending.entries()] == ["settle"]
        copy = logged(log, "continued")
        with later():
            pass
        assert source.done == ["confirmed", "end"]
        assert alive(copy) and pending.entries() == []
    finally:
        os.kill(logged(log, "copy"), signal.SIGKILL)


def test_a_move_in_doubt_whose_copy_never_ran_lets_the_source_continue(tmp_path, sshd,
                                                                       monkeypatch):
    """The record of a move in doubt says held and its restore is gone (the board rebooted,
    say): the copy is ended and the source continues."""
    source = Source(tmp_path)
    fake_boards(tmp_path, monkeypatch, source, {"lb": sshd})
    copy = subprocess.Popen(["sleep", "600"])
    record = Path(migrate.REMOTE_DIR) / "restored-0123456789abcdef"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"held process {copy.pid}\n")
    pending = migrate.Pending(tmp_path / "boards" / "lb")
    pending.add({"move": "0123456789abcdef", "do": "settle", "job": "4242", "source": None})
    try:
        with later():
            pass
        assert copy.wait(30) == -signal.SIGKILL
        assert source.done == ["resume"] and pending.entries() == []
        assert not record.exists()
    finally:
        copy.kill()


def test_a_source_board_that_freezes_after_the_handover_is_ended_at_its_next_connection(
        tmp_path, sshd, monkeypatch):
    """Board to board: the target runs the job, then the source board does not answer the
    end. The move succeeds; the parked source (a stand-in process) ends at the source
    board's next connection."""
    other = sshd_fixture.start(tmp_path / "ssh-src")
    parked = subprocess.Popen(["sleep", "600"])
    log = fake_boards(tmp_path, monkeypatch, None, {"lb": sshd, "src": other})
    forget = migrate.OnBoard.forget

    def then_the_source_freezes(self, move_id):
        forget(self, move_id)
        sshd_fixture.freeze(other)
    monkeypatch.setattr(migrate.OnBoard, "forget", then_the_source_freezes)
    try:
        new = migrate.move(str(parked.pid), "src", "lb", step_timeout=4)
        assert new == str(logged(log, "continued"))
        assert parked.poll() is None                       # parked, not yet ended
        pending = migrate.Pending(tmp_path / "boards" / "src")
        assert [(e["do"], e["job"]) for e in pending.entries()] == [("end", str(parked.pid))]
        sshd_fixture.freeze(other, thaw=True)
        monkeypatch.setattr(migrate.OnBoard, "forget", forget)
        with later("src"):
            pass
        assert parked.wait(30) == -signal.SIGKILL
        assert pending.entries() == []
        assert f"parked {parked.pid}" in log.read_text()     # confirmed before the go
    finally:
        parked.kill()
        os.kill(logged(log, "copy"), signal.SIGKILL)
        sshd_fixture.stop(other)


def _add_entries(directory: Path, writer: int, n: int) -> None:
    pending = migrate.Pending(directory)
    for i in range(n):
        pending.add({"move": f"{writer}-{i}", "do": "stop"})
        if i % 3 == 0:
            pending.remove([{"move": f"{writer}-{i}", "do": "stop"}])


def test_concurrent_moves_lose_no_pending_entry(tmp_path):
    """Two writers add (and remove some of) their entries to one board's list at once."""
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_add_entries, args=(tmp_path, w, 150)) for w in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    moves = sorted(e["move"] for e in migrate.Pending(tmp_path).entries())
    assert moves == sorted(f"{w}-{i}" for w in (1, 2) for i in range(150) if i % 3)
