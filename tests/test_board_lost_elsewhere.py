"""A job lost with its board resumes on another board when the server has no room: two emulated
arm64 boards, each behind its own sshd on loopback, and a one-core KVM server kept busy by a
job that stays there (a plain image: never offloaded). HEXO's policy offloads EP to board0 to
make room for that job; after a live checkpoint of EP was saved there, board0 freezes and drops
off the network, or (as a board VM whose kernel oopsed) its console shows a kernel oops while it
still answers. EP resumes on board1 from that checkpoint (taken on arm64, restored on arm64
from the state kept beside the server's); when board0 answers again (with a new console: booted
again) its copy is stopped; EP verifies and its output holds every line once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import sshd_fixture
from conftest import HEXO, needs_kvm
from hexo_sched import api
from npb_reference import check
from test_board_console import OOPS
from test_board_silent_midway import board_processes, kill, live_vm
from test_schedd_live import UHYVE, log_tail, start_daemon, wait_for, wait_for_log

pytestmark = [needs_kvm, pytest.mark.slow,
              pytest.mark.skipif(sshd_fixture.usable() is not None,
                                 reason=str(sshd_fixture.usable()))]


@pytest.mark.parametrize("how", ["silent", "oops"])
def test_a_job_lost_with_its_board_resumes_on_the_other_board(images, tmp_path, sshd, how):
    """`silent`: lost after board_lost_after_s (3 s) of silence; `oops`: at once (that delay is
    an hour), although its sshd answers. Each board has a console log, a stand-in for a board
    VM's serial console."""
    other_sshd = sshd_fixture.start(tmp_path / "ssh1")
    boards = {"board0": (sshd, tmp_path / "board0"), "board1": (other_sshd, tmp_path / "board1")}
    consoles = {name: tmp_path / f"{name}.console" for name in boards}
    sections = "".join(sshd_fixture.board_section(name, s.port, s.user_key, s.known_hosts, d,
                                                  UHYVE, console=str(consoles[name]))
                       for name, (s, d) in boards.items())
    cfg = sshd_fixture.server_config(tmp_path, HEXO, UHYVE, sections, policy="hexo",
                                     idle_after_s=3600, poll_s=0.2, checkpoint_period_s=3,
                                     board_lost_after_s=3 if how == "silent" else 3600)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    jobs = [{"image": str(images.get("npb-ep", "S"))},
            {"image": str(images.program("chatty")), "args": ["spin", "3"]}]
    try:
        api.request(state_dir, "submit", jobs=jobs)
        st = wait_for(lambda s: (s["jobs"][0]["saved"] or {}).get("kind") == "periodic",
                      state_dir, 600, "a live checkpoint of EP taken on its board")
        assert st["jobs"][0]["location"] == "board0", st
        frozen = live_vm(boards["board0"][1] / "run", "job-1", 60)
        if how == "silent":
            os.kill(frozen, signal.SIGSTOP)
            sshd_fixture.stop(sshd)
        else:
            consoles["board0"].write_text(OOPS)
        wait_for_log(log, "it resumes on board board1", 120)
        if how == "silent":
            sshd_fixture.restart(sshd)
        else:
            consoles["board0"].unlink()                      # booted again: a new console
            consoles["board0"].write_text("[    0.000000] Booting Linux on physical CPU 0x0\n")
        wait_for_log(log, "stopped job-1 on board0: it resumed elsewhere", 120)
        st = wait_for(lambda s: s["jobs"][0]["state"] == "done", state_dir, 600, "EP to end")
        assert st["jobs"][1]["state"] == "running"          # the server's job is still there
        api.request(state_dir, "cancel", job="job-2", reason="the test is over")
        wait_for(lambda s: s["jobs"][1]["state"] == "done", state_dir, 60, "the cancel")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        left = [p for _, d in boards.values() for p in board_processes(d)]
        kill(left)
        sshd_fixture.stop(other_sshd)
    assert daemon.returncode == 0
    assert not Path(f"/proc/{frozen}").exists()
    assert left == [], log_tail(log)
    for vm in (tmp_path / "server" / "run").glob("*.json"):     # no VM left on the server
        assert not Path(f"/proc/{json.loads(vm.read_text())['pid']}").exists(), vm
    ep, server_job = st["jobs"]
    assert ep["outcome"] == "exit 0", ep
    text = Path(ep["output"]).read_text()
    check("ep", "S", text)                                 # the NPB verification values
    for line in ("NAS Parallel Benchmarks", "Benchmark Completed"):
        assert text.count(line) == 1, text                 # printed once
    [loss] = ep["losses"]
    assert (loss["machine"], loss["resumed_from"]) == ("board0", "periodic"), ep
    kept = [(s["machine"], s["kind"]) for s in ep["segments"] if not s["discarded"]]
    assert kept == [("server", "run"), ("board0", "restore"), ("board1", "restore")], ep
    assert [s["machine"] for s in server_job["segments"]] == ["server"], server_job
    assert "it resumes on board board1" in log.read_text()
    if how == "oops":
        assert "board board0 has failed: its kernel reported Unable to handle kernel NULL " \
               "pointer dereference" in log.read_text(), log_tail(log)
    placed = json.loads((tmp_path / "board1" / "work" / "job-1" / f"ck{len(ep['segments']) - 1}"
                         "-saved" / "checkpoint.json").read_text())
    # the server's state with the board's kept beside it: board1 restored the arm64 one as it
    # was taken (a transform here would have sent an aarch64 checkpoint of its own)
    assert (placed["isa"], placed["source"]["isa"]) == ("x86_64", "aarch64")
