"""The simulated cluster: invariants under random clusters and workloads, HEXO's §5.2 numbers,
and where our policy beats HEXO's."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hexo_sched import paper
from hexo_sched.cli import main as cli_main
from hexo_sched.energy import table1_models
from hexo_sched.policy import JobState, Machine, Migrate, Run
from hexo_sched.simulation import (JobProfile, Simulation, compare_policies, plot,
                                   run_experiment)


@st.composite
def clusters(draw):
    ms = [Machine(f"s{i}", "server", "xeon-e5-2637", draw(st.integers(2, 5)), 64 * 1024,
                  reserved_cores=1, checkpoint_mb_s=draw(st.floats(5, 200)),
                  restore_mb_s=draw(st.floats(5, 200)))
          for i in range(draw(st.integers(1, 2)))]
    ms += [Machine(f"b{i}", "board", "potato", draw(st.integers(2, 5)),
                   draw(st.sampled_from([300, 1024, 2048])), reserved_cores=1,
                   link_mbit=draw(st.floats(5, 1000)), checkpoint_mb_s=draw(st.floats(2, 50)),
                   restore_mb_s=draw(st.floats(2, 50)))
           for i in range(draw(st.integers(0, 3)))]
    return ms


@st.composite
def workloads(draw, max_vcpus):
    n = draw(st.integers(1, 4))
    return {f"J{i}": JobProfile(f"J{i}", draw(st.floats(20, 400)), draw(st.floats(1.2, 40)),
                                draw(st.floats(1, 500)), draw(st.sampled_from([64, 256, 700])),
                                draw(st.integers(1, max_vcpus)))
            for i in range(n)}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), policy=st.sampled_from(["hexo", "cost-aware"]),
       jitter=st.floats(0, 0.5), error=st.floats(0, 0.3), seed=st.integers(0, 1000))
def test_invariants_hold_after_every_transition(data, policy, jitter, error, seed):
    machines = data.draw(clusters())
    profiles = data.draw(workloads(min(m.usable_cores for m in machines
                                       if m.kind == "server")))
    sim = Simulation(machines, tuple(profiles), policy, duration=1200, profiles=profiles,
                     check=True, length_jitter=jitter, estimate_error=error, seed=seed,
                     tick_s=7.0, policy_kwargs={"idle_after_s": 30.0})
    r = sim.run()     # check=True runs check_invariants after every event
    assert sim.transitions > 0
    ids = [j.id for j in sim.completed]
    assert len(ids) == len(set(ids)) == r["jobs"]
    assert all(sim.state.jobs[i].state is JobState.DONE for i in ids)
    acts = [a for _, a in sim.policy.log]
    assert all(a.reason for a in acts)
    assert sum(isinstance(a, Migrate) for a in acts) == r["migrations"]
    assert sum(isinstance(a, Run) for a in acts) >= r["jobs"]
    models = table1_models()
    for m in machines:
        idle = models[m.model].watts(0) * 1200 / 1000
        assert r["energy_by_machine_kj"][m.name] >= idle - 1e-9


@pytest.fixture(scope="module")
def hexo_run():
    return run_experiment()["results"]["hexo"]


def gain(res, jobs, setup, key="throughput_gain_pct"):
    return res[jobs][setup][key]


def test_xp_reproduces_paper_where_job_length_is_pinned(hexo_run):
    # The assumed Xeon run time (290 s) was inferred from these very figures, so the one-board
    # setup must land on them (within 2 points: one job in 36 is 2.8 points).
    for jobs in ("EP", "EP+CG", "mix5"):
        assert gain(hexo_run, jobs, "XP") == pytest.approx(
            paper.THROUGHPUT_GAIN_PCT[jobs]["XP"], abs=2.0)
    for jobs in ("EP", "mix5"):
        assert gain(hexo_run, jobs, "XP", "jobs_per_kj_gain_pct") == pytest.approx(
            paper.JOBS_PER_KJ_GAIN_PCT[jobs]["XP"], abs=1.0)


def test_x3p_direction_and_rough_magnitude(hexo_run):
    # Three boards: the same direction and order as the paper; the simulator, which has no
    # contention or migration overhead beyond I/O, sits up to 20 points off (EP +86 vs +67).
    for jobs in ("EP", "EP+CG", "mix5"):
        g = gain(hexo_run, jobs, "X3P")
        assert g > gain(hexo_run, jobs, "XP") > 0
        assert g == pytest.approx(paper.THROUGHPUT_GAIN_PCT[jobs]["X3P"], abs=20.0)
    order = [gain(hexo_run, j, "X3P") for j in ("EP", "EP+CG", "mix5", "CG")]
    assert order == sorted(order, reverse=True)
    # CG (30x) gains little in the paper (+4.3/+13%); an offloaded CG job needs over 2 h on
    # the board here, so none completes within the hour
    assert 0 <= gain(hexo_run, "CG", "X3P") < 15


def test_two_servers_double_throughput_at_equal_efficiency(hexo_run):
    for jobs in paper.JOB_SETS:
        assert gain(hexo_run, jobs, "2X") == pytest.approx(100.0)
        assert gain(hexo_run, jobs, "2X", "jobs_per_kj_gain_pct") == pytest.approx(0.0)


def test_energy_gain_is_throughput_gain_times_power_ratio(hexo_run):
    m = table1_models()
    x, p = m["xeon-e5-2637"].watts(3), m["potato"].watts(3)
    for jobs in ("EP", "EP+CG", "mix5"):
        for setup, boards in (("XP", 1), ("X3P", 3)):
            expect = 100 * ((1 + gain(hexo_run, jobs, setup) / 100) * x / (x + boards * p) - 1)
            assert gain(hexo_run, jobs, setup, "jobs_per_kj_gain_pct") == pytest.approx(
                expect, abs=1.0)


def test_cost_aware_beats_hexo_on_mixes_and_matches_it_on_ep():
    sc = {k: v for k, v in __import__("hexo_sched.simulation", fromlist=["COMPARISONS"])
          .COMPARISONS.items() if k in ("EP", "EP+CG", "mix5", "FT+MG@10Mb/s")}
    cmp = compare_policies(sc, setups=("X", "X3P"), seeds=(0, 1, 2))["scenarios"]

    def g(name, pol):
        return cmp[name]["results"][pol]["X3P"]["throughput_gain_pct"]

    for name in ("EP+CG", "mix5", "FT+MG@10Mb/s"):
        assert g(name, "cost-aware") > g(name, "hexo") + 10, name
    assert g("EP", "cost-aware") == pytest.approx(g("EP", "hexo"), abs=5)


def test_experiment_output_is_json_with_gains(tmp_path):
    exp = run_experiment({"EP": ("EP",)}, ("X", "XP"), ("hexo", "cost-aware"), duration=1800)
    doc = json.loads(json.dumps(exp))
    row = doc["results"]["cost-aware"]["EP"]["XP"]
    assert {"throughput_gain_pct", "jobs_per_kj_gain_pct", "paper_throughput_gain_pct",
            "jobs_per_kj", "energy"} <= set(row)
    assert doc["assumptions"] and all(a["why"] for a in doc["assumptions"])
    out = tmp_path / "gains.png"
    plot(exp, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_simulate_json(capsys):
    assert cli_main(["simulate", "--jobs", "EP,CG", "--setup", "XP", "--duration", "30m",
                     "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["results"]["hexo"]["EP+CG"]) == {"X", "XP"}
    assert doc["duration_s"] == 1800


def test_cli_simulate_at_scale_reports_decision_cost(capsys):
    assert cli_main(["simulate", "--boards", "6", "--queued", "40", "--server-cores", "4",
                     "--jobs", "mix5", "--duration", "20m", "--policy", "both", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["boards"], doc["queued"], doc["server_cores"]) == (6, 40, 4)
    for pol in ("hexo", "cost-aware"):
        r = doc["results"][pol]
        d = r["decision_ms"]
        assert d["count"] > 40 and 0 <= d["p50"] <= d["p99"] <= d["max"]
        assert r["jobs_completed"] > 0 and r["migrations"] > 0


def test_scale_cluster_keeps_its_invariants_with_a_long_queue():
    from hexo_sched.simulation import build_scale_cluster
    for pol in ("hexo", "cost-aware"):
        sim = Simulation(build_scale_cluster(8, 6), paper.JOB_SETS["mix5"], pol, duration=900,
                         queue_depth=300, check=True)
        r = sim.run()
        assert len(sim.state.queue) == 300 and r["migrations"] > 0
