"""Scheduler policies on small hand-made clusters: decisions, reasons, transitions, invariants."""

import functools
import os
import subprocess
import sys

import pytest

from hexo_sched.policy import (ClusterState, CostAwarePolicy, HexoPolicy, InvariantError, Job,
                               JobState, Machine, Migrate, Run, TransitionError, Wait,
                               check_invariants)


def cluster(server_cores=2, boards=1, board_cores=2, board_ram=1024, link=100.0):
    ms = [Machine("srv", "server", "xeon", server_cores + 1, 64 * 1024, reserved_cores=1)]
    ms += [Machine(f"b{i}", "board", "potato", board_cores + 1, board_ram, reserved_cores=1,
                   link_mbit=link, checkpoint_mb_s=10, restore_mb_s=30) for i in range(boards)]
    return ClusterState(ms)


def job(jid, bench="EP", mem=256, ckpt=10.0, **kw):
    return Job(jid, 1, mem, bench, checkpoint_mb=ckpt, **kw)


def only(actions, kind):
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]


def fill_server(pol, specs, now=0.0):
    """Submit and start jobs on the server, then give each its slowdown estimate."""
    for jid, bench, _ in specs:
        acts = pol.on_submit(job(jid, bench), now)
        assert only(acts, Run) == Run(jid, "srv", only(acts, Run).reason)
        check_invariants(pol.state)
    for jid, _, s in specs:
        pol.on_estimate(jid, "potato", s, now + 1)
        check_invariants(pol.state)


def test_job_runs_on_server_when_it_fits():
    pol = HexoPolicy(cluster())
    acts = pol.on_submit(job("a"), 0.0)
    run = only(acts, Run)
    assert (run.job, run.machine) == ("a", "srv")
    assert "fits on server srv" in run.reason and "2 cores" in run.reason
    assert pol.state.jobs["a"].state is JobState.RUNNING
    check_invariants(pol.state)


def test_full_server_offloads_lowest_slowdown_then_runs_next_job():
    pol = HexoPolicy(cluster())
    fill_server(pol, [("cg", "CG", 30.0), ("ep", "EP", 3.0)])
    acts = pol.on_submit(job("new"), 2.0)
    mig = only(acts, Migrate)
    assert (mig.job, mig.src, mig.dst) == ("ep", "srv", "b0")
    assert "lowest estimated slowdown" in mig.reason and "3x" in mig.reason
    assert not [a for a in acts if isinstance(a, Run)], "J must wait for the checkpoint"
    check_invariants(pol.state)
    # another event before the checkpoint is written must not offload a second victim
    acts = pol.on_tick(2.5)
    assert only(acts, Wait).reason == "new waits for ep to leave srv"
    acts = pol.on_source_released("ep", 3.0)
    assert only(acts, Run) == Run("new", "srv", only(acts, Run).reason)
    check_invariants(pol.state)
    assert pol.on_migration_finished("ep", 5.0) == []
    assert pol.state.jobs["ep"].location == "b0"
    check_invariants(pol.state)


def test_no_room_anywhere_means_wait_with_reason():
    pol = HexoPolicy(cluster(boards=0))
    fill_server(pol, [("a", "EP", 3.0), ("b", "EP", 3.0)])
    acts = pol.on_submit(job("c"), 2.0)
    assert "no running job can be offloaded" in only(acts, Wait).reason
    assert pol.state.queue == ["c"]
    acts = pol.on_job_finished("a", 10.0)
    assert only(acts, Run).job == "c"
    check_invariants(pol.state)


def test_jobs_without_estimate_are_not_candidates():
    pol = HexoPolicy(cluster())
    pol.on_submit(job("a"), 0.0)
    pol.on_submit(job("b"), 0.0)
    acts = pol.on_submit(job("c"), 0.5)
    assert isinstance(acts[-1], Wait)
    acts = pol.on_estimate("b", "potato", 4.0, 1.0)
    assert only(acts, Migrate).job == "b"


def test_board_ram_is_a_hard_cap():
    pol = HexoPolicy(cluster(board_ram=300))
    for jid, mem in (("big", 512), ("small", 256)):
        pol.on_submit(job(jid, mem=mem), 0.0)
    pol.on_estimate("big", "potato", 2.0, 1.0)
    pol.on_estimate("small", "potato", 5.0, 1.0)
    mig = only(pol.on_submit(job("next"), 2.0), Migrate)
    assert mig.job == "small", "the 2x job needs 512 MB, more than the board has"
    check_invariants(pol.state)


def test_ties_go_to_the_oldest_job():
    pol = HexoPolicy(cluster())
    pol.on_submit(job("old"), 0.0)
    pol.on_submit(job("young"), 5.0)
    pol.on_estimate("young", "potato", 3.0, 6.0)
    pol.on_estimate("old", "potato", 3.0, 6.0)
    assert only(pol.on_submit(job("next"), 7.0), Migrate).job == "old"


def test_idle_server_brings_back_largest_speedup_first():
    pol = HexoPolicy(cluster(server_cores=2, board_cores=2), idle_after_s=60)
    fill_server(pol, [("ep", "EP", 3.0), ("ua", "UA", 10.0)])
    for t, new, victim in ((2.0, "x1", "ep"), (4.0, "x2", "ua")):
        assert only(pol.on_submit(job(new), t), Migrate).job == victim
        pol.on_source_released(victim, t + 0.1)
        pol.on_migration_finished(victim, t + 1.0)
    # the queue emptied when x2 started (4.1 s): the server frees up, but not for long enough
    assert pol.on_job_finished("x1", 20.0) == []
    assert pol.on_job_finished("x2", 21.0) == []
    assert pol.on_tick(64.0) == []
    acts = pol.on_tick(64.2)
    migs = [a for a in acts if isinstance(a, Migrate)]
    assert [m.job for m in migs] == ["ua", "ep"]
    assert all(m.dst == "srv" for m in migs)
    assert "largest expected speedup (10x)" in migs[0].reason
    check_invariants(pol.state)


def test_transitions_reject_impossible_events():
    pol = HexoPolicy(cluster())
    pol.on_submit(job("a"), 0.0)
    with pytest.raises(TransitionError):
        pol.on_migration_finished("a", 1.0)
    pol.state.begin_migration("a", "b0", "test")
    with pytest.raises(TransitionError):
        pol.state.begin_migration("a", "b0", "twice")
    with pytest.raises(TransitionError):
        pol.on_job_finished("a", 2.0)
    with pytest.raises(TransitionError):
        pol.on_tick(-1.0)
    with pytest.raises(TransitionError):
        pol.on_submit(job("a"), 3.0)


def test_failed_migration_returns_job_to_its_source_or_queue():
    st = cluster()
    pol = HexoPolicy(st)
    pol.on_submit(job("a"), 0.0)
    st.begin_migration("a", "b0", "test")
    pol.on_migration_failed("a", 1.0)
    assert st.jobs["a"].state is JobState.RUNNING and st.jobs["a"].location == "srv"
    st.begin_migration("a", "b0", "test")
    st.release_source("a")
    st.abort_migration("a")
    assert st.queue == ["a"] and st.jobs["a"].state is JobState.QUEUED
    check_invariants(st)


def test_a_job_that_ends_before_its_checkpoint_is_done_and_never_moved_again():
    pol = HexoPolicy(cluster())
    fill_server(pol, [("cg", "CG", 30.0), ("ep", "EP", 3.0)])
    mig = only(pol.on_submit(job("new"), 2.0), Migrate)
    assert mig.job == "ep"
    acts = pol.on_migration_abandoned("ep", 3.0)
    assert pol.state.jobs["ep"].state is JobState.DONE
    assert not [a for a in acts if isinstance(a, Migrate) and a.job == "ep"], acts
    assert only(acts, Run) == Run("new", "srv", only(acts, Run).reason)
    check_invariants(pol.state)


def test_invariant_checker_catches_oversubscription_and_double_placement():
    st = cluster(server_cores=1)
    st.submit(job("a"))
    st.submit(job("b"))
    st.start("a", "srv")
    st.queue.remove("b")
    b = st.jobs["b"]
    b.state, b.location = JobState.RUNNING, "srv"
    with pytest.raises(InvariantError, match="cores used"):
        check_invariants(st)
    b.location = "b0"
    # consistent as a placement, but edited behind the transitions: the indexes disagree
    with pytest.raises(InvariantError, match="b0: holder index"):
        check_invariants(st)
    st._reindex()
    check_invariants(st)
    b.state = JobState.QUEUED
    with pytest.raises(InvariantError):
        check_invariants(st)


def test_invariant_checker_catches_a_queue_index_out_of_step():
    st = cluster()
    for jid, bench in (("a", "EP"), ("b", "CG"), ("c", "EP")):
        st.submit(job(jid, bench))
    assert [j.id for j in st.first_queued_per_benchmark()] == ["a", "b"]
    st.queue.remove("a")
    st.queue.append("a")
    with pytest.raises(InvariantError, match="queued-by-benchmark index"):
        check_invariants(st)
    st._reindex()
    assert [j.id for j in st.first_queued_per_benchmark()] == ["b", "c"]
    check_invariants(st)


def test_invariant_checks_survive_python_O(tmp_path):
    code = ("from hexo_sched.policy import *\n"
            "st = ClusterState([Machine('s', 'server', 'x', 2, 1024)])\n"
            "st.submit(Job('a')); st.start('a', 's'); st.jobs['a'].location = None\n"
            "try:\n    check_invariants(st)\nexcept InvariantError as e:\n    print('caught', e)\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.stdout.startswith("caught s: holder index"), out.stderr


# -- our cost-aware policy ---------------------------------------------------------------------

def test_cost_aware_starts_a_known_image_directly_on_a_board():
    pol = CostAwarePolicy(cluster(server_cores=1))
    fill_server(pol, [("cg", "CG", 30.0)])
    pol.on_job_finished("cg", 100.0)       # learns CG's length: 100 s on the server
    pol.on_submit(job("ep1"), 100.0)
    pol.on_estimate("ep1", "potato", 3.0, 101.0)
    acts = pol.on_submit(job("ep2"), 102.0)
    run = only(acts, Run)
    assert (run.job, run.machine) == ("ep2", "b0")
    assert "no migration" in run.reason
    assert pol.state.jobs["ep2"].slowdown["potato"] == 3.0


def test_cost_aware_keeps_board_core_for_a_better_job():
    def setup(policy):
        pol = policy(cluster(server_cores=1, board_cores=1))
        fill_server(pol, [("cg1", "CG", 30.0)])
        pol.state.submit(job("cg2", "CG"))
        pol.state.submit(job("ep", "EP", slowdown={"potato": 3.0}))   # known from a past run
        return pol

    # HEXO offloads cg1 (30x) to run cg2; ours, looking at the head and the server only, keeps
    # the only board core for the queued EP
    assert only(setup(HexoPolicy).on_tick(3.0), Migrate).job == "cg1"
    wait = only(setup(functools.partial(CostAwarePolicy, backfill=False)).on_tick(3.0), Wait)
    assert wait.reason.startswith("cg2 waits") and "(ep)" in wait.reason


def test_cost_aware_backfills_a_free_board_core_and_the_head_keeps_its_place():
    pol = CostAwarePolicy(cluster(server_cores=1, board_cores=1))
    fill_server(pol, [("cg1", "CG", 30.0)])
    for jid, bench in (("cg2", "CG"), ("ua", "UA"), ("ep1", "EP"), ("ep2", "EP")):
        pol.state.submit(job(jid, bench))
    pol.learn_estimate(pol.state.jobs["ua"], "potato", 10.0)     # from earlier runs
    pol.learn_estimate(pol.state.jobs["ep1"], "potato", 3.0)
    # the board core goes to the first EP (3x), not to the head (CG, 30x) nor to UA (10x)
    run = only(pol.on_tick(3.0), Run)
    assert (run.job, run.machine) == ("ep1", "b0") and "ahead of cg2" in run.reason
    assert pol.state.queue == ["cg2", "ua", "ep2"]
    check_invariants(pol.state)
    # the server core that frees next is the head's
    run = only(pol.on_job_finished("cg1", 50.0), Run)
    assert (run.job, run.machine) == ("cg2", "srv")
    assert pol.state.queue == ["ua", "ep2"]
    check_invariants(pol.state)


def test_cost_aware_prefers_the_least_committing_of_equally_efficient_offloads():
    pol = CostAwarePolicy(cluster())
    fill_server(pol, [("w", "EP", 3.0)])
    pol.on_job_finished("w", 300.0)                   # EP takes 300 s
    pol.on_submit(job("early"), 300.0)
    pol.on_submit(job("late"), 400.0)
    pol.on_estimate("early", "potato", 3.0, 401.0)
    pol.on_estimate("late", "potato", 3.0, 401.0)
    mig = only(pol.on_submit(job("next"), 402.0), Migrate)
    # both buy ~0.33 work per board-second; 'early' has ~198 s left, 'late' ~299 s
    assert mig.job == "early" and "committed" in mig.reason


def test_cost_aware_skips_offload_when_a_server_job_ends_first():
    pol = CostAwarePolicy(cluster(), direct_start=False)
    pol.state.machines["srv"].checkpoint_mb_s = 10.0  # a 500 MB checkpoint takes 50 s
    fill_server(pol, [("w", "EP", 3.0)])
    pol.on_job_finished("w", 100.0)                   # EP takes 100 s
    pol.on_submit(job("a", ckpt=500.0), 100.0)
    pol.on_submit(job("b", ckpt=500.0), 150.0)
    pol.on_estimate("a", "potato", 3.0, 190.0)
    pol.on_estimate("b", "potato", 3.0, 190.0)
    acts = pol.on_submit(job("c", ckpt=500.0), 191.0)
    assert "a should end on srv in 9.0 s" in only(acts, Wait).reason


def offloaded_then_idle(ckpt, idle_at):
    pol = CostAwarePolicy(cluster(), idle_after_s=10, direct_start=False)
    fill_server(pol, [("w", "EP", 3.0)])
    pol.on_job_finished("w", 100.0)                   # EP takes 100 s
    pol.on_submit(job("a", ckpt=ckpt, work_s=100.0), 100.0)
    pol.on_submit(job("b", mem=2000), 100.0)          # too big for the board
    pol.on_estimate("a", "potato", 3.0, 101.0)
    pol.on_estimate("b", "potato", 3.0, 101.0)
    assert only(pol.on_submit(job("c"), 101.0), Migrate).job == "a"
    pol.on_source_released("a", 102.0)
    pol.on_migration_finished("a", 103.0)
    return pol, pol.on_job_finished("b", idle_at) + pol.on_job_finished("c", idle_at)


def test_cost_aware_brings_back_a_job_when_that_ends_it_sooner():
    pol, acts = offloaded_then_idle(ckpt=10.0, idle_at=201.0)
    mig = only(acts, Migrate)
    assert mig.job == "a" and mig.dst == "srv" and "s sooner" in mig.reason
    check_invariants(pol.state)


def test_cost_aware_leaves_a_nearly_done_job_where_it_is():
    # 23 s of work left: 70 s more on the board, vs 95 s to move 500 MB back then 23 s
    pol, acts = offloaded_then_idle(ckpt=500.0, idle_at=330.0)
    assert acts == [] and pol.state.jobs["a"].location == "b0"


def ping_pong(pol, burst_every=30.0, bursts=4):
    """One EP on a one-core server; a short job arrives every `burst_every` seconds and ends 5
    s later, so the queue swings between a burst and a lull. Returns EP's moves as (time, dst)."""
    fill_server(pol, [("ep", "EP", 3.0)])
    moves, t = [], 2.0

    def carry(acts, now):
        for a in acts:
            if isinstance(a, Migrate):
                moves.append((now, a.dst))
                pol.on_source_released(a.job, now + 0.1)
                pol.on_migration_finished(a.job, now + 0.2)
            check_invariants(pol.state)
    for i in range(bursts):
        carry(pol.on_submit(job(f"x{i}"), t), t)
        carry(pol.on_tick(t + 0.5), t + 0.5)
        if pol.state.jobs[f"x{i}"].state is JobState.RUNNING:
            carry(pol.on_job_finished(f"x{i}", t + 5.0), t + 5.0)
        for tick in range(6, int(burst_every), 2):
            carry(pol.on_tick(t + tick), t + tick)
        t += burst_every
    return moves


def test_without_damping_a_job_moves_on_every_burst_and_lull():
    moves = ping_pong(HexoPolicy(cluster(server_cores=1), idle_after_s=10))
    assert [dst for _, dst in moves] == ["b0", "srv"] * 4


def test_a_job_stays_where_it_arrived_for_the_minimum_residence():
    """With min_residence_s, a job brought back is not offloaded again, nor an offloaded job
    brought back, until it has stayed that long where it arrived; the first offload is
    immediate, as in the paper."""
    pol = HexoPolicy(cluster(server_cores=1), idle_after_s=10, min_residence_s=50)
    moves = ping_pong(pol)
    assert moves[0] == (2.0, "b0")
    arrivals = [t + 0.2 for t, _ in moves]
    assert all(later - arrived >= 50 for arrived, later in zip(arrivals, [t for t, _ in
                                                                          moves[1:]]))
    assert len(moves) < 8


def test_cost_aware_policy_damps_its_moves_too():
    pol = CostAwarePolicy(cluster(server_cores=1), idle_after_s=10, direct_start=False,
                          min_residence_s=50)
    fill_server(pol, [("ep", "EP", 3.0)])
    only(pol.on_submit(job("x0"), 2.0), Migrate)
    pol.on_source_released("ep", 2.1)
    pol.on_migration_finished("ep", 2.2)
    pol.on_job_finished("x0", 5.0)
    assert not [a for a in pol.on_tick(40.0) if isinstance(a, Migrate)]    # 37.8 s there
    assert only(pol.on_tick(52.3), Migrate).dst == "srv"


def on_board(pol, jid, board, now, slowdown={"potato": 3.0}):
    """Job `jid` submitted (to the server), then moved to `board` by an operator."""
    pol.on_submit(job(jid, slowdown=dict(slowdown)), now)
    mig = only(pol.on_move_request(jid, board, now), Migrate)
    assert (mig.src, mig.dst) == ("srv", board) and "operator" in mig.reason
    pol.on_migration_finished(jid, now + 1)


def test_operator_moves_a_running_job_between_boards_and_is_told_why_not():
    pol = HexoPolicy(cluster(boards=2, board_cores=1), idle_after_s=1e9)
    on_board(pol, "a", "b0", 0.0)
    with pytest.raises(TransitionError, match="already on b0"):
        pol.on_move_request("a", "b0", 2.0)
    mig = only(pol.on_move_request("a", "b1", 2.0), Migrate)
    assert (mig.src, mig.dst) == ("b0", "b1")
    with pytest.raises(TransitionError, match="migrating, not running"):
        pol.on_move_request("a", "srv", 2.5)
    pol.on_migration_finished("a", 3.0)
    on_board(pol, "b", "b0", 4.0)
    with pytest.raises(TransitionError, match="does not fit on b1"):
        pol.on_move_request("b", "b1", 5.0)
    pol.state.down.add("b1")
    with pytest.raises(TransitionError, match="b1 is silent"):
        pol.on_move_request("b", "b1", 5.0)
    with pytest.raises(TransitionError, match="no job nope"):
        pol.on_move_request("nope", "srv", 5.0)
    check_invariants(pol.state)


def test_a_draining_board_sends_its_jobs_to_other_boards_first_then_the_server():
    """b0 holds two jobs; b1 has room for one: that one goes to b1, the other to the server
    (which has room), and nothing is offloaded onto b0 while it drains. A job with no
    estimate for b1's model (dropped after a failed move there) goes to the server."""
    pol = HexoPolicy(cluster(server_cores=2, boards=3, board_cores=2), idle_after_s=1e9)
    on_board(pol, "a", "b0", 0.0)
    on_board(pol, "b", "b0", 2.0)
    on_board(pol, "c", "b1", 4.0)
    on_board(pol, "d", "b2", 6.0, slowdown={})
    pol.on_drain("b2", True, 8.0)
    pol.on_migration_finished("d", 8.5)
    assert pol.state.jobs["d"].location == "srv"
    moves = [a for a in pol.on_drain("b0", True, 9.0) if isinstance(a, Migrate)]
    assert [(m.job, m.src, m.dst) for m in moves] == [("a", "b0", "b1"), ("b", "b0", "srv")]
    assert "b0 drains" in moves[0].reason and "board b1" in moves[0].reason
    for m in moves:
        pol.on_migration_finished(m.job, 10.0)
    assert pol.state.running_on("b0") == [] and "b0" not in [b.name for b in
                                                               pol.state.open_boards()]
    with pytest.raises(TransitionError, match="b0 is draining"):
        pol.on_move_request("a", "b0", 11.0)
    pol.on_drain("b0", False, 12.0)
    assert only(pol.on_move_request("a", "b0", 13.0), Migrate).dst == "b0"
    check_invariants(pol.state)


def test_a_drained_job_with_no_room_elsewhere_waits_then_leaves_when_room_appears():
    pol = HexoPolicy(cluster(server_cores=1, boards=1, board_cores=1), idle_after_s=1e9)
    on_board(pol, "a", "b0", 0.0)
    pol.on_submit(job("busy"), 2.0)                  # takes the server's only core
    acts = pol.on_drain("b0", True, 3.0)
    assert not [a for a in acts if isinstance(a, Migrate)]
    assert "a waits on draining b0: no room elsewhere" in [a.reason for a in acts
                                                           if isinstance(a, Wait)]
    mig = only(pol.on_job_finished("busy", 4.0), Migrate)
    assert (mig.job, mig.src, mig.dst) == ("a", "b0", "srv")
    with pytest.raises(TransitionError, match="no board srv"):
        pol.on_drain("srv", True, 5.0)
    check_invariants(pol.state)


@pytest.mark.parametrize("policy", [HexoPolicy, CostAwarePolicy])
def test_a_job_lost_with_its_board_resumes_on_another_board_when_the_server_is_full(policy):
    """b0 goes silent with `a` on it while the server's only core is busy: `a` resumes on b1
    (an open board of the model it has an estimate for), not on b0 nor by offloading the
    server's job; once on b1 it is an ordinary job again."""
    pol = policy(cluster(server_cores=1, boards=3, board_cores=1), idle_after_s=1e9)
    on_board(pol, "a", "b0", 0.0)
    pol.on_submit(job("busy", slowdown={"potato": 2.0}), 2.0)
    assert pol.state.jobs["busy"].location == "srv"
    pol.state.down.add("b0")
    run = only(pol.on_job_lost("a", 3.0), Run)
    assert (run.job, run.machine) == ("a", "b1")
    assert "lost with b0" in run.reason and "resumes on board b1" in run.reason
    assert pol.state.jobs["busy"].location == "srv" and pol.state.jobs["a"].lost_on is None
    check_invariants(pol.state)


def test_a_lost_job_resumes_on_the_server_when_it_fits_and_waits_when_nothing_fits():
    pol = HexoPolicy(cluster(server_cores=1, boards=2, board_cores=1), idle_after_s=1e9)
    on_board(pol, "b", "b1", 0.0)
    on_board(pol, "a", "b0", 2.0)
    pol.state.down.add("b0")
    run = only(pol.on_job_lost("a", 4.0), Run)
    assert (run.job, run.machine) == ("a", "srv")        # the server is preferred, as ever
    pol.state.down.add("b1")
    acts = pol.on_job_lost("b", 5.0)                     # server busy, the other board silent
    assert not [x for x in acts if isinstance(x, (Run, Migrate))], acts
    assert pol.state.queue == ["b"] and pol.state.jobs["b"].lost_on == "b1"
    pol.state.down.discard("b0")                         # b0 answers again: b goes there
    run = only(pol.on_tick(6.0), Run)
    assert (run.job, run.machine) == ("b", "b0")
    check_invariants(pol.state)


def test_a_lost_job_goes_only_to_boards_it_has_an_estimate_for():
    """A board of another model, with no estimate for the job, does not take it."""
    ms = [Machine("srv", "server", "xeon", 2, 64 * 1024, reserved_cores=1),
          Machine("b0", "board", "potato", 2, 1024, reserved_cores=1, link_mbit=100.0),
          Machine("x0", "board", "turnip", 2, 1024, reserved_cores=1, link_mbit=100.0)]
    pol = HexoPolicy(ClusterState(ms), idle_after_s=1e9)
    on_board(pol, "a", "b0", 0.0)
    pol.on_submit(job("busy"), 2.0)
    pol.state.down.add("b0")
    acts = pol.on_job_lost("a", 3.0)
    assert not [x for x in acts if isinstance(x, Run)], acts
    with pytest.raises(TransitionError, match="not running"):
        pol.on_job_lost("a", 4.0)
    check_invariants(pol.state)


def test_a_job_whose_vm_vanished_on_a_board_that_answers_never_goes_back_there():
    pol = HexoPolicy(cluster(server_cores=1, boards=2, board_cores=1), idle_after_s=1e9)
    on_board(pol, "a", "b0", 0.0)
    pol.on_submit(job("busy"), 2.0)
    run = only(pol.on_job_lost("a", 3.0), Run)           # b0 answers, yet b1 takes it
    assert (run.job, run.machine) == ("a", "b1")
    acts = pol.on_job_lost("a", 4.0)                     # b1 lost it: b0 is open, not b1
    assert only(acts, Run).machine == "b0"
    acts = pol.on_job_lost("a", 5.0)                     # b0 again: only b1 is left
    assert only(acts, Run).machine == "b1"
    check_invariants(pol.state)
    alone = HexoPolicy(cluster(server_cores=1, boards=1, board_cores=1), idle_after_s=1e9)
    on_board(alone, "a", "b0", 0.0)
    alone.on_submit(job("busy"), 2.0)
    assert not [x for x in alone.on_job_lost("a", 3.0) if isinstance(x, Run)]
    assert alone.state.queue == ["a"]                    # it waits for the server
