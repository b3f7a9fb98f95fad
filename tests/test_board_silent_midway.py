"""A board that dies while a migration involving it is under way (the emulated board over the
loopback sshd). The board's uhyve-ctl is a wrapper that parks the migration's step there (its
restore, or its checkpoint) and says so in a file: the test kills the board exactly in that
phase, whatever the machine's load. The daemon gives up after `board_lost_after_s` of silence and
the job ends with verified output, printed once, nothing of it left running."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

import sshd_fixture
from conftest import HEXO, needs_kvm, run
from npb_reference import check
from test_schedd_live import UHYVE, start_daemon, wait_all_done, wait_for, wait_for_log

pytestmark = [needs_kvm, pytest.mark.slow,
              pytest.mark.skipif(sshd_fixture.usable() is not None,
                                 reason=str(sshd_fixture.usable()))]

SILENT_S = 3


def parking_uhyve_ctl(board: Path, verb: str) -> tuple[Path, Path]:
    """The board's uhyve-ctl: `verb` (a migration's restore or checkpoint, not a live one)
    writes the returned marker and waits until board/go exists; everything else is the real
    command at once."""
    board.mkdir(parents=True, exist_ok=True)
    wrapper, marker = board / "uhyve-ctl", board / f"parked-{verb}"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" = {verb} ] && ! echo "$*" | grep -q -- --keep-running; then
    touch {marker}
    while [ ! -e {board / "go"} ]; do sleep 0.2; done
fi
exec {UHYVE} "$@"
""")
    wrapper.chmod(0o755)
    return wrapper, marker


def board_processes(board: Path) -> list[int]:
    """Every process of the emulated board: its command line names the board's directory."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if entry.isdigit() and f"{board}/".encode() in cmdline:
            pids.append(int(entry))
    return pids


def kill_board(sshd, board: Path) -> None:
    """The board dies: its SSH server, every connection to it and everything it ran."""
    sshd_fixture.stop(sshd)
    kill(board_processes(board))


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def live_vm(run_dir: Path, job: str, timeout: float) -> int:
    """The pid of the job's VM once it runs there."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            vm = json.loads((run_dir / f"{job}.json").read_text())
            if vm["state"] == "running" and Path(f"/proc/{vm['pid']}").exists():
                return int(vm["pid"])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{job} never ran in {run_dir}")


def cut_off_then_back(sshd, board: Path, state_dir: Path, log: Path) -> None:
    """The board drops off the network while its restore is parked, its processes go on. Once
    the daemon has given up on it, the restore proceeds there (frozen, so that it cannot end
    on its own), and the board comes back: the daemon must stop that copy."""
    sshd_fixture.stop(sshd)
    wait_for(lambda s: s["jobs"][0]["migrations"][0]["outcome"] != "under way", state_dir, 120,
             "the offload to give up")
    (board / "go").touch()
    pid = live_vm(board / "run", "job-1", 120)
    os.kill(pid, signal.SIGSTOP)
    sshd_fixture.restart(sshd)
    wait_for_log(log, "stopped job-1 on board0: it resumed elsewhere", 120)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()


def run_until_killed(images, tmp_path, sshd, verb: str, cut_off=False,
                     **daemon) -> tuple[dict, str]:
    """EP.S then IS.S on a one-core server and one board whose `verb` parks; the board is
    killed once it has parked (or, `cut_off`, dropped off the network and brought back).
    Checks what every such run must end with; returns EP's job and `hexo status`'s text."""
    board = tmp_path / "board"
    wrapper, marker = parking_uhyve_ctl(board, verb)
    cfg = sshd_fixture.server_config(
        tmp_path, HEXO, UHYVE,
        sshd_fixture.board_section("board0", sshd.port, sshd.user_key, sshd.known_hosts, board,
                                   str(wrapper)),
        policy="hexo", idle_after_s=1, poll_s=0.2, board_lost_after_s=SILENT_S, **daemon)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    proc = start_daemon(cfg, log)
    try:
        p = run([HEXO, "submit", images.get("npb-ep", "S"), images.get("npb-is", "S"),
                 "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        wait_for_file(marker, 300)
        if cut_off:
            cut_off_then_back(sshd, board, state_dir, log)
        else:
            kill_board(sshd, board)
        st = wait_all_done(state_dir, 300, "both jobs to end")
        text = run([HEXO, "status", "--state-dir", state_dir]).stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        left = board_processes(board)
        kill(left)
    assert proc.returncode == 0            # no worker held the daemon up
    assert left == []
    for vm in (tmp_path / "server" / "run").glob("*.json"):     # no VM left on the server
        assert not Path(f"/proc/{json.loads(vm.read_text())['pid']}").exists(), vm
    assert list((state_dir / "transfer").glob("*")) == []
    log_text = log.read_text()
    assert "Traceback" not in log_text and "could not recover" not in log_text
    for j in st["jobs"]:
        kernel = "ep" if "npb-ep" in j["image"] else "is"
        out = Path(j["output"]).read_text()
        check(kernel, "S", out)                                   # Verification = SUCCESSFUL
        assert j["outcome"] == "exit 0"
        for line in ("NAS Parallel Benchmarks", "Benchmark Completed"):
            assert out.count(line) == 1, out                      # printed once
    return next(j for j in st["jobs"] if "npb-ep" in j["image"]), text


@pytest.mark.parametrize("cut_off", [False, True])
def test_target_board_dies_before_it_confirms(images, tmp_path, sshd, cut_off):
    """Offload server -> board: the board dies (or drops off the network and comes back later)
    with the restore launched and unconfirmed. The job goes on from the source checkpoint the
    server kept; the copy started on the board meanwhile is stopped when it answers again."""
    ep, text = run_until_killed(images, tmp_path, sshd, "restore", cut_off)
    outcome = ep["migrations"][0]["outcome"]
    assert re.fullmatch(r"failed: board board0 silent for \d+ s", outcome), ep
    assert int(outcome.split()[-2]) >= SILENT_S
    # (a board that came back may take the job again: only the first three are certain)
    assert [(s["machine"], s["kind"], s["discarded"]) for s in ep["segments"]][:3] == [
        ("server", "run", False), ("board0", "restore", True), ("server", "restore", False)]
    assert ep["losses"] == []                                     # nothing was lost
    # the board failed, not the job: it may still go to a board
    assert "no longer a candidate" not in (tmp_path / "schedd.log").read_text()
    assert f"migration server -> board0 {outcome}" in text
    if not cut_off:
        assert re.search(r"board +board0 .*; silent for \d+ s", text), text


@pytest.mark.parametrize("period, resumed_from", [(3600, "migration"), (0, "start")])
def test_source_board_dies_while_checkpointing(images, tmp_path, sshd, period, resumed_from):
    """Brought back board -> server: the board dies while its checkpoint is being taken. The
    job resumes on the server from the checkpoint the daemon saved of it (here its offload's
    own), its output cut there and produced once; with saved checkpoints off, from the start."""
    ep, text = run_until_killed(images, tmp_path, sshd, "checkpoint", checkpoint_period_s=period)
    outcomes = [h["outcome"] for h in ep["migrations"]]
    assert outcomes[0] == "done" and len(outcomes) == 2, ep
    assert re.fullmatch(r"failed: board board0 silent for \d+ s", outcomes[1]), ep
    assert f"migration board0 -> server {outcomes[1]}" in text
    assert re.search(r"lost [0-9.]+ s of work on board0 \(went silent while job-1 migrated to "
                     rf"server\); resumed from {resumed_from}", text), text
    assert [(x["machine"], x["resumed_from"]) for x in ep["losses"]] == [
        ("board0", resumed_from)], ep
    assert ep["losses"][0]["silent_s"] >= SILENT_S
    kept = [(s["machine"], s["kind"]) for s in ep["segments"] if not s["discarded"]]
    assert kept == ([("server", "run"), ("board0", "restore"), ("server", "restore")] if period
                    else [("server", "run")]), ep


def test_a_frozen_board_fails_calls_instead_of_hanging(tmp_path, sshd):
    """A board that hangs keeps its TCP connections open and answers nothing: every call to it
    ends with an error after the host's I/O timeout (paramiko alone would wait on a channel
    for ever), so no daemon thread hangs on it."""
    from hexo_sched.hosts import HostError, SshHost
    host = SshHost("b", "127.0.0.1", sshd.port, "root", sshd.user_key, sshd.known_hosts,
                   io_timeout=2)
    assert host.files(lambda fs: fs.exists(str(tmp_path)))
    sshd_fixture.freeze(sshd)
    try:
        with pytest.raises(HostError):
            host.files(lambda fs: fs.exists(str(tmp_path)))       # on the open connection
        with pytest.raises(HostError):
            host.sh("true", timeout=600)                           # on a new one
    finally:
        sshd_fixture.freeze(sshd, thaw=True)
    assert host.sh("echo back")[1] == "back\n"                    # and again once it answers
    host.close()
