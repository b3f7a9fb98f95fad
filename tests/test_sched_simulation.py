"""The simulated cluster: invariants under random clusters and workloads, HEXO's §5.2 numbers,
and where our policy beats HEXO's."""

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hexo_sched import paper
from hexo_sched.cli import main as cli_main
from hexo_sched.energy import table1_models
from hexo_sched.policy import JobState, Machine, Migrate, Run
from hexo_sched.simulation import (JobProfile, Simulation, fluid_bound, paper_profiles, plot,
                                   policy_claim, run_experiment, run_setups)


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


def gain(res, jobs, setup, key="work_gain_pct"):
    return res[jobs][setup][key]


def steady_state_gain(benchmark, boards):
    """The mechanism, by hand: a board core does c/(s b) of a loaded server core's work (c: the
    server's contention, s: the board slowdown measured alone, b: the busy board's
    contention); 3 cores a machine."""
    p = paper_profiles()[benchmark]
    return 100.0 * boards * p.server_contention / (p.slowdown * p.board_contention)


def test_single_benchmark_rows_follow_the_mechanism(hexo_run):
    # within 5 points of the steady-state value (migrations cost the rest)
    for bench in ("EP", "CG"):
        for setup, boards in (("XP", 1), ("X3P", 3)):
            assert gain(hexo_run, bench, setup) == pytest.approx(
                steady_state_gain(bench, boards), abs=5.0), (bench, setup)


#: Rows of the paper's §5.2 figures the simulator does not reproduce within 10 points: none
#: since the busy-board contention (derived from {EP} XP) is modelled; before it, the X3P rows
#: of EP, EP+CG and mix5 were 11-31 points above the paper.
OUTSIDE_10_POINTS = set()


def test_rows_against_the_paper_within_10_points_except_the_reported_ones(hexo_run):
    outside = set()
    for jobs in paper.JOB_SETS:
        for setup in ("XP", "X3P"):
            for key, published in (("work_gain_pct", paper.THROUGHPUT_GAIN_PCT),
                                   ("work_per_kj_gain_pct", paper.JOBS_PER_KJ_GAIN_PCT)):
                want = published[jobs][setup]
                if want is not None and abs(gain(hexo_run, jobs, setup, key) - want) > 10:
                    outside.add((jobs, setup, key))
    assert outside == OUTSIDE_10_POINTS


def test_cg_rows_come_from_contention_and_its_slowdown():
    # {CG} XP gave the contention; X3P is then a prediction, within 2 points of the paper
    res = run_experiment({"CG": ("CG",)}, ("X", "XP", "X3P"))["results"]["hexo"]
    assert gain(res, "CG", "XP") == pytest.approx(paper.THROUGHPUT_GAIN_PCT["CG"]["XP"], abs=1)
    assert gain(res, "CG", "X3P") == pytest.approx(paper.THROUGHPUT_GAIN_PCT["CG"]["X3P"],
                                                   abs=2)
    # a different CG slowdown gives a different answer, outside those bounds
    slow = {b: dataclasses.replace(p, slowdown=100.0 if b == "CG" else p.slowdown)
            for b, p in paper_profiles().items()}
    rows = run_setups(("CG",), ("X", "XP", "X3P"), profiles=slow)
    assert gain({"CG": rows}, "CG", "XP") < paper.THROUGHPUT_GAIN_PCT["CG"]["XP"] - 2
    assert gain({"CG": rows}, "CG", "X3P") < paper.THROUGHPUT_GAIN_PCT["CG"]["X3P"] - 5


def test_work_gains_do_not_depend_on_the_assumed_job_length():
    short = run_experiment({"mix5": paper.JOB_SETS["mix5"]}, ("X", "XP"), work_s=30.0)
    long = run_experiment({"mix5": paper.JOB_SETS["mix5"]}, ("X", "XP"), work_s=120.0)
    a = short["results"]["hexo"]["mix5"]["XP"]["work_gain_pct"]
    b = long["results"]["hexo"]["mix5"]["XP"]["work_gain_pct"]
    assert a == pytest.approx(b, abs=3.0)


def test_two_servers_double_throughput_at_equal_efficiency():
    # over 10 h: two servers draw different subsequences of a mix from one queue, and with
    # jobs of unequal lengths (CG's contention) where the hour ends matters by ~0.2 points
    res = run_experiment(setups=("X", "2X"), duration=36000.0)["results"]["hexo"]
    for jobs in paper.JOB_SETS:
        assert gain(res, jobs, "2X") == pytest.approx(100.0, abs=0.1)
        assert gain(res, jobs, "2X", "work_per_kj_gain_pct") == pytest.approx(0.0, abs=0.1)


def test_energy_gain_is_throughput_gain_times_power_ratio(hexo_run):
    m = table1_models()
    x, p = m["xeon-e5-2637"].watts(3), m["potato"].watts(3)
    for jobs in ("EP", "EP+CG", "mix5"):
        for setup, boards in (("XP", 1), ("X3P", 3)):
            expect = 100 * ((1 + gain(hexo_run, jobs, setup) / 100) * x / (x + boards * p) - 1)
            assert gain(hexo_run, jobs, setup, "work_per_kj_gain_pct") == pytest.approx(
                expect, abs=1.0)


def test_policy_claim_at_steady_state_over_seeds():
    variants = ("hexo", "cost-aware", "cost-aware, no backfill", "cost-aware, no direct start",
                "cost-aware, no extras")
    claim = policy_claim(horizons_h=(4,), seeds=tuple(range(5)), variants=variants)
    r = claim["results"]["4h"]
    (vs_hexo, ci), ours = r["cost-aware"]["vs_hexo_pct"], r["cost-aware"]["work_gain_pct"]
    # ours does at least 10 % more work than HEXO's, paired by seed, beyond the seeds' spread
    assert vs_hexo >= 10.0 and vs_hexo - ci > 9.0, (vs_hexo, ci)
    # and so does every seed: the gain is no one seed's luck
    assert min(a / b for a, b in zip(r["cost-aware"]["work"], r["hexo"]["work"])) > 1.09
    # which is as much as any policy can: the fluid bound, passed only by the few slow jobs
    # left queued at the end (backfilling runs later jobs first on boards)
    assert claim["bound_work_gain_pct"] - 1.0 < ours < claim["bound_work_gain_pct"] + 1.0
    # with more work per kJ too
    assert r["cost-aware"]["work_per_kj_gain_pct"][0] > r["hexo"]["work_per_kj_gain_pct"][0] + 10
    # each extra adds work: backfilling a free board core from the queue ~3 points, direct
    # starts more; with its extras off it is HEXO's policy again
    assert r["cost-aware, no backfill"]["vs_hexo_pct"][0] < vs_hexo - 2.0
    assert r["cost-aware, no direct start"]["vs_hexo_pct"][0] < vs_hexo - 5.0
    assert r["cost-aware, no extras"]["vs_hexo_pct"][0] == pytest.approx(0.0, abs=2.0)


def test_policy_gain_survives_wrong_estimates_and_other_job_lengths():
    # slowdown estimates off by up to +/-40 % and jobs twice as long: still +10 % over HEXO's,
    # on every seed (the policy is not tuned to the exact inputs of the claim)
    jobs, profiles = paper.JOB_SETS["mix5"], paper_profiles(120.0)
    for seed in range(3):
        work = {pol: Simulation("X3P", jobs, pol, duration=4 * 3600.0, profiles=profiles,
                                seed=seed, length_jitter=0.1, estimate_error=0.4).run()["work_s"]
                for pol in ("hexo", "cost-aware")}
        assert work["cost-aware"] / work["hexo"] > 1.09, seed


def test_fluid_bound_is_the_mechanism_by_hand():
    # {EP}: every job may go to a board, each board core doing 1/(s b) = 1/4 of a server
    # core's work: 3 server + 9 board cores do 3 + 9/4 = 5.25 server cores' work, +75 %
    assert fluid_bound(("EP",), "X3P") == pytest.approx(75.0)
    assert fluid_bound(("EP",), "XP") == pytest.approx(25.0)
    assert fluid_bound(("EP",), "2X") == pytest.approx(100.0)
    # {CG}: c / (s b) of a loaded server core per board core
    assert fluid_bound(("CG",), "X3P") == pytest.approx(steady_state_gain("CG", 3))
    # a mix cannot gain more than its best job alone, nor less than its worst
    mix = fluid_bound(paper.JOB_SETS["mix5"], "X3P")
    assert fluid_bound(("CG",), "X3P") < mix < fluid_bound(("EP",), "X3P")


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


def test_estimate_error_shows_in_the_results():
    # over 10 h: a CG job offloaded by mistake needs 40 min on a board
    exact = run_experiment({"EP+CG": ("EP", "CG")}, ("X", "XP"),
                           duration=36000.0)["results"]["hexo"]
    # told EP is 60x (20 times its slowdown), HEXO offloads CG instead, which helps less
    wrong = run_experiment({"EP+CG": ("EP", "CG")}, ("X", "XP"), duration=36000.0,
                           estimate_bias={"EP": 20.0})["results"]["hexo"]
    assert gain(wrong, "EP+CG", "XP") < gain(exact, "EP+CG", "XP") - 10


def test_model_bias_is_the_held_out_error_per_benchmark():
    from hexo_sched.cli import model_bias
    from hexo_sched.model import lobo, load_dataset
    from hexo_sched.model import EMULATED_DATASET
    bias = model_bias(str(EMULATED_DATASET))
    rows = load_dataset(EMULATED_DATASET).labelled("emulated-aarch64")
    held = lobo(rows, "emulated-aarch64")
    cg = held[held["benchmark"] == "CG"]
    ratios = (cg["predicted_clipped"] / cg["slowdown"]).to_numpy()
    assert bias["CG"] == pytest.approx(float(np.exp(np.log(ratios).mean())))
    assert set(bias) <= set(paper.POTATO_SLOWDOWN) | set(paper.POTATO_SLOWDOWN_FIG1)


def test_results_name_the_rows_the_paper_disagrees_with():
    from hexo_sched.simulation import format_results
    text = format_results(run_experiment({"EP": ("EP",)}, ("X", "XP", "X3P")))
    assert "more than 10 points" not in text
    # EP as fast on a board as on the server (slowdown 1): its X3P rows are far off
    text = format_results(run_experiment({"EP": ("EP",)}, ("X", "XP", "X3P"),
                                         slowdown_scale={"EP": 1 / 3}))
    far = next(line for line in text.splitlines() if line.startswith("more than 10 points"))
    assert "EP X3P work +" in far and "EP XP work +" in far


def test_model_difference_reports_what_wrong_slowdowns_change():
    from hexo_sched.simulation import format_model_difference, model_difference
    sets = {"EP+CG": ("EP", "CG")}
    exact = model_difference({}, sets, ("X", "XP"), duration=36000.0)["rows"]["EP+CG XP"]
    assert exact["policy told the model minus true"] == 0.0
    assert exact["simulated from the model minus true"] == 0.0
    # a model that says EP is 20 times slower than it is: HEXO offloads CG instead (told), and
    # a simulation that believed it would have EP crawl on the boards (simulated)
    d = model_difference({"EP": 20.0}, sets, ("X", "XP"), duration=36000.0)
    row = d["rows"]["EP+CG XP"]
    assert row["true work_gain_pct"] == exact["true work_gain_pct"]
    assert row["policy told the model minus true"] < -10
    assert row["simulated from the model minus true"] < -10
    assert "EP x20" in format_model_difference(d)


def test_cli_simulate_with_the_model(capsys):
    from hexo_sched.model import CORPUS_DATASET
    assert cli_main(["simulate", "--jobs", "EP+CG", "--setup", "X,XP", "--duration", "600",
                 "--model", str(CORPUS_DATASET), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    d = out["model_difference"]
    assert set(d["bias"]) >= {"EP", "CG"} and list(d["rows"]) == ["EP+CG XP"]


def test_a_fixed_batch_runs_to_its_last_job():
    from hexo_sched.simulation import Simulation
    profiles = paper_profiles()
    r = Simulation("X3P", ("EP", "CG"), "hexo", duration=1e6, profiles=profiles, seed=3,
                   length_jitter=0.1, batch=40, check=True).run()
    assert r["jobs"] == 40
    # every job's whole length was done, and no faster than all cores working flat out
    # (3 server cores at full speed, 9 board cores at 1/3 of it for EP)
    assert r["work_s"] == pytest.approx(40 * 60.0, rel=0.1)
    assert r["makespan_s"] >= r["work_s"] / (3 + 9 / 3.0)
    with pytest.raises(RuntimeError, match="not done after 100 s"):
        Simulation("X", ("EP",), "hexo", duration=100.0, profiles=profiles, batch=40).run()


def test_makespan_comparison_is_paired_by_seed():
    from hexo_sched.simulation import Simulation, compare_makespan, format_makespan
    c = compare_makespan({"EP+CG": ("EP", "CG")}, batch=30, seeds=(0, 1))
    row = c["mixes"]["EP+CG"]
    runs = {pol: [Simulation("X3P", ("EP", "CG"), pol, duration=1e7, seed=s, batch=30,
                             length_jitter=0.1).run()["makespan_s"] for s in (0, 1)]
            for pol in ("hexo", "cost-aware")}
    rel = [100 * (a / b - 1) for a, b in zip(runs["cost-aware"], runs["hexo"])]
    assert row["cost-aware"]["makespan_vs_hexo_pct"][0] == pytest.approx(np.mean(rel))
    assert row["hexo"]["makespan_s"][0] == pytest.approx(np.mean(runs["hexo"]))
    assert "EP+CG" in format_makespan(c)


def bursts(min_residence_s: float, every: float = 600.0, seed: int = 0) -> dict:
    """Two hours of EP arriving in bursts of one more job than the server has cores, every
    `every` seconds: each burst offloads a job and each lull brings one back."""
    sim = Simulation("XP", ("EP",), "hexo", duration=7200.0, queue_depth=0, check=True,
                     seed=seed, length_jitter=0.3,
                     policy_kwargs={"idle_after_s": 30, "min_residence_s": min_residence_s})
    size = 1 + sum(m.usable_cores for m in sim.machines if m.kind == "server")

    def arrivals():
        while True:
            for _ in range(size):
                sim.event(sim.policy.on_submit, sim.new_job())
            yield sim.env.timeout(every)
    sim.env.process(arrivals())
    return sim.run()


def test_minimum_residence_halves_the_moves_of_bursty_arrivals_at_equal_work():
    """Hysteresis in simulation: with a job kept where it arrived for 300 s, half the
    migrations (and half the data moved) do the same work."""
    plain, damped = bursts(0.0), bursts(300.0)
    assert plain["migrations"] >= 2 * (plain["jobs"] // 4)      # a move out and back per burst
    assert damped["migrations"] <= plain["migrations"] / 2
    assert damped["transferred_mb"] <= plain["transferred_mb"] / 2
    assert damped["jobs"] == plain["jobs"]
    assert damped["work_s"] >= plain["work_s"] * 0.99
