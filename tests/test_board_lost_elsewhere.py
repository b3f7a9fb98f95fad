"""A job lost with its board resumes on another board when the server has no room: two emulated
arm64 boards, each behind its own sshd on loopback, and a one-core KVM server kept busy by a
job that stays there (a plain image: never offloaded). The cost-aware policy starts EP directly
on board0 (its image's estimate); board0 dies after a live checkpoint of EP was saved there;
EP resumes on board1 from that checkpoint (taken on arm64, restored on arm64 from the state kept
beside the server's), verifies, and its client prints the output once."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

import sshd_fixture
from conftest import HEXO, needs_kvm
from npb_reference import check
from test_board_silent_midway import board_processes, kill, kill_board
from test_schedd_live import UHYVE, log_tail, start_daemon, wait_for

pytestmark = [needs_kvm, pytest.mark.slow,
              pytest.mark.skipif(sshd_fixture.usable() is not None,
                                 reason=str(sshd_fixture.usable()))]


def test_a_job_lost_with_its_board_resumes_on_the_other_board(images, tmp_path, sshd):
    other_sshd = sshd_fixture.start(tmp_path / "ssh1")
    boards = {"board0": (sshd, tmp_path / "board0"), "board1": (other_sshd, tmp_path / "board1")}
    sections = "".join(sshd_fixture.board_section(name, s.port, s.user_key, s.known_hosts, d,
                                                  UHYVE) for name, (s, d) in boards.items())
    cfg = sshd_fixture.server_config(tmp_path, HEXO, UHYVE, sections, policy="cost-aware",
                                     idle_after_s=3600, poll_s=0.2, checkpoint_period_s=1,
                                     board_lost_after_s=3)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    ep_image, busy_image = images.get("npb-ep", "S"), images.program("chatty")
    busy = subprocess.Popen([HEXO, "run", "--state-dir", state_dir, busy_image, "--", "spin",
                             "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        wait_for(lambda s: len(s["jobs"]) == 1 and s["jobs"][0]["location"] == "server",
                 state_dir, 300, "the server's job to run")
        client = subprocess.Popen([HEXO, "run", "--state-dir", state_dir, ep_image],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        st = wait_for(lambda s: len(s["jobs"]) == 2
                      and (s["jobs"][1]["saved"] or {}).get("kind") == "periodic",
                      state_dir, 600, "a live checkpoint of EP taken on its board")
        assert st["jobs"][1]["location"] == "board0", st
        kill_board(sshd, boards["board0"][1])
        out, err = client.communicate(timeout=900)
        st = wait_for(lambda s: s["jobs"][1]["state"] == "done", state_dir, 60, "EP to end")
        assert busy.poll() is None                        # the server's job is still there
    finally:
        busy.send_signal(signal.SIGTERM)                   # hexo run cancels its job
        busy.wait(60)
        if client is not None and client.poll() is None:
            client.kill()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        left = [p for _, d in boards.values() for p in board_processes(d)]
        kill(left)
        sshd_fixture.stop(other_sshd)
    assert daemon.returncode == 0
    assert left == [], log_tail(log)
    assert client.returncode == 0, err
    text = out.decode()
    check("ep", "S", text)                                 # the NPB verification values
    for line in ("NAS Parallel Benchmarks", "Benchmark Completed"):
        assert text.count(line) == 1, text                 # shown once
    server_job, ep = st["jobs"]
    [loss] = ep["losses"]
    assert (loss["machine"], loss["resumed_from"]) == ("board0", "periodic"), ep
    kept = [(s["machine"], s["kind"]) for s in ep["segments"] if not s["discarded"]]
    assert kept == [("board0", "run"), ("board1", "restore")], ep
    assert Path(ep["output"]).read_text() == text
    assert [s["machine"] for s in server_job["segments"]] == ["server"], server_job
    assert "it resumes on board board1" in log.read_text()
