"""Cost of one scheduling decision vs queue size (pyperf), on the policy objects the daemon runs:

    .venv/bin/python bench/sched_decisions.py [-o results.json] [pyperf options]

A cluster of one server with 32 job cores and 100 Potato boards (300 board cores) is simulated
for 10 minutes with the queue held at 100, 1,000 and 10,000 jobs, until servers and boards are
full. From that state one event is timed: the oldest job on the server finishes (a queued job
starts there, and the policy looks for the next offload), on a fresh copy each time. The time
is the CPU time of the deciding thread (the daemon's machine may be busy with other work). Targets,
from side-by-side measurements in this run: a decision at 1,000 queued <= 10 ms and at 10,000
<= 50 ms, and the 10,000-job decision no more than 2x the 100-job one (cost independent of
queue length).
"""

from __future__ import annotations

import functools
import gc
import pickle
import sys
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scheduler"))

from hexo_sched import paper  # noqa: E402
from hexo_sched.simulation import Simulation, build_scale_cluster  # noqa: E402

QUEUED = (100, 1000, 10000)
POLICIES = ("hexo", "cost-aware")
TARGET_MS = {1000: 10.0, 10000: 50.0}


@functools.cache
def steady_state(policy: str, queued: int) -> tuple[bytes, str, float]:
    """The pickled policy after 10 simulated minutes, the job to finish, and when."""
    sim = Simulation(build_scale_cluster(100), paper.JOB_SETS["mix5"], policy,
                     queue_depth=queued)
    sim.warm_up(600.0)
    server = sim.state.servers[0].name
    job = sim.state.running_on(server)[0].id
    return pickle.dumps(sim.policy), job, sim.env.now + 1.0


def time_finish(loops: int, policy: str, queued: int) -> float:
    """Built in the worker that runs this benchmark only; the garbage of unpickling is
    collected before the clock starts."""
    snapshot, job, now = steady_state(policy, queued)
    total = 0.0
    for _ in range(loops):
        pol = pickle.loads(snapshot)
        gc.collect()
        t0 = time.thread_time()
        pol.on_job_finished(job, now)
        total += time.thread_time() - t0
    return total


def main() -> None:
    # every loop unpickles a fresh state (untimed): a fixed, small loop count keeps runs short
    runner = pyperf.Runner(values=3, processes=3, loops=20)
    runner.metadata["description"] = __doc__.split("\n")[0]
    results = {}
    for policy in POLICIES:
        for queued in QUEUED:
            results[policy, queued] = runner.bench_time_func(
                f"decision {policy} {queued} queued", time_finish, policy, queued)
    if runner.args.worker or not all(results.values()):
        return
    for policy in POLICIES:
        ms = {q: results[policy, q].mean() * 1000 for q in QUEUED}
        ratio = ms[QUEUED[-1]] / ms[QUEUED[0]]
        print(f"{policy}: " + ", ".join(f"{q} queued {ms[q]:.2f} ms" for q in QUEUED)
              + f"; {QUEUED[-1]}/{QUEUED[0]} = {ratio:.2f}x (target <= 2x); "
              + ", ".join(f"{q}: {'ok' if ms[q] <= t else 'OVER'} (<= {t:g} ms)"
                          for q, t in TARGET_MS.items()))


if __name__ == "__main__":
    main()
