"""Slurm in front of hexo: real munged, slurmctld and slurmd on loopback, whose one node is a
one-core KVM server plus a one-core board (a real sshd on loopback, the emulated arm64
stand-in) under a real hexo-schedd. Jobs are `sbatch --wrap "hexo run ..."`."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import sshd_fixture
from conftest import BIN, HEXO, needs_kvm
from npb_reference import check
from test_hexo_run import assert_nothing_left
from test_schedd_live import UHYVE, log_tail, start_daemon, status, wait_all_done, wait_for

from hexo_sched import slurm as bridge
from hexo_sched.config import load
from hexo_sched.slurmlocal import LocalSlurm, missing

pytestmark = [needs_kvm, pytest.mark.slow, pytest.mark.slurm,
              pytest.mark.skipif(missing() is not None, reason=str(missing())),
              pytest.mark.skipif(sshd_fixture.usable() is not None,
                                 reason=str(sshd_fixture.usable()))]

ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


@dataclass
class Cluster:
    root: Path
    config: Path
    slurm: LocalSlurm
    log: Path
    ssh: sshd_fixture.Sshd
    daemon: object = None

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def start_daemon(self) -> None:
        self.daemon = start_daemon(self.config, self.log)

    def submit(self, *hexo_run_args) -> str:
        cmd = " ".join(["hexo", "run", *map(str, hexo_run_args)])
        return self.slurm.sbatch("--wrap", cmd, cwd=self.root)

    def wait_ended(self, ids: list[str], timeout: float) -> dict[str, dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = {i: self.slurm.job(i) for i in ids}
            if all(j["JobState"] in ENDED for j in jobs.values()):
                return jobs
            time.sleep(0.5)
        raise AssertionError(f"Slurm jobs not ended: {jobs}")

    def output(self, slurm_id: str) -> str:
        return (self.root / f"slurm-{slurm_id}.out").read_text()

    def hexo_job(self, st: dict, slurm_id: str) -> dict:
        return next(j for j in st["jobs"] if j["slurm_job"] == slurm_id)


@pytest.fixture
def cluster(tmp_path, request):
    ssh = sshd_fixture.start(tmp_path / "ssh")
    mark = request.node.get_closest_marker("daemon")
    cfg = sshd_fixture.cluster_config(tmp_path, ssh, HEXO, UHYVE, **{
        "policy": "hexo", "idle_after_s": 1, "poll_s": 0.2, "confirm_timeout_s": 120,
        "slurm_node": bridge.NODE, "slurm_conf": str(tmp_path / "slurm" / "slurm.conf"),
        **(mark.kwargs if mark else {})})
    node = bridge.node(load(cfg))
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HEXO_SCHEDD_STATE": str(tmp_path / "state")}
    c = Cluster(tmp_path, cfg, LocalSlurm(tmp_path / "slurm", node, job_env=env),
                tmp_path / "schedd.log", ssh)
    c.start_daemon()
    try:
        c.slurm.start()
        yield c
    finally:
        daemons = list(c.slurm.procs.values())
        c.slurm.stop()              # cancels what runs: the daemon cancels the hexo jobs
        if c.daemon.poll() is None:
            wait_all_done(c.state_dir, 60, "the jobs of cancelled Slurm jobs to be cancelled")
            c.daemon.send_signal(signal.SIGTERM)
            c.daemon.wait(30)
        if ssh.proc.poll() is None:
            sshd_fixture.stop(ssh)
    assert all(p.poll() is not None for p in daemons)       # nothing of Slurm left running


def test_node_is_the_server_plus_the_boards(tmp_path):
    cfg = sshd_fixture.server_config(tmp_path, HEXO, UHYVE, sshd_fixture.board_section(
        "b0", 22, tmp_path / "k", tmp_path / "kh", tmp_path / "b0", UHYVE))
    n = bridge.node(load(cfg))
    assert (n.cpus, n.memory_mb) == (2, 3072)
    lines = n.lines()
    assert "NodeName=hexo0 CPUs=2 RealMemory=3072" in lines[1]
    assert lines[2].startswith("PartitionName=hexo Nodes=hexo0")


def test_batch_completes_verified_with_the_guests_exit_codes(cluster, images):
    ep, is_ = images.get("npb-ep", "S"), images.get("npb-is", "S")
    exits, chatty = images.program("exit_status"), images.program("chatty")
    ids = {"ep": cluster.submit(ep), "is": cluster.submit(is_),
           "three": cluster.submit(exits, "--", 3), "crash": cluster.submit(chatty, "--",
                                                                            "crash", 2)}
    jobs = cluster.wait_ended(list(ids.values()), 600)
    st = status(cluster.state_dir)
    for kernel in ("ep", "is"):
        j = jobs[ids[kernel]]
        assert (j["JobState"], j["ExitCode"]) == ("COMPLETED", "0:0"), j
        out = cluster.output(ids[kernel])
        check(kernel, "S", out)
        assert out.count("NAS Parallel Benchmarks") == 1
    assert (jobs[ids["three"]]["JobState"], jobs[ids["three"]]["ExitCode"]) == ("FAILED", "3:0")
    assert "exiting with status 3" in cluster.output(ids["three"])
    assert (jobs[ids["crash"]]["JobState"], jobs[ids["crash"]]["ExitCode"]) == ("FAILED",
                                                                                "125:0")
    assert "guest stopped" in cluster.output(ids["crash"])
    assert {cluster.hexo_job(st, i)["outcome"] for i in ids.values()} == {
        "exit 0", "exit 3", "exit 125"}


def test_scancel_of_an_offloaded_job_leaves_nothing(cluster, images):
    """EP (class W: it runs long enough on the server not to end before the second job
    comes) is offloaded to make room for a job that spins on the server (not migratable, so
    it stays there); both are cancelled with scancel."""
    ep, chatty = images.get("npb-ep", "W"), images.program("chatty")
    first = cluster.submit(ep)
    wait_for(lambda s: len(s["jobs"]) == 1, cluster.state_dir, 120, "the first job")
    second = cluster.submit(chatty, "--", "spin", 1)
    st = wait_for(lambda s: len(s["jobs"]) == 2 and all(j["state"] == "running"
                                                        for j in s["jobs"]),
                  cluster.state_dir, 300, "EP to run on the board, chatty on the server")
    assert cluster.hexo_job(st, first)["location"] == "board0", st
    for slurm_id in (first, second):
        p = cluster.slurm.run("scancel", slurm_id)
        assert p.returncode == 0, p.stderr
    jobs = cluster.wait_ended([first, second], 300)
    st = wait_all_done(cluster.state_dir, 60, "the daemon to cancel both")
    for slurm_id in (first, second):
        assert jobs[slurm_id]["JobState"] == "CANCELLED"
        job = cluster.hexo_job(st, slurm_id)
        assert job["outcome"].startswith("cancelled"), job
        assert_nothing_left(cluster.root, job["id"])


def test_daemon_restarted_mid_batch_loses_no_slurm_job(cluster, images):
    ep, is_ = images.get("npb-ep", "S"), images.get("npb-is", "S")
    ids = [cluster.submit(ep), cluster.submit(is_), cluster.submit(ep)]
    wait_for(lambda s: any(j["state"] == "running" for j in s["jobs"]), cluster.state_dir,
             120, "a job to run")
    cluster.daemon.send_signal(signal.SIGKILL)
    cluster.daemon.wait(10)
    time.sleep(3)
    cluster.start_daemon()
    jobs = cluster.wait_ended(ids, 900)
    for i, kernel in zip(ids, ("ep", "is", "ep")):
        assert (jobs[i]["JobState"], jobs[i]["ExitCode"]) == ("COMPLETED", "0:0"), jobs[i]
        out = cluster.output(i)
        check(kernel, "S", out)
        assert out.count("NAS Parallel Benchmarks") == 1, out
    assert "recovered" in cluster.log.read_text()


def test_a_board_that_does_not_answer_drains_the_node(cluster):
    """Slurm cannot shrink a node: the daemon drains it, with the reason in sinfo -R."""
    assert cluster.slurm.node_state() == "IDLE"
    sshd_fixture.stop(cluster.ssh)
    deadline = time.time() + 120
    while time.time() < deadline and "DRAIN" not in cluster.slurm.node_state():
        time.sleep(0.5)
    reason = cluster.slurm.run("sinfo", "-h", "-R", "-o", "%E").stdout.strip()
    assert reason == "hexo: board0 unreachable, 1 of 2 CPUs left", reason
    assert "board board0 does not answer" in cluster.log.read_text()


@pytest.mark.daemon(checkpoint_period_s=3, board_lost_after_s=3, idle_after_s=600)
def test_a_dead_board_loses_no_slurm_job(cluster, images):
    """EP (class W) is offloaded to make room for a job that stays on the server; once the
    daemon has a saved checkpoint of it, the board dies (its sshd and the job's VM are
    killed). The job resumes on the server from that checkpoint when the server's job ends,
    and the Slurm job completes with verified output, shown once."""
    ep, chatty = images.get("npb-ep", "W"), images.program("chatty")
    first = cluster.submit(ep)
    wait_for(lambda s: len(s["jobs"]) == 1, cluster.state_dir, 120, "the first job")
    second = cluster.submit(chatty, "--", "lines", "40", "2000000")

    def saved_or_done(st: dict) -> bool:
        j = cluster.hexo_job(st, first)
        return j["state"] == "done" or (j["saved"] or {}).get("kind") == "periodic"

    st = wait_for(saved_or_done, cluster.state_dir, 300, "a saved live checkpoint of EP on the board")
    job = cluster.hexo_job(st, first)
    assert job["state"] != "done", "EP ended before a live checkpoint of it was saved" + \
        log_tail(cluster.log)
    assert job["location"] == "board0", st
    vm = cluster.root / "board" / "run" / f"{job['id']}.json"
    sshd_fixture.stop(cluster.ssh)
    os.kill(json.loads(vm.read_text())["pid"], signal.SIGKILL)
    jobs = cluster.wait_ended([first, second], 900)
    st = status(cluster.state_dir)
    assert (jobs[first]["JobState"], jobs[first]["ExitCode"]) == ("COMPLETED", "0:0"), jobs
    out = cluster.output(first)
    check("ep", "W", out)
    assert out.count("NAS Parallel Benchmarks") == 1, out
    job = cluster.hexo_job(st, first)
    [loss] = job["losses"]
    assert loss["machine"] == "board0" and loss["resumed_from"] == "periodic", job
    assert 0 < loss["lost_s"], loss
    assert job["segments"][-1]["machine"] == "server" and job["segments"][-1]["kind"] == \
        "restore", job
    print(json.dumps({"lost_s": loss["lost_s"], "period_s": loss["checkpoint_period_s"]}))
