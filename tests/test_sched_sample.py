"""Derived slowdown estimates (hexo_sched.sample): both builds of an image timed to the same
migration point, for images that no calibration row names."""

from __future__ import annotations

import json
import math
import sys
import threading
import time

import pytest

from conftest import needs_kvm, run

pytestmark = [needs_kvm, pytest.mark.slow]

#: Workloads of the calibration corpus at class W whose runs pass migration points within the
#: sample's budget and take long enough on KVM to time (KNR.W ends in 7 ms).
ACCURACY_RUNS = ("npb-ep", "npb-cg", "spmv", "stream", "jacobi2d", "nbody", "lcs", "sort",
                 "vla", "gemm")


def sample(image, *args, budget: float = 3.0) -> dict:
    p = run([sys.executable, "-m", "hexo_sched.sample", "--budget", budget, image, *args],
            timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_derived_estimates_agree_with_the_measured_slowdowns(images):
    """The sample's slowdown for calibrated workloads, against the emulated board's measured
    slowdown (whole runs, in the corpus dataset) and the calibration-row estimate (the fitted
    model with the row's own counts, which an operator's program does not have). The bound:
    for these ten, three runs on this loaded machine put 9 (of 9 timed), 9 and 9 within
    30 % of the measured slowdown (the worst: JACOBI2D, -21 % in one run, +36 % in another;
    README); 8 of 10 within 30 % is what the calibration model itself manages held out (12
    of 15 class W runs, median error 14 %, SPMV -53 %, IS +47 %)."""
    from hexo_sched.calibrate import workload_of
    from hexo_sched.estimates import Estimator
    from hexo_sched.model import CORPUS_DATASET, load_dataset
    rows = load_dataset(CORPUS_DATASET).labelled("emulated-aarch64")
    calibrated = Estimator(CORPUS_DATASET, CORPUS_DATASET, ["emulated-aarch64"])
    report, close = [], 0
    for r in rows[rows["npb_class"] == "W"].itertuples():
        if workload_of(r.benchmark) not in ACCURACY_RUNS:
            continue
        derived = sample(images.get(workload_of(r.benchmark), "W"))
        assert "slowdown" in derived, (r.benchmark, derived)
        assert derived["source"].startswith("derived (a timed sample, not hardware counters)")
        model = calibrated.estimate(r.benchmark, "W")[0]["emulated-aarch64"]
        error = derived["slowdown"] / r.slowdown - 1
        close += abs(error) <= 0.30
        report.append(f"{r.benchmark}.W measured {r.slowdown:.3g}x derived "
                      f"{derived['slowdown']:.3g}x ({100 * error:+.0f} %) calibration model "
                      f"{model:.3g}x")
    print("\n".join(report))
    assert len(report) == len(ACCURACY_RUNS), report
    assert close >= 8, report


def test_a_guest_that_crashes_ends_early_or_reaches_no_point_gets_no_estimate(images):
    """Each failure is one sentence, never a traceback."""
    chatty = images.program("chatty", migratable=True)
    crashed = sample(chatty, "crash", "3", budget=1.0)
    assert crashed["error"].startswith("the aarch64 build crashed after migration point"), \
        crashed
    short = sample(chatty, "format", "2", budget=1.0)
    assert short["error"].startswith("the x86-64 build ran ") and \
        short["error"].endswith("too short to time"), short
    spinning = sample(chatty, "spin", "0", budget=0.5)
    assert spinning["error"].startswith("the aarch64 build passed no migration point in "), \
        spinning
    failed = sample(images.program("exit_status", auto_points=True), "3", budget=1.0)
    assert failed["error"] == "the aarch64 build exited with status 3 after migration point 1"
    pointless = sample(images.program("exit_status", migratable=True), "0", budget=1.0)
    assert pointless["error"] == "the aarch64 build has no hexo_check_migrate: no migration " \
        "points", pointless


def test_a_file_that_is_no_image_gets_no_estimate(tmp_path):
    bad = tmp_path / "bad.hexo"
    bad.write_bytes(b"not an image")
    out = sample(bad, budget=0.5)
    assert "bad.hexo" in out["error"] and "\n" not in out["error"]


def test_the_same_image_and_arguments_are_sampled_once(images, tmp_path):
    """The second request is answered from the cache in the state directory: the very same
    CPU times, which a second sampling would not reproduce."""
    from hexo_sched.sample import Sampler
    image = str(images.get("npb-ep", "S"))
    results, arrived = {}, threading.Event()

    def done(job, result):
        results[job] = result
        if len(results) == 3:
            arrived.set()

    sampler = Sampler(tmp_path / "estimates", done, budget_s=1.0)
    try:
        sampler.request("job-1", image, [], 256 << 20)
        sampler.request("job-2", image, [], 256 << 20)
        sampler.request("job-3", image, ["other"], 256 << 20)
        assert arrived.wait(300), results
    finally:
        sampler.close()
    assert results["job-1"] == results["job-2"] and "slowdown" in results["job-1"]
    assert math.isclose(results["job-1"]["slowdown"],
                        results["job-1"]["board_s"] / results["job-1"]["server_s"])
    assert results["job-3"] != results["job-1"]        # other arguments: sampled again
    assert len(list((tmp_path / "estimates").glob("*.json"))) == 2


def test_a_restarted_daemon_samples_a_job_still_waiting_for_its_estimate(tmp_path, images):
    """A daemon killed while it sampled a job's image left the job with the 'being sampled'
    sentence: the next one samples it again, and the estimate reaches the policy."""
    from hexo_sched import daemon as schedd
    from hexo_sched.config import load
    from hexo_sched.jobstore import JobRecord, Segment, StateFile, dump
    from hexo_sched.policy import ClusterState, HexoPolicy, Job
    sieve = str(images.program("prime_sieve", auto_points=True))
    cfg_path = tmp_path / "cluster.toml"
    cfg_path.write_text(
        '[daemon]\nstate_dir = "state"\nmetrics_port = 0\n\n'
        '[server]\nname = "server"\ncores = 1\nram = "2G"\nwork_dir = "work"\nrun_dir = "run"\n'
        '\n[[board]]\nname = "board0"\ncores = 1\nram = "1G"\nhost = "127.0.0.1"\nport = 1\n'
        f'key = "{tmp_path}/no-key"\nknown_hosts = "{tmp_path}/no-hosts"\n'
        'work_dir = "b/work"\nrun_dir = "b/run"\n')
    cfg = load(cfg_path)
    st = ClusterState([m.policy_machine() for m in cfg.machines])
    HexoPolicy(st).on_submit(Job("job-1", 1, 256), now=1.0)
    rec = JobRecord("job-1", sieve, "", None, "no estimate: the image names no known "
                    f"benchmark; {schedd.SAMPLING}", args=["10000000", "100"])
    rec.segments.append(Segment(0, "server", "run", 1.0))
    cfg.state_dir.mkdir()
    StateFile(cfg.state_dir / "state.json").save(dump(st, {"job-1": rec}, [], 2))
    d = schedd.Daemon(cfg)
    d.start()
    try:
        deadline = time.time() + 300
        while d.records["job-1"].estimate_source.endswith(schedd.SAMPLING):
            assert time.time() < deadline, "no estimate arrived"
            time.sleep(0.2)
    finally:
        d.stop()
    source = d.records["job-1"].estimate_source
    estimate = d.state.jobs["job-1"].slowdown["emulated-aarch64"]
    assert source.startswith(f"emulated-aarch64 {estimate:.3g}x; derived"), source
    assert len(list((cfg.state_dir / "estimates").glob("*.json"))) == 1
