"""The daemon's state handling without VMs: the state file, recovery from the files jobs leave
on a machine, the config, and the control socket's checks."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import UHYVE, needs_kvm
from test_checkpoint import _wait_running
from hexo_sched import api, daemon as schedd
from hexo_sched.config import ConfigError, load, parse_mb
from hexo_sched.jobstore import (JobRecord, SavedCheckpoint, Segment, StateFile,
                                 StateFileError, dump, load_into, load_learned)
from hexo_sched.policy import (ClusterState, CostAwarePolicy, HexoPolicy, Job, JobState,
                               Machine, Run, Wait)


def machines():
    return [Machine("server", "server", "server", 2, 2048), Machine("b0", "board", "potato", 2,
                                                                     1024)]


def populated() -> tuple[ClusterState, dict]:
    st = ClusterState(machines())
    pol = HexoPolicy(st, idle_after_s=1e9)
    for i, vcpus in enumerate((1, 1, 1), 1):
        pol.on_submit(Job(f"job-{i}", vcpus, 256, benchmark="EP",
                          slowdown={"potato": 3.0}), now=float(i))
    # job-1 and job-2 run on the server; job-3 made job-1 migrate to the board
    recs = {j: JobRecord(j, f"/images/{j}.hexo", "EP", "S") for j in st.jobs}
    return st, recs


def test_state_round_trip_keeps_every_job_and_migration():
    st, recs = populated()
    assert st.jobs["job-1"].state is JobState.MIGRATING and st.queue == ["job-3"]
    recs["job-1"].segments.append(Segment(0, "server", "run", 1.0))
    recs["job-2"].segments.append(Segment(0, "b0", "restore", 1.0, lost=True,
                                          output_base={"stdout": 7, "stderr": 2}))
    recs["job-2"].saved = SavedCheckpoint("/state/jobs/job-2/saved-0-1/checkpoint", 0, 2.0,
                                          {"stdout": 9, "stderr": 2})
    recs["job-2"].losses.append({"machine": "b0", "lost_s": 3.0})
    st.draining.add("b0")
    data = json.loads(json.dumps(dump(st, recs, [{"reason": "x"}], 4)))
    fresh = ClusterState(machines())
    records, decisions, next_id = load_into(data, fresh)
    assert next_id == 4 and decisions == [{"reason": "x"}]
    assert fresh.queue == st.queue and fresh.now == st.now and fresh.draining == {"b0"}
    for jid, j in st.jobs.items():
        assert vars(fresh.jobs[jid]) == vars(j)
    assert records["job-1"].segments == [Segment(0, "server", "run", 1.0)]
    assert records["job-2"] == recs["job-2"]
    old = json.loads(json.dumps(data))           # a 1.2 file: none of 1.3's keys
    old["version"] = [1, 2]
    for e in old["jobs"]:
        for k in ("saved", "losses"):
            e["record"].pop(k)
        for seg in e["record"]["segments"]:
            seg.pop("lost"), seg.pop("output_base")
        e["policy"].pop("arrived_at")
    old.pop("draining")
    older = ClusterState(machines())
    records, _, _ = load_into(old, older)
    assert older.draining == set()
    assert records["job-2"].saved is None and records["job-2"].losses == []
    assert records["job-2"].segments[0].output_base == {"stdout": 0, "stderr": 0}
    assert fresh.used("b0") == st.used("b0") and fresh.used("server") == st.used("server")


def test_state_of_another_version_or_impossible_state_is_refused():
    st, recs = populated()
    data = dump(st, recs, [], 4)
    with pytest.raises(StateFileError, match="not 1.x"):
        load_into({**data, "version": [2, 0]}, ClusterState(machines()))
    with pytest.raises(StateFileError, match="not a hexo-schedd-state"):
        load_into({**data, "format": "other"}, ClusterState(machines()))
    bad = json.loads(json.dumps(data))
    bad["queue"].append("job-2")                 # a running job cannot also be queued
    with pytest.raises(StateFileError, match="inconsistent"):
        load_into(bad, ClusterState(machines()))
    with pytest.raises(StateFileError, match="no longer has"):
        load_into(data, ClusterState([Machine("server", "server", "server", 2, 2048)]))


def test_state_file_is_replaced_whole_and_a_corrupt_one_is_kept(tmp_path):
    f = StateFile(tmp_path / "state.json")
    assert f.load() is None
    f.save({"a": 1})
    f.save({"a": 2})
    assert f.load() == {"a": 2}
    assert sorted(os.listdir(tmp_path)) == ["state.json", "state.json.prev"]
    (tmp_path / "state.json").write_text('{"a": ')
    with pytest.raises(StateFileError, match="not valid JSON.*left as it is"):
        f.load()
    assert (tmp_path / "state.json").read_text() == '{"a": '


def cost_aware_that_learned() -> tuple[ClusterState, CostAwarePolicy, dict]:
    """EP ran 40 s on the server with a 3x estimate for the board (a counter sample); then a
    job of no benchmark took both server cores. Returns the state, the policy and what a
    daemon saves at that point."""
    st = ClusterState(machines())
    pol = CostAwarePolicy(st, idle_after_s=1e9)
    pol.on_submit(Job("job-1", 2, 256, benchmark="EP"), now=0.0)
    pol.on_estimate("job-1", "potato", 3.0, now=1.0)
    pol.on_job_finished("job-1", now=40.0)
    pol.on_submit(Job("job-2", 2, 256), now=41.0)
    recs = {j: JobRecord(j, f"/images/{j}.hexo") for j in st.jobs}
    saved = json.loads(json.dumps(dump(st, recs, [], 3, {pol.name: pol.learned()})))
    return st, pol, saved


def next_ep_job(policy: CostAwarePolicy) -> list:
    """The actions for an EP job with no estimate of its own (an image with no calibration
    row), submitted while the server is full."""
    return policy.on_submit(Job("job-3", 2, 256, benchmark="EP"), now=42.0)


def test_what_the_policy_learned_survives_the_state_file():
    st, pol, saved = cost_aware_that_learned()
    assert saved["version"] >= [1, 4]
    restarted = CostAwarePolicy(ClusterState(machines()), idle_after_s=1e9)
    load_into(saved, restarted.state)
    assert load_learned(saved, restarted) == {}
    forgetful = CostAwarePolicy(ClusterState(machines()), idle_after_s=1e9)
    load_into(saved, forgetful.state)
    before, after, forgot = next_ep_job(pol), next_ep_job(restarted), next_ep_job(forgetful)
    assert [type(a) for a in before] == [Run] and before[0].machine == "b0"
    assert before == after
    assert "estimated slowdown there is 3x" in after[0].reason
    assert "board core committed 120 s" in after[0].reason          # 40 s of work at 3x
    assert [type(a) for a in forgot] == [Wait]       # no estimate, no length: nowhere to go
    # another policy's learning is kept as it was read, for the next save
    hexo = HexoPolicy(ClusterState(machines()))
    assert load_learned(saved, hexo) == {"cost-aware": pol.learned()}
    assert hexo.learned() == {}


def test_a_state_file_from_before_learning_loads_with_nothing_learned(tmp_path, caplog):
    cfg_path = server_only_config(tmp_path)
    cfg_path.write_text(cfg_path.read_text().replace("[daemon]\n",
                                                     '[daemon]\npolicy = "cost-aware"\n'))
    _, pol, saved = cost_aware_that_learned()
    old = {k: v for k, v in saved.items() if k != "learned"}
    old["version"] = [1, 3]
    (tmp_path / "state").mkdir()
    state_file = StateFile(tmp_path / "state" / "state.json")
    state_file.save(old)
    with caplog.at_level("INFO", logger="hexo-schedd"):
        d = schedd.Daemon(load(cfg_path))
    assert "format 1.3, from before what the policy learned was saved" in caplog.text
    assert d.policy.learned() == {"lengths": {}, "slowdowns": {}}
    assert d.state.jobs["job-2"].state is JobState.RUNNING
    d._save()
    assert state_file.load()["learned"] == {"cost-aware": {"lengths": {}, "slowdowns": {}}}
    # the saved values come back in the next daemon, and are in its log
    state_file.save({**saved, "learned": {"cost-aware": pol.learned()}})
    caplog.clear()
    with caplog.at_level("INFO", logger="hexo-schedd"):
        d = schedd.Daemon(load(cfg_path))
    assert d.policy.learned() == pol.learned()
    assert "the cost-aware policy goes on from what it learned" in caplog.text
    assert '"EP": {"jobs": 1, "work_s": 40.0}' in caplog.text


@pytest.mark.parametrize("learned, why", [
    ([], "not a JSON object"),
    ({"cost-aware": {"lengths": {}}}, "KeyError"),
    ({"cost-aware": {"lengths": {"EP": {"jobs": 0, "work_s": 40.0}}, "slowdowns": {}}},
     "EP's length"),
    ({"cost-aware": {"lengths": {"EP": {"jobs": 1.5, "work_s": 40.0}}, "slowdowns": {}}},
     "EP's length"),
    ({"cost-aware": {"lengths": {"EP": {"jobs": 1, "work_s": -1}}, "slowdowns": {}}},
     "EP's length"),
    ({"cost-aware": {"lengths": {}, "slowdowns": {"EP": {"potato": 0}}}}, "EP's slowdown"),
    ({"cost-aware": {"lengths": {}, "slowdowns": {"EP": {"potato": "3"}}}}, "EP's slowdown"),
    ({"cost-aware": {"lengths": {}, "slowdowns": {"EP": [3.0]}}}, "AttributeError"),
])
def test_malformed_learned_values_are_refused(learned, why):
    _, _, saved = cost_aware_that_learned()
    fresh = CostAwarePolicy(ClusterState(machines()))
    with pytest.raises(StateFileError, match=f"malformed state: what the cost-aware policy "
                                             f"learned: .*{why}"):
        load_learned({**saved, "learned": learned}, fresh)
    assert fresh.learned() == {"lengths": {}, "slowdowns": {}}


def server_only_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cluster.toml"
    cfg.write_text('[daemon]\nstate_dir = "state"\nmetrics_port = 0\n\n'
                   '[server]\nname = "server"\ncores = 2\nram = "2G"\n'
                   'work_dir = "work"\nrun_dir = "run"\n')
    return cfg


def write_state(cfg_path: Path, jobs: list[tuple[str, int, bool]]) -> None:
    """Jobs as a killed daemon left them: (id, vCPUs, whether a segment was launched); the
    policy places them in order."""
    cfg = load(cfg_path)
    st = ClusterState([m.policy_machine() for m in cfg.machines])
    pol = HexoPolicy(st)
    recs = {}
    for jid, vcpus, _ in jobs:
        pol.on_submit(Job(jid, vcpus, 256), now=1.0)
    for jid, _, launched in jobs:
        recs[jid] = JobRecord(jid, f"/images/{jid}.hexo")
        if launched:
            recs[jid].segments.append(Segment(0, "server", "run", 1.0))
    cfg.state_dir.mkdir()
    StateFile(cfg.state_dir / "state.json").save(dump(st, recs, [], len(jobs) + 1))


def test_restarted_daemon_adopts_running_jobs_and_notices_finished_ones(tmp_path):
    cfg_path = server_only_config(tmp_path)
    # job-1 and job-2 were started (one core each); job-3 (2 vCPUs) waits in the queue
    write_state(cfg_path, [("job-1", 1, True), ("job-2", 1, True), ("job-3", 2, False)])
    work, run_dir = tmp_path / "work", tmp_path / "run"
    for j in ("job-1", "job-2"):
        (work / j).mkdir(parents=True)
        (work / j / "seg0.err").write_text("")
    # job-1 ended while the daemon was down; job-2's VM still runs (its pid is alive)
    (work / "job-1" / "seg0.out").write_text("Verification    =               SUCCESSFUL\n")
    (work / "job-1" / "seg0.rc").write_text("0\n")
    run_dir.mkdir(mode=0o700)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "job-2.json").write_text(json.dumps(
            {"name": "job-2", "pid": sleeper.pid, "state": "running"}))
        d = schedd.Daemon(load(cfg_path))
        assert {j: d.state.jobs[j].state for j in d.state.jobs} == {
            "job-1": JobState.RUNNING, "job-2": JobState.RUNNING, "job-3": JobState.QUEUED}
        d.poll_once()
        assert d.state.jobs["job-1"].state is JobState.DONE
        assert d.records["job-1"].outcome == "exit 0"
        assert "SUCCESSFUL" in Path(d.records["job-1"].output).read_text()
        assert d.state.jobs["job-2"].state is JobState.RUNNING        # adopted, untouched
        assert d.state.jobs["job-3"].state is JobState.QUEUED         # needs both cores
        assert any("job-3 does not fit" in x["reason"] for x in d.decisions)
        # energy: the server's Table 1 model over the time it held one busy core
        time.sleep(0.2)
        e = d.status()["energy"]
        elapsed = time.time() - e["since"]
        joules = e["machines"]["server"]["joules"]
        assert e["machines"]["server"]["power_model"] == "xeon-e5-2637"
        assert 60.0 * 0.2 < joules <= 83.0 * elapsed         # idle 60 W .. one busy core 83 W
        assert e["jobs_completed"] == 1 and e["source"].startswith("modelled")
        assert e["jobs_per_kj"] == pytest.approx(1 / (joules / 1000))
        assert "no RAPL" in e["source"] or "RAPL is readable" in e["source"]
        # what it learnt is on disk: a second restart sees the same
        again = schedd.Daemon(load(cfg_path))
        assert again.state.jobs["job-1"].state is JobState.DONE
        assert again.records["job-1"].output == d.records["job-1"].output
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_job_whose_vm_vanished_is_requeued(tmp_path, monkeypatch):
    monkeypatch.setattr(schedd, "VANISHED_GRACE_S", 0.0)
    cfg_path = server_only_config(tmp_path)
    write_state(cfg_path, [("job-1", 2, True)])
    (tmp_path / "work" / "job-1").mkdir(parents=True)
    (tmp_path / "work" / "job-1" / "seg0.err").write_text("")       # launched, then nothing
    d = schedd.Daemon(load(cfg_path))
    # keep the requeued 2-vCPU job from starting again here: one core is left
    d.state.machines["server"].reserved_cores = 1
    d.poll_once()
    assert d.state.jobs["job-1"].state is JobState.QUEUED
    assert all(s.discarded for s in d.records["job-1"].segments)


def test_a_job_placed_but_never_launched_is_launched_on_restart(tmp_path):
    cfg_path = server_only_config(tmp_path)
    cfg_path.write_text(cfg_path.read_text() + f'uhyve_ctl = "{UHYVE}"\n')
    write_state(cfg_path, [("job-1", 1, False)])     # the policy placed it; no segment yet
    d = schedd.Daemon(load(cfg_path))
    d._finish_interrupted_actions()
    assert [(s.machine, s.kind) for s in d.records["job-1"].segments] == [("server", "run")]
    rc = tmp_path / "work" / "job-1" / "seg0.rc"
    for _ in range(300):                             # its image does not exist: uhyve-ctl
        if rc.exists():                              # refuses to start it
            break
        time.sleep(0.05)
    d.poll_once()
    assert d.records["job-1"].outcome == "exit 126"
    assert "cannot start" in (tmp_path / "state" / "jobs" / "job-1" / "seg0.err").read_text()


def test_config_errors_are_clear(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nname = "s"\ncores = 2\nram = "2G"\nwork_dir = "w"\n')
    with pytest.raises(ConfigError, match="missing key 'run_dir'"):
        load(cfg)
    cfg.write_text('[server]\nname = "s"\ncores = 2\nram = "2G"\nwork_dir = "w"\nrun_dir = "r"\n'
                   '[[board]]\nname = "b"\ncores = 4\nram = "2G"\nwork_dir = "/w"\n'
                   'run_dir = "/r"\nhost = "10.0.0.2"\nkey = "k"\n')
    with pytest.raises(ConfigError, match="give 'known_hosts'"):
        load(cfg)
    assert parse_mb("2G") == 2048 and parse_mb("256M") == 256 and parse_mb(512) == 512
    with pytest.raises(ConfigError, match="bad size"):
        parse_mb("lots")
    server = '[server]\nname = "s"\ncores = 2\nram = "2G"\nwork_dir = "w"\nrun_dir = "r"\n'
    for key, value in (("checkpoint_period_s", "-1"), ("board_lost_after_s", '"soon"'),
                       ("min_residence_s", "inf")):
        cfg.write_text(f"[daemon]\n{key} = {value}\n" + server)
        with pytest.raises(ConfigError, match=f"{key} must be a number of seconds >= 0"):
            load(cfg)
    cfg.write_text(server)
    defaults = load(cfg)
    assert (defaults.checkpoint_period_s, defaults.board_lost_after_s,
            defaults.min_residence_s) == (60.0, 60.0, 0.0)


def test_example_config_in_the_readme_loads(tmp_path):
    text = (Path(__file__).parents[1] / "scheduler" / "README.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "cluster.toml").write_text(example)
    cfg = load(tmp_path / "cluster.toml")
    assert [m.kind for m in cfg.machines] == ["server", "board"]
    assert cfg.metrics_addr == "127.0.0.1"
    assert cfg.machines[1].known_hosts == tmp_path / "known_hosts"


def test_control_socket_checks_version_and_peer():
    # not under tmp_path: pytest's base directory is 0700, which another user cannot cross
    with tempfile.TemporaryDirectory() as d:
        check_control_socket(Path(d))


def check_control_socket(tmp_path: Path) -> None:
    server = api.ControlServer(tmp_path, lambda req: {"echo": req["op"]})
    try:
        assert api.request(tmp_path, "ping")["echo"] == "ping"
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(tmp_path / api.SOCKET_NAME))
            s.sendall(json.dumps({"protocol": "hexo-schedd", "version": 99, "op": "x"})
                      .encode() + b"\n")
            reply = json.loads(s.makefile().readline())
        assert not reply["ok"] and "version 99" in reply["error"] and reply["version"] == 1
        for bad in ([1, 2], {"protocol": "hexo-schedd", "version": True, "op": "x"},
                    {"protocol": "hexo-schedd", "version": 1.0, "op": "x"}):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(tmp_path / api.SOCKET_NAME))
                s.sendall(json.dumps(bad).encode() + b"\n")
                reply = json.loads(s.makefile().readline())
            assert not reply["ok"] and "internal" not in reply["error"], bad
        if os.geteuid() != 0:
            pytest.skip("checking another user's connection needs root")
        os.chmod(tmp_path, 0o755)
        os.chmod(tmp_path / api.SOCKET_NAME, 0o666)   # only SO_PEERCRED stands in the way
        # the refusal comes before any request is read, so this client sends nothing
        code = ("import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(10); "
                "s.connect(%r); print(s.makefile().readline())" % str(tmp_path / api.SOCKET_NAME))
        p = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                           user=65534, timeout=30)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["error"] == "permission denied"
    finally:
        server.close()


def test_submit_reads_directories_and_job_lists(tmp_path):
    from hexo_sched.commands import _job_specs
    (tmp_path / "d").mkdir()
    for n in ("a.hexo", "b.hexo"):
        (tmp_path / "d" / n).write_bytes(b"x")
    (tmp_path / "jobs").write_text("# queue\nd/a.hexo --vcpus 2 --mem 1G\n\nd/b.hexo\n")
    args = argparse.Namespace(images=[tmp_path / "d"], lists=[tmp_path / "jobs"], vcpus=1,
                              mem="256M")
    specs = _job_specs(args)
    assert [(Path(s["image"]).name, s["vcpus"], s["mem"]) for s in specs] == [
        ("a.hexo", 1, "256M"), ("b.hexo", 1, "256M"), ("a.hexo", 2, "1G"),
        ("b.hexo", 1, "256M")]
    (tmp_path / "bad").write_text("d/a.hexo --cores 3\n")
    with pytest.raises(ValueError, match="bad:1: expected IMAGE"):
        _job_specs(argparse.Namespace(images=[], lists=[tmp_path / "bad"], vcpus=1, mem="1G"))
    with pytest.raises(ValueError, match="no such image"):
        _job_specs(argparse.Namespace(images=[tmp_path / "nope.hexo"], lists=[], vcpus=1,
                                      mem="1G"))


def test_benchmark_is_read_from_the_image_manifest():
    assert schedd.benchmark_of({"workload": {"name": "npb-ep", "class": "S"}}) == ("EP", "S")
    assert schedd.benchmark_of({}) == ("", None)


def test_daemon_refuses_a_bad_config_or_a_corrupt_state_file_and_keeps_it(tmp_path):
    schedd_bin = str(Path(UHYVE).with_name("hexo-schedd"))
    p = subprocess.run([schedd_bin, "--config", tmp_path / "missing.toml"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "missing.toml" in p.stderr
    cfg = server_only_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text('{"format": "hexo-schedd-state", "ver')
    p = subprocess.run([schedd_bin, "--config", cfg], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "not valid JSON" in p.stderr, p.stderr
    assert (tmp_path / "state" / "state.json").read_text().endswith('"ver')


def test_a_vm_serving_or_pulling_pages_is_never_killed(tmp_path):
    """kill_vm goes through the real `uhyve-ctl ps --json` and kill; only the VM that holds
    no post-copy pages in flight is stopped."""
    from hexo_sched.agents import MachineAgent
    cfg = server_only_config(tmp_path)
    cfg.write_text(cfg.read_text() + f'uhyve_ctl = "{UHYVE}"\n')
    agent = MachineAgent(load(cfg).machines[0])
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    for migration, killed in (("pulling", False), (None, True)):
        vm = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            state = {"name": "job-1", "pid": vm.pid, "state": "running", "isa": "aarch64",
                     "backend": "emu", "mem": 1 << 28}
            if migration:
                state["migration"] = migration
            (run_dir / "job-1.json").write_text(json.dumps(state))
            assert agent.kill_vm("job-1") is killed
            assert (vm.wait(10) == -9) if killed else vm.poll() is None
        finally:
            vm.kill()
            vm.wait()


def test_a_restore_confirms_only_past_a_migration_point_and_fails_with_its_cause(tmp_path):
    """A restored VM that is merely running has not confirmed (the daemon gives up on it and
    stops it); the `confirmed:` line of its own segment confirms it; one that ended before
    that fails with uhyve-ctl's one-line cause."""
    from types import SimpleNamespace

    from hexo_sched.agents import MachineAgent
    cfg = server_only_config(tmp_path)
    cfg.write_text(cfg.read_text() + f'uhyve_ctl = "{UHYVE}"\n')
    agent = MachineAgent(load(cfg).machines[0])
    (tmp_path / "run").mkdir(mode=0o700)
    seg = tmp_path / "work" / "job-1"
    seg.mkdir(parents=True)
    daemon = SimpleNamespace(cfg=SimpleNamespace(confirm_timeout_s=1.0),
                             _pause=lambda a: time.sleep(0.02))
    daemon._probe1 = lambda a, j, n: schedd.Daemon._probe1(daemon, a, j, n)
    vm = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run" / "job-1.json").write_text(json.dumps(
            {"name": "job-1", "pid": vm.pid, "state": "running", "confirmed": True}))
        (seg / "seg1.err").write_text("uhyve-ctl: confirmed: the restored job passed a "
                                      "migration point\n")
        (seg / "seg2.err").write_text("")     # the same VM name, a later segment: not yet
        schedd.Daemon._confirm(daemon, agent, "job-1", 1)
        assert agent.probe([("job-1", 2)])[("job-1", 2)].vm_state == "running"
        with pytest.raises(schedd.MigrationFailed, match="did not confirm job-1"):
            schedd.Daemon._confirm(daemon, agent, "job-1", 2)
        assert vm.wait(10) == -9                         # given up on: stopped
    finally:
        vm.kill()
        vm.wait()
    (seg / "seg3.err").write_text("uhyve-ctl: guest stopped: aarch64 data abort at pc 0x0\n"
                                  "uhyve-ctl: registers: pc=0x0\n")
    (seg / "seg3.rc").write_text("125\n")
    with pytest.raises(schedd.MigrationFailed) as failed:
        schedd.Daemon._confirm(daemon, agent, "job-1", 3)
    assert str(failed.value) == ("restore of job-1 on server ended with status 125: guest "
                                 "stopped: aarch64 data abort at pc 0x0")


@needs_kvm
def test_server_jobs_vcpu_threads_are_sampled_where_counters_exist(tmp_path, images,
                                                                    monkeypatch):
    """This machine has no PMU, so the hardware events are stood in for by kernel-counted
    software events on the same thread: what is real is the VM, its vCPU thread named in the
    uhyve-ctl state file, per-thread perf_event_open, and the estimate path into the policy."""
    from hexo_sched import counters
    cfg_path = server_only_config(tmp_path)
    write_state(cfg_path, [("job-1", 1, True)])
    (tmp_path / "work" / "job-1").mkdir(parents=True)
    (tmp_path / "work" / "job-1" / "seg0.err").write_text("")
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = dict(os.environ, HEXO_RUN_DIR=str(run_dir))
    vm = subprocess.Popen([UHYVE, "run", images.get("npb-ep", "W"), "--name", "job-1"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_running(env, "job-1", vm)
        tid = json.loads((run_dir / "job-1.json").read_text())["vcpu_tid"]
        software = tuple((counters.PERF_TYPE_SOFTWARE, c) for c in (1, 2, 3))
        monkeypatch.setattr(schedd, "PerfEventSource",
                            lambda t: counters.PerfEventSource(t, software))
        d = schedd.Daemon(load(cfg_path))
        d.estimator.hardware = True
        d.poll_once()
        d.sample_counters(1000.0)
        time.sleep(0.2)
        d.sample_counters(1001.0)
        assert f"perf_event_open on thread {tid}" in d.records["job-1"].estimate_source
        assert d.samplers[("job-1", tid)].last[1][0] > 0      # task-clock of the vCPU thread
    finally:
        vm.kill()
        vm.wait()


def test_refused_submits_leave_no_trace_and_status_keeps_working(tmp_path, images):
    d = schedd.Daemon(load(server_only_config(tmp_path)))
    image = str(images.get("hello"))
    from hexo.image import Image
    assert Image(image).manifest["memory"]["min_mem"] > 1 << 20     # so that 1M is refused
    bad = [({"image": image, "vcpus": 0}, "vcpus must be a positive whole number"),
           ({"image": image, "vcpus": -1}, "vcpus must be a positive whole number"),
           ({"image": image, "vcpus": 1.5}, "vcpus must be a positive whole number"),
           ({"image": image, "vcpus": True}, "vcpus must be a positive whole number"),
           ({"image": image, "vcpus": "1"}, "vcpus must be a positive whole number"),
           ({"image": image, "mem": "0"}, "must be positive"),
           ({"image": image, "mem": 0}, "mem must be positive"),
           ({"image": image, "mem": "lots"}, "bad size"),
           ({"image": image, "mem": 1.5}, "mem must be a size"),
           ({"image": image, "mem": "1M"}, "MiB this image needs"),
           ({"image": image, "mem": "8"}, "MiB this image needs"),      # MiB, as everywhere
           ({"image": image, "cores": 2}, r"unknown job field\(s\) cores"),
           ({"image": "hello.hexo"}, "absolute path"),
           ({"image": ["/x"]}, "absolute path"),
           ({"image": str(tmp_path / "none.hexo")}, "no such image file"),
           ({"image": image, "vcpus": 3}, "fit on no machine"),
           ("job", "must be a JSON object")]
    for spec, message in bad:
        with pytest.raises(api.ApiError, match=message):
            d.handle({"op": "submit", "jobs": [{"image": image}, spec]})
        st = d.handle({"op": "status"})
        assert st["jobs"] == [] and st["queue"] == [], spec
    for jobs in (None, [], "x", {"image": image}):
        with pytest.raises(api.ApiError, match="non-empty list of jobs"):
            d.handle({"op": "submit", "jobs": jobs})
    assert d.handle({"op": "submit", "jobs": [{"image": image, "mem": "64M"}]})["jobs"] == \
        ["job-1"]
    job = d.handle({"op": "status"})["jobs"][0]
    assert job["id"] == "job-1" and job["mem_mb"] == 64


def test_move_and_drain_requests_are_refused_with_the_reason(tmp_path, images):
    """The daemon's side of `hexo move` and `hexo drain`: a bad request changes nothing."""
    d = schedd.Daemon(load(server_only_config(tmp_path)))
    image = str(images.get("hello"))
    d.handle({"op": "submit", "jobs": [{"image": image}] * 3})     # the server has 2 cores
    st = d.handle({"op": "status"})
    running = next(j["id"] for j in st["jobs"] if j["state"] == "running")
    queued = st["queue"][0]
    for req, message in [({"op": "move", "job": "job-9", "to": "server"}, "no job 'job-9'"),
                         ({"op": "move", "job": queued, "to": "b9"}, "no machine 'b9'"),
                         ({"op": "move", "job": queued, "to": "server"}, "queued, not running"),
                         ({"op": "move", "job": running, "to": "server"}, "already on server"),
                         ({"op": "drain", "board": "server"}, "no board 'server'"),
                         ({"op": "drain", "board": 3}, "no board 3"),
                         ({"op": "drain", "board": "server", "undo": "yes"},
                          "undo must be true or false")]:
        before = d.handle({"op": "status"})
        with pytest.raises(api.ApiError, match=message):
            d.handle(req)
        after = d.handle({"op": "status"})
        assert (after["jobs"], after["machines"]) == (before["jobs"], before["machines"])


def test_finished_job_metric_has_the_outcome_status_shows(tmp_path):
    cfg_path = server_only_config(tmp_path)
    write_state(cfg_path, [("job-1", 1, True)])
    (tmp_path / "work" / "job-1").mkdir(parents=True)
    (tmp_path / "work" / "job-1" / "seg0.err").write_text("")
    (tmp_path / "work" / "job-1" / "seg0.out").write_text("done\n")
    (tmp_path / "work" / "job-1" / "seg0.rc").write_text("3\n")
    d = schedd.Daemon(load(cfg_path))
    d.poll_once()
    outcome = d.handle({"op": "status"})["jobs"][0]["outcome"]
    assert outcome == "exit 3"
    from prometheus_client import generate_latest
    text = generate_latest(d.metrics.registry).decode()
    assert 'hexo_jobs_completed_total{outcome="exit 3"} 1.0' in text


def test_state_file_checksum_refuses_any_damage_and_names_the_previous_copy(tmp_path):
    st, recs = populated()
    f = StateFile(tmp_path / "state.json")
    f.save(dump(st, recs, [], 4))
    first = (tmp_path / "state.json").read_bytes()
    f.save(dump(st, recs, [{"reason": "second"}], 4))
    assert (tmp_path / "state.json.prev").read_bytes() == first
    good = (tmp_path / "state.json").read_bytes()
    expect = f.load()
    rng = __import__("random").Random(7)
    refused = 0
    for _ in range(200):
        pos, byte = rng.randrange(len(good)), rng.randrange(256)
        damaged = good[:pos] + bytes([byte]) + good[pos + 1:]
        (tmp_path / "state.json").write_bytes(damaged)
        try:
            data = f.load()
        except StateFileError as e:
            refused += 1
            assert "damaged" in str(e) and "state.json.prev" in str(e) and "intact" in str(e)
            assert (tmp_path / "state.json").read_bytes() == damaged     # kept as it is
            continue
        assert data == expect, f"byte {pos} set to {byte} was accepted with other contents"
    assert refused > 150
    # a file from before checksums (format 1.0) still loads; a 1.1 file without one does not
    old = dump(st, recs, [], 4)
    (tmp_path / "state.json").write_text(json.dumps({**old, "version": [1, 0]}))
    assert f.load()["version"] == [1, 0]
    (tmp_path / "state.json").write_text(json.dumps(old))
    with pytest.raises(StateFileError, match="no checksum"):
        f.load()
