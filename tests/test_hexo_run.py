"""`hexo run` against a real hexo-schedd: the output of a job that is offloaded to a board (a
real sshd on loopback, the emulated arm64 stand-in) and brought back, exit statuses, crashes,
and cancellation by signal or because the client was killed."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import sshd_fixture
from conftest import HEXO, run
from npb_reference import check
from test_schedd_live import (UHYVE, pytestmark, start_daemon,  # noqa: F401 (its marks)
                              status, wait_all_done, wait_for)


def hexo_run(state_dir: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([HEXO, "run", "-v", "--state-dir", state_dir, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def with_board(tmp_path: Path, sshd) -> tuple[subprocess.Popen, Path]:
    """A daemon for a one-core server and the board; returns it and its state directory."""
    cfg = sshd_fixture.cluster_config(tmp_path, sshd, HEXO, UHYVE, policy="hexo",
                                      idle_after_s=1, poll_s=0.2, confirm_timeout_s=120)
    return start_daemon(cfg, tmp_path / "schedd.log"), tmp_path / "state"


def one_then_another(state_dir: Path, first: list, second: list) -> tuple:
    """Two `hexo run` clients, the second once the daemon has the first job."""
    one = hexo_run(state_dir, *first)
    wait_for(lambda s: len(s["jobs"]) == 1, state_dir, 60, "the first job")
    return one, hexo_run(state_dir, *second)


def stop(daemon: subprocess.Popen, state_dir: Path, clients=()) -> None:
    """Kill the clients still running, so that the daemon cancels their jobs (a failed test
    leaves no VM running), then stop the daemon."""
    alive = [c for c in clients if c.poll() is None]
    for c in alive:
        c.kill()
        c.wait()
    if alive:
        wait_all_done(state_dir, 60, "the jobs of killed clients to be cancelled")
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(30)


def vm_processes(root: Path, job: str) -> list[str]:
    """Command lines of live processes started for `job` of the cluster under `root`
    (uhyve-ctl and its shell)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"--name {job} " in cmd and str(root) in cmd and state != "Z":
            found.append(cmd)
    return found


def assert_nothing_left(root: Path, job: str) -> None:
    """No VM, no segment or checkpoint, no VM state file or socket on any machine under
    `root` (server/, board*/), no copy in the daemon's state directory."""
    assert vm_processes(root, job) == []
    for machine in [root / "server", *root.glob("board*")]:
        assert not (machine / "work" / job).exists(), machine
        assert not list((machine / "run").glob(f"{job}.*")), machine
    assert not (root / "state" / "jobs" / job).exists()
    assert not list((root / "state").glob(f"transfer/{job}-*"))


def test_output_follows_an_offloaded_job_and_the_exit_status_is_the_guests(images, tmp_path,
                                                                           sshd):
    """Two jobs for a one-core server: the first (EP class W, so that it cannot end before the
    second comes) is offloaded to the board to make room and brought back when the server
    frees up; its `hexo run` shows every byte once."""
    ep, is_ = images.get("npb-ep", "W"), images.get("npb-is", "S")
    daemon, state_dir = with_board(tmp_path, sshd)
    first = second = None
    try:
        first, second = one_then_another(state_dir, [ep], [is_])
        out1, err1 = first.communicate(timeout=600)
        out2, err2 = second.communicate(timeout=600)
        st = status(state_dir)
    finally:
        stop(daemon, state_dir, filter(None, (first, second)))
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    job1 = next(j for j in st["jobs"] if j["id"] == "job-1")
    moves = [(h["src"], h["dst"]) for h in job1["migrations"] if h["outcome"] == "done"]
    assert ("server", "board0") in moves, job1
    assert b"moves to board0" in err1, err1
    check("ep", "W", out1.decode())
    check("is", "S", out2.decode())
    assert out1.count(b"NAS Parallel Benchmarks") == 1, out1
    assert out1 == Path(job1["output"]).read_bytes()     # the daemon's joined copy
    assert b"uhyve-ctl:" not in err1 + err2


def test_exit_status_crash_and_stderr(images, tmp_path):
    exits, chatty = images.program("exit_status"), images.program("chatty")
    cfg = sshd_fixture.server_config(tmp_path, HEXO, UHYVE, "", poll_s=0.2)
    state_dir = tmp_path / "state"
    daemon = start_daemon(cfg, tmp_path / "schedd.log")
    try:
        three = run([HEXO, "run", "--state-dir", state_dir, exits, "--", "3"])
        crash = run([HEXO, "run", "--state-dir", state_dir, chatty, "--", "crash", "2"])
        bad = run([HEXO, "run", "--state-dir", state_dir, "--mem", "1M", exits])
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert three.returncode == 3, three.stderr
    assert three.stdout == "exiting with status 3\n"
    assert three.stderr == "a line on stderr\n"
    assert crash.returncode == 125
    assert crash.stdout == "".join(f"out {i}: jumps over the lazy dog\n" for i in range(2))
    lines = crash.stderr.splitlines()
    assert lines[:2] == [f"err {i}: the quick brown fox" for i in range(2)], crash.stderr
    assert lines[2].startswith("hexo run: job-2: ") and "cr2=0x0" in lines[2], crash.stderr
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "below" in bad.stderr


def test_sigterm_cancels_an_offloaded_job_and_leaves_nothing(images, tmp_path, sshd):
    """EP (class W: it runs long enough on the server not to end before the second job
    comes) is offloaded to make room for a job that spins on the server (not migratable, so
    it stays there); SIGTERM to each `hexo run` cancels its job."""
    ep, chatty = images.get("npb-ep", "W"), images.program("chatty")
    daemon, state_dir = with_board(tmp_path, sshd)
    first = second = None
    try:
        first, second = one_then_another(state_dir, [ep], [chatty, "--", "spin", "1"])
        st = wait_for(lambda s: len(s["jobs"]) == 2 and all(j["state"] == "running"
                                                            for j in s["jobs"]),
                      state_dir, 300, "EP to run on the board, chatty on the server")
        assert st["jobs"][0]["location"] == "board0", st
        assert vm_processes(tmp_path, "job-1")
        results = []
        for client in (first, second):
            client.send_signal(signal.SIGTERM)
            results.append((client.communicate(timeout=120)[1], client.returncode))
        st = status(state_dir)
    finally:
        stop(daemon, state_dir, filter(None, (first, second)))
    for (err, rc), job in zip(results, st["jobs"]):
        assert rc == 128 + signal.SIGTERM, err
        assert b"cancelled" in err
        assert job["state"] == "done" and job["outcome"] == \
            "cancelled: hexo run received SIGTERM", job
        assert_nothing_left(tmp_path, job["id"])


def test_a_killed_client_gets_its_job_cancelled(images, tmp_path):
    """A client killed with SIGKILL: at once while the daemon watches its connection; after
    `client_lease_s` when it died while the daemon was down."""
    chatty = images.program("chatty")
    cfg = sshd_fixture.server_config(tmp_path, HEXO, UHYVE, "", poll_s=0.2, client_lease_s=2)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        first = hexo_run(state_dir, chatty, "--", "spin", "1")
        wait_for(lambda s: s["jobs"] and s["jobs"][0]["state"] == "running", state_dir, 60,
                 "the job to run")
        second = hexo_run(state_dir, chatty, "--", "spin", "1")
        wait_for(lambda s: len(s["jobs"]) == 2, state_dir, 60, "the second job")
        first.kill()
        first.wait()
        wait_for(lambda s: s["jobs"][0]["state"] == "done", state_dir, 60,
                 "the first job to be cancelled")
        daemon.kill()
        daemon.wait()
        second.kill()
        second.wait()
        daemon = start_daemon(cfg, log)
        st = wait_for(lambda s: s["jobs"][1]["state"] == "done", state_dir, 60,
                      "the second job to be cancelled")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert st["jobs"][0]["outcome"] == "cancelled: its hexo run client is gone"
    assert st["jobs"][1]["outcome"].startswith("cancelled: its hexo run client has not asked")
    for job in ("job-1", "job-2"):
        assert_nothing_left(tmp_path, job)
