"""A board VM that dies while it runs a job loses the job nothing but the work since its last
saved checkpoint: hexo-schedd resumes it on the server, and `hexo run` shows its output once.

One board VM (prefix bf-) under a one-core KVM server; the board's qemu is killed while EP
runs on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

import sshd_fixture
from conftest import HEXO, needs_kvm
from npb_reference import check
from test_board import board_state, qemu_unusable  # noqa: F401 (a fixture)

pytestmark = [needs_kvm, pytest.mark.board, pytest.mark.slow, pytest.mark.xdist_group("board"),
              pytest.mark.timeout(3600)]

if qemu_unusable():
    pytest.skip(qemu_unusable(), allow_module_level=True)

from hexo_sched.boards import vm  # noqa: E402


def test_a_killed_board_vm_loses_no_job(board_state, images, tmp_path):  # noqa: F811
    """EP (class W) runs under `hexo run`, is offloaded to the board VM to make room for a job
    that stays on the server, and once the daemon holds a live checkpoint of it taken on the
    board, the board's qemu is killed. EP resumes on the server from that checkpoint and the
    client prints its verified output once."""
    from test_schedd_live import UHYVE, start_daemon, wait_all_done, wait_for
    board = vm.up("bf-0")
    ep, chatty = images.get("npb-ep", "W"), images.program("chatty")
    section = sshd_fixture.board_section("bf-0", board.port, board.image.client_key,
                                         board.known_hosts, "/var/tmp/hexo", "uhyve-ctl",
                                         backend="kvm", model="emulated-aarch64")
    cfg = sshd_fixture.server_config(tmp_path, HEXO, UHYVE, section, policy="hexo",
                                     idle_after_s=3600, poll_s=0.5, confirm_timeout_s=900,
                                     checkpoint_timeout_s=600, checkpoint_period_s=2,
                                     board_lost_after_s=10)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        client = subprocess.Popen([HEXO, "run", "--state-dir", state_dir, ep],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda s: len(s["jobs"]) == 1 and s["jobs"][0]["state"] == "running",
                 state_dir, 300, "EP to run on the server")
        other = subprocess.Popen([HEXO, "run", "--state-dir", state_dir, chatty, "--", "lines",
                                  "200", "1000000"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        st = wait_for(lambda s: (s["jobs"][0]["saved"] or {}).get("kind") == "periodic",
                      state_dir, 1200, "a live checkpoint of EP taken on the board")
        assert st["jobs"][0]["location"] == "bf-0", st
        os.kill(board.pid(), signal.SIGKILL)
        out, err = client.communicate(timeout=1800)
        assert other.wait(60) == 0
        st = wait_all_done(state_dir, 600, "both jobs to end")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        vm.down("bf-0")
    assert client.returncode == 0, err
    text = out.decode()
    check("ep", "W", text)
    assert text.count("NAS Parallel Benchmarks") == 1, text
    job = st["jobs"][0]
    [loss] = job["losses"]
    assert (loss["machine"], loss["resumed_from"]) == ("bf-0", "periodic"), job
    assert job["segments"][-1]["machine"] == "server", job
    assert Path(job["output"]).read_text() == text
    print(json.dumps({"lost_s": loss["lost_s"], "period_s": loss["checkpoint_period_s"]}))
