"""Scheduler state and decisions, with no I/O, clock or thread.

The live daemon and the simulator both feed the same objects with events (a job was submitted,
finished, a migration released its source or completed, a slowdown estimate arrived, a timer
ticked) stamped with the time they happened, and carry out the actions returned (Run, Migrate,
Wait). A decision updates the state at once (resources are reserved when an action is issued), so
the state always describes what has been ordered; the driver reports back what really happened.
Every action carries the reason it was taken, for logs and `hexo status`.
"""

from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass, field

from .errors import SchedError


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    MIGRATING = "migrating"
    DONE = "done"


class TransitionError(SchedError, RuntimeError):
    """An event that the current state does not allow (a driver bug, or a lost event)."""


@dataclass
class Machine:
    """A server or a board. One job per core; RAM is a hard cap (HEXO §3.4)."""

    name: str
    kind: str                        # "server" or "board"
    model: str                       # key into power models and slowdown estimates
    cores: int
    ram_mb: float
    reserved_cores: int = 0          # kept for host software (HEXO §5.2 leaves 1 of 4 free)
    link_mbit: float | None = None   # network link to the server; boards only
    checkpoint_mb_s: float = 100.0   # writing a checkpoint file on this machine
    restore_mb_s: float = 100.0      # reading a checkpoint back into a new VM

    def __post_init__(self):
        if self.kind not in ("server", "board"):
            raise ValueError(f"machine {self.name}: kind must be server or board")
        if not 0 <= self.reserved_cores < self.cores:
            raise ValueError(f"machine {self.name}: reserved cores must leave at least one core")

    @property
    def usable_cores(self) -> int:
        return self.cores - self.reserved_cores


@dataclass
class Migration:
    src: str
    dst: str
    reason: str
    started_at: float
    source_released: bool = False    # checkpoint written (or every page pulled, post-copy)


@dataclass
class Job:
    """A unikernel job. `slowdown` holds estimates (board model -> slowdown vs a server)."""

    id: str
    vcpus: int = 1
    mem_mb: float = 256.0
    benchmark: str = ""
    checkpoint_mb: float | None = None
    work_s: float | None = None      # expected server run time, when the submitter gives one
    slowdown: dict[str, float] = field(default_factory=dict)
    state: JobState = JobState.QUEUED
    location: str | None = None      # where it runs, or where it runs from while migrating
    migration: Migration | None = None
    done_s: float = 0.0              # server-equivalent seconds of work done (estimated)
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    migrations: int = 0
    arrived_at: float | None = None  # when it started or last finished moving where it is
    lost_on: str | None = None       # the board that lost it, while it waits to resume

    def speed_on(self, machine: Machine) -> float | None:
        """Work per second on `machine` relative to a server; None if not yet estimated."""
        if machine.kind == "server":
            return 1.0
        s = self.slowdown.get(machine.model)
        return None if s is None else 1.0 / s


@dataclass(frozen=True)
class Run:
    job: str
    machine: str
    reason: str


@dataclass(frozen=True)
class Migrate:
    job: str
    src: str
    dst: str
    reason: str


@dataclass(frozen=True)
class Wait:
    reason: str


Action = Run | Migrate | Wait


class InvariantError(TransitionError):
    """The state is impossible (a cap exceeded, a job in two places, an index out of step)."""


class ClusterState:
    """Machines, jobs and the queue; transitions check their preconditions and raise otherwise.

    Indexes kept up to date by the transitions make every query cheap whatever the number of
    jobs: the jobs holding each machine and what they use, the jobs computing on each machine,
    the migrations under way, the boards with a free core, and the queued jobs of each
    benchmark in queue order. `check_invariants` recomputes them from the jobs and compares.
    """

    def __init__(self, machines: list[Machine]):
        names = [m.name for m in machines]
        if len(set(names)) != len(names):
            raise ValueError("machine names must be unique")
        if not any(m.kind == "server" for m in machines):
            raise ValueError("a cluster needs a server")
        self.machines = {m.name: m for m in machines}
        self.servers = [m for m in machines if m.kind == "server"]
        self.boards = [m for m in machines if m.kind == "board"]
        self.order = {m.name: i for i, m in enumerate(machines)}
        self.jobs: dict[str, Job] = {}
        self.active: dict[str, Job] = {}     # every job not done
        self.queue: list[str] = []
        self.now = 0.0
        self.queue_empty_since: float | None = 0.0
        self.down: set[str] = set()          # boards that do not answer: nothing goes there
        self.draining: set[str] = set()      # boards an operator empties: their jobs leave,
                                             # nothing new goes there
        self.sampling: set[str] = set()      # idle boards timing a sample (sample.py):
                                             # nothing goes there meanwhile
        self._reindex()

    def _reindex(self) -> None:
        self._held: dict[str, dict[str, Job]] = {m: {} for m in self.machines}
        self._used: dict[str, tuple[int, float]] = {m: (0, 0.0) for m in self.machines}
        self._running: dict[str, dict[str, Job]] = {m: {} for m in self.machines}
        self._migrating: dict[str, Job] = {}
        self._open_boards: set[str] = {b.name for b in self.boards}
        self._queued = queued_by_benchmark(self)
        for m, hs in held_from_scratch(self).items():
            for j in hs:
                self._hold(j, m)
        for j in self.active.values():
            if j.state is JobState.RUNNING and j.location in self._running:
                self._running[j.location][j.id] = j
            elif j.state is JobState.MIGRATING:
                self._migrating[j.id] = j

    def _hold(self, job: Job, machine: str) -> None:
        self._held[machine][job.id] = job
        self._recount(machine)

    def _unhold(self, job: Job, machine: str) -> None:
        del self._held[machine][job.id]
        self._recount(machine)

    def _recount(self, machine: str) -> None:
        hs = self._held[machine].values()
        self._used[machine] = used = (sum(j.vcpus for j in hs), sum(j.mem_mb for j in hs))
        m = self.machines[machine]
        if m.kind == "board":
            if used[0] < m.usable_cores and used[1] < m.ram_mb:
                self._open_boards.add(machine)
            else:
                self._open_boards.discard(machine)

    # -- queries -------------------------------------------------------------------------------
    def holders(self, machine: str) -> list[Job]:
        """Jobs holding cores and RAM on `machine`: running there, or migrating to or from it."""
        return list(self._held[machine].values())

    def used(self, machine: str) -> tuple[int, float]:
        return self._used[machine]

    def free(self, machine: str) -> tuple[int, float]:
        m = self.machines[machine]
        cores, ram = self._used[machine]
        return m.usable_cores - cores, m.ram_mb - ram

    def fits(self, job: Job, machine: str) -> bool:
        cores, ram = self.free(machine)
        return job.vcpus <= cores and job.mem_mb <= ram

    def open_boards(self) -> list[Machine]:
        """Boards that answer with a free core and some free RAM, in machine order."""
        return [self.machines[b] for b in sorted(self._open_boards - self.down - self.draining
                                                 - self.sampling, key=self.order.__getitem__)]

    def running_on(self, machine: str) -> list[Job]:
        """Jobs computing on `machine` (not migrating), oldest start first."""
        return sorted(self._running[machine].values(), key=lambda j: (j.started_at, j.id))

    def migrating(self) -> list[Job]:
        return list(self._migrating.values())

    def first_queued_per_benchmark(self) -> list[Job]:
        """The job nearest the head of the queue of each benchmark."""
        return [self.jobs[next(iter(ids))] for ids in self._queued.values()]

    # -- transitions ---------------------------------------------------------------------------
    def restore(self, jobs: list[Job], queue: list[str], now: float) -> None:
        """Load the jobs a restarted driver saved, in whatever state they were, and check that
        together they describe a possible state (raises TransitionError otherwise)."""
        if self.jobs:
            raise TransitionError("restore needs an empty state")
        self.now = now
        for j in jobs:
            self.jobs[j.id] = j
            if j.state is not JobState.DONE:
                self.active[j.id] = j
        self.queue = list(queue)
        self.queue_empty_since = None if self.queue else now
        self._reindex()
        try:
            check_invariants(self)
        except InvariantError as e:
            raise TransitionError(f"saved state is inconsistent: {e}") from None

    def advance(self, now: float) -> None:
        """Account the work done since the last event, from the slowdown estimates."""
        if now < self.now:
            raise TransitionError(f"time went backwards: {now} < {self.now}")
        dt = now - self.now
        if dt:
            for name, running in self._running.items():
                if running:
                    m = self.machines[name]
                    for j in running.values():
                        speed = j.speed_on(m)
                        if speed is not None:
                            j.done_s += dt * speed
        self.now = now

    def submit(self, job: Job) -> None:
        if job.id in self.jobs:
            raise TransitionError(f"job {job.id} submitted twice")
        if isinstance(job.vcpus, bool) or not isinstance(job.vcpus, int) or job.vcpus < 1 \
                or not job.mem_mb > 0:
            raise ValueError(f"job {job.id}: needs a whole number of vCPUs (at least one) and "
                             "some RAM")
        job.state, job.location, job.submitted_at = JobState.QUEUED, None, self.now
        self.jobs[job.id] = self.active[job.id] = job
        self.queue.append(job.id)
        self._queued.setdefault(job.benchmark, {})[job.id] = None
        self.queue_empty_since = None

    def start(self, job_id: str, machine: str) -> None:
        j = self._job(job_id, JobState.QUEUED)
        if machine not in self.machines:
            raise TransitionError(f"no machine {machine}")
        if not self.fits(j, machine):
            raise TransitionError(f"job {job_id} does not fit on {machine}")
        self._dequeue(j)
        j.state, j.location, j.started_at, j.arrived_at = JobState.RUNNING, machine, self.now, \
            self.now
        j.lost_on = None
        self._hold(j, machine)
        self._running[machine][j.id] = j

    def begin_migration(self, job_id: str, dst: str, reason: str) -> None:
        j = self._job(job_id, JobState.RUNNING)
        if dst not in self.machines:
            raise TransitionError(f"no machine {dst}")
        if dst == j.location:
            raise TransitionError(f"job {job_id} is already on {dst}")
        if not self.fits(j, dst):
            raise TransitionError(f"job {job_id} does not fit on {dst}")
        j.state = JobState.MIGRATING
        j.migration = Migration(j.location, dst, reason, self.now)
        j.migrations += 1
        del self._running[j.location][j.id]
        self._hold(j, dst)
        self._migrating[j.id] = j

    def release_source(self, job_id: str) -> None:
        j = self._job(job_id, JobState.MIGRATING)
        if j.migration.source_released:
            raise TransitionError(f"job {job_id}: source released twice")
        j.migration.source_released = True
        self._unhold(j, j.location)

    def end_migration(self, job_id: str) -> None:
        j = self._job(job_id, JobState.MIGRATING)
        if not j.migration.source_released:
            self.release_source(job_id)
        j.state, j.location, j.migration = JobState.RUNNING, j.migration.dst, None
        j.arrived_at = self.now
        del self._migrating[j.id]
        self._running[j.location][j.id] = j

    def abort_migration(self, job_id: str) -> None:
        """The migration failed: the job goes on at the source if it still holds it, else it is
        queued again at the head (to be restarted from its checkpoint or from scratch)."""
        j = self._job(job_id, JobState.MIGRATING)
        if j.migration.source_released:
            self._requeue(j)
        else:
            self._unhold(j, j.migration.dst)
            del self._migrating[j.id]
            j.state, j.migration = JobState.RUNNING, None
            self._running[j.location][j.id] = j

    def fail(self, job_id: str) -> None:
        """A job could not be started or died: queue it again at the head."""
        j = self.jobs.get(job_id)
        if j is None:
            raise TransitionError(f"no job {job_id}")
        if j.state not in (JobState.RUNNING, JobState.MIGRATING):
            raise TransitionError(f"job {job_id} is {j.state.value}, not running")
        self._requeue(j)

    def finish(self, job_id: str) -> None:
        j = self._job(job_id, JobState.RUNNING)
        self._leave(j)
        j.state, j.finished_at = JobState.DONE, self.now
        del self.active[job_id]

    def cancel(self, job_id: str) -> None:
        """The job's owner withdrew it, wherever it was: queued, running or migrating."""
        j = self.jobs.get(job_id)
        if j is None:
            raise TransitionError(f"no job {job_id}")
        if j.state is JobState.DONE:
            raise TransitionError(f"job {job_id} is done already")
        if j.state is JobState.QUEUED:
            self._dequeue(j)
        else:
            self._leave(j)
        j.state, j.migration, j.finished_at = JobState.DONE, None, self.now
        del self.active[job_id]

    def _leave(self, j: Job) -> None:
        """Drop a running or migrating job from the indexes of every machine holding it."""
        if j.state is JobState.RUNNING:
            del self._running[j.location][j.id]
            self._unhold(j, j.location)
        else:
            if not j.migration.source_released:
                self._unhold(j, j.location)
            self._unhold(j, j.migration.dst)
            del self._migrating[j.id]

    def _dequeue(self, j: Job) -> None:
        self.queue.remove(j.id)
        same = self._queued[j.benchmark]
        del same[j.id]
        if not same:
            del self._queued[j.benchmark]
        if not self.queue:
            self.queue_empty_since = self.now

    def _requeue(self, j: Job) -> None:
        self._leave(j)
        j.state, j.location, j.migration, j.done_s = JobState.QUEUED, None, None, 0.0
        self.queue.insert(0, j.id)
        self._queued[j.benchmark] = {j.id: None, **self._queued.get(j.benchmark, {})}
        self.queue_empty_since = None

    def _job(self, job_id: str, state: JobState) -> Job:
        j = self.jobs.get(job_id)
        if j is None:
            raise TransitionError(f"no job {job_id}")
        if j.state is not state:
            raise TransitionError(f"job {job_id} is {j.state.value}, not {state.value}")
        return j


def held_from_scratch(state: ClusterState) -> dict[str, list[Job]]:
    """Which jobs hold each machine, from the jobs alone (what the indexes must agree with)."""
    held: dict[str, list[Job]] = {m: [] for m in state.machines}
    for j in state.active.values():
        if j.state is JobState.RUNNING and j.location in held:
            held[j.location].append(j)
        elif j.state is JobState.MIGRATING and j.migration is not None:
            if j.migration.dst in held:
                held[j.migration.dst].append(j)
            if not j.migration.source_released and j.location in held:
                held[j.location].append(j)
    return held


def queued_by_benchmark(state: ClusterState) -> dict[str, dict[str, None]]:
    """The queued job ids of each benchmark in queue order, from the queue alone."""
    out: dict[str, dict[str, None]] = {}
    for jid in state.queue:
        out.setdefault(state.jobs[jid].benchmark, {})[jid] = None
    return out


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvariantError(message)


def check_invariants(state: ClusterState) -> None:
    """Raise InvariantError when the state is impossible: a core or RAM cap exceeded, a job
    held in no place or two (outside the window of a migration), a queue out of step with job
    states, an index out of step with the jobs. A second migration of a migrating job cannot be
    represented (one `migration` per job, and `begin_migration` needs a running job). Real
    checks, not asserts: they hold under `python -O` too."""
    held = held_from_scratch(state)
    running_on: dict[str, set[str]] = {m: set() for m in state.machines}
    for j in state.active.values():
        if j.state is JobState.RUNNING and j.location in running_on:
            running_on[j.location].add(j.id)
    for m in state.machines.values():
        hs = held[m.name]
        cores, ram = sum(j.vcpus for j in hs), sum(j.mem_mb for j in hs)
        _check(cores <= m.usable_cores, f"{m.name}: {cores} cores used of {m.usable_cores}")
        _check(ram <= m.ram_mb + 1e-9, f"{m.name}: {ram} MB used of {m.ram_mb}")
        _check({j.id for j in hs} == set(state._held[m.name]),
               f"{m.name}: holder index {sorted(state._held[m.name])} != {[j.id for j in hs]}")
        icores, iram = state._used[m.name]
        _check(icores == cores and abs(iram - ram) < 1e-6,
               f"{m.name}: usage index {state._used[m.name]} != {(cores, ram)}")
        _check(running_on[m.name] == set(state._running[m.name]),
               f"{m.name}: running index out of step")
        if m.kind == "board":
            _check((m.name in state._open_boards) == (cores < m.usable_cores and ram < m.ram_mb),
                   f"{m.name}: free-board index out of step")
    migrating = {j.id for j in state.active.values() if j.state is JobState.MIGRATING}
    _check(migrating == set(state._migrating), "migration index out of step")
    for j in state.jobs.values():
        _check((j.id in state.active) == (j.state is not JobState.DONE), f"{j.id}: index")
        if j.state is JobState.QUEUED:
            _check(j.location is None and j.migration is None, f"{j.id}: queued but placed")
        elif j.state is JobState.RUNNING:
            _check(j.location in state.machines and j.migration is None,
                   f"{j.id}: bad placement")
            _check(j.lost_on is None, f"{j.id}: runs but waits to resume")
        elif j.state is JobState.MIGRATING:
            mg = j.migration
            _check(mg is not None and mg.src == j.location and mg.dst in state.machines,
                   f"{j.id}: bad migration")
            _check(mg.src != mg.dst, f"{j.id}: migrates to where it is")
        else:
            _check(j.migration is None and j.finished_at is not None, f"{j.id}: bad done state")
    queued = [j.id for j in state.active.values() if j.state is JobState.QUEUED]
    _check(sorted(queued) == sorted(state.queue), "queue and queued jobs differ")
    _check(len(set(state.queue)) == len(state.queue), "a job is queued twice")
    _check({b: list(ids) for b, ids in queued_by_benchmark(state).items()}
           == {b: list(ids) for b, ids in state._queued.items()},
           "queued-by-benchmark index out of step")
    where_is = {}
    for m, hs in held.items():
        for j in hs:
            where_is.setdefault(j.id, []).append(m)
    for j in state.active.values():
        where = where_is.get(j.id, [])
        if j.state is JobState.RUNNING:
            _check(where == [j.location], f"{j.id}: held by {where}")
        elif j.state is JobState.MIGRATING:
            expect = {j.migration.dst} | ({j.location} if not j.migration.source_released
                                          else set())
            _check(set(where) == expect, f"{j.id}: held by {where}, expected {expect}")
        else:
            _check(where == [], f"{j.id}: queued but held by {where}")


class Policy:
    """Base of all policies: applies events to the state, then asks `decide` for actions.

    Subclasses implement `decide(now)` (and may override `on_tick`). The returned actions are
    already applied to the state: the driver must carry them out and report the outcome.
    """

    name = "base"

    def __init__(self, state: ClusterState, min_residence_s: float = 0.0):
        self.state = state
        self.min_residence_s = min_residence_s
        self.log: list[tuple[float, Action]] = []

    # -- events --------------------------------------------------------------------------------
    def on_submit(self, job: Job, now: float) -> list[Action]:
        self.state.advance(now)
        self.state.submit(job)
        return self._decide(now)

    def on_job_finished(self, job_id: str, now: float) -> list[Action]:
        self.state.advance(now)
        self.state.finish(job_id)
        self.learn_finished(self.state.jobs[job_id])
        return self._decide(now)

    def on_source_released(self, job_id: str, now: float) -> list[Action]:
        self.state.advance(now)
        self.state.release_source(job_id)
        return self._decide(now)

    def on_migration_finished(self, job_id: str, now: float) -> list[Action]:
        self.state.advance(now)
        self.state.end_migration(job_id)
        return self._decide(now)

    def on_migration_failed(self, job_id: str, now: float) -> list[Action]:
        self.state.advance(now)
        self.state.abort_migration(job_id)
        return self._decide(now)

    def on_migration_abandoned(self, job_id: str, now: float) -> list[Action]:
        """The job ended at its source before it could be checkpointed: the migration is
        off and the job is done, in one step (deciding in between would move a job that has
        ended)."""
        self.state.advance(now)
        self.state.abort_migration(job_id)
        self.state.finish(job_id)
        self.learn_finished(self.state.jobs[job_id])
        return self._decide(now)

    def on_job_failed(self, job_id: str, now: float) -> list[Action]:
        self.state.advance(now)
        self.state.fail(job_id)
        return self._decide(now)

    def on_job_lost(self, job_id: str, now: float) -> list[Action]:
        """The machine a job ran on (or left, migrating) lost it: it is queued again at the
        head, to resume from its saved checkpoint wherever the policy places it (a server, or,
        when a board lost it, another board: `resume_on_board`)."""
        self.state.advance(now)
        j = self.state.jobs.get(job_id)
        board = j.location if j is not None else None
        self.state.fail(job_id)
        if self.state.machines[board].kind == "board":
            j.lost_on = board
        return self._decide(now)

    def on_job_cancelled(self, job_id: str, now: float) -> list[Action]:
        self.state.advance(now)
        self.state.cancel(job_id)
        return self._decide(now)

    def on_estimate(self, job_id: str, board_model: str, slowdown: float,
                    now: float) -> list[Action]:
        """A slowdown estimate for a job, e.g. from counters sampled on the server."""
        if not slowdown > 0:
            raise ValueError(f"slowdown must be positive, got {slowdown}")
        self.state.advance(now)
        self.state.jobs[job_id].slowdown[board_model] = slowdown
        self.learn_estimate(self.state.jobs[job_id], board_model, slowdown)
        return self._decide(now)

    def on_tick(self, now: float) -> list[Action]:
        self.state.advance(now)
        return self._decide(now)

    def on_move_request(self, job_id: str, dst: str, now: float) -> list[Action]:
        """An operator moves a running job to `dst` (TransitionError says why it cannot)."""
        self.state.advance(now)
        for why, boards in (("silent", self.state.down), ("draining", self.state.draining),
                            ("timing a sample", self.state.sampling)):
            if dst in boards:
                raise TransitionError(f"board {dst} is {why}: nothing goes there")
        job = self.state.jobs.get(job_id)
        if job is None:
            raise TransitionError(f"no job {job_id}")
        if job.state is not JobState.RUNNING:
            raise TransitionError(f"job {job_id} is {job.state.value}, not running")
        move = self.migrate(job, dst, f"an operator moves {job_id} to {dst}")
        return [move, *self._decide(now)]

    def on_drain(self, board: str, draining: bool, now: float) -> list[Action]:
        """An operator empties `board` (for maintenance): its jobs go to other boards where
        they fit, else to a server, and nothing new goes there until it is undrained."""
        if self.state.machines.get(board) is None or self.state.machines[board].kind != "board":
            raise TransitionError(f"no board {board}")
        self.state.advance(now)
        (self.state.draining.add if draining else self.state.draining.discard)(board)
        return self._decide(now)

    # -- for subclasses ------------------------------------------------------------------------
    def decide(self, now: float) -> list[Action]:
        raise NotImplementedError

    def learn_finished(self, job: Job) -> None:
        """Hook: a job finished (policies that learn from history override it)."""

    def learn_estimate(self, job: Job, board_model: str, slowdown: float) -> None:
        """Hook: an estimate arrived."""

    def learned(self) -> dict:
        """What the hooks above learned, as plain JSON data for the driver to save: a
        restarted driver hands it back to `restore_learned`."""
        return {}

    def restore_learned(self, data: dict) -> None:
        """Take back what `learned` returned; ValueError on data it could not have returned."""
        if data:
            raise ValueError(f"the {self.name} policy learns nothing")

    def run(self, job: Job, machine: str, reason: str) -> Run:
        self.state.start(job.id, machine)
        return Run(job.id, machine, reason)

    def migrate(self, job: Job, dst: str, reason: str) -> Migrate:
        src = job.location
        self.state.begin_migration(job.id, dst, reason)
        return Migrate(job.id, src, dst, reason)

    def _decide(self, now: float) -> list[Action]:
        actions = self.evacuate() + self.decide(now)
        self.log.extend((now, a) for a in actions)
        return actions

    def evacuate(self) -> list[Action]:
        """Jobs running on a draining board leave it, each to the first other board of a
        model it has an estimate for (as offloads: a failed move drops the estimate, so it
        is not retried there) where it fits, else to a server where it fits (a busy server
        does not take them all back); one with no room anywhere waits there."""
        out: list[Action] = []
        for board in sorted(self.state.draining, key=self.state.order.__getitem__):
            for j in self.state.running_on(board):
                boards = [b for b in self.state.open_boards() if b.model in j.slowdown]
                dst = next((m.name for m in [*boards, *self.state.servers]
                            if self.state.fits(j, m.name)), None)
                if dst is None:
                    out.append(Wait(f"{j.id} waits on draining {board}: no room elsewhere"))
                    continue
                out.append(self.migrate(j, dst, f"{board} drains; {j.id} goes to "
                                                f"{self.state.machines[dst].kind} {dst}"))
        return out

    # -- helpers shared by policies -------------------------------------------------------------
    def place_on_server(self, job: Job) -> Run | None:
        for s in self.state.servers:
            if self.state.fits(job, s.name):
                cores, ram = self.state.free(s.name)
                return self.run(job, s.name, f"{job.id} fits on server {s.name} "
                                             f"({cores} cores, {ram:.0f} MB free)")
        return None

    def resume_on_board(self, job: Job) -> Run | None:
        """A job a board lost goes onto another open board of a model it has an estimate for
        (the choice to offload it was made already; a saved checkpoint taken on an arm64
        board restores on another arm64 board untransformed), lowest slowdown first, then
        machine order. Never onto the board that lost it: a silent one is not open anyway,
        and one that answers but lost the job's VM may lose it again."""
        if job.lost_on is None:
            return None
        fits = [(job.slowdown[b.model], self.state.order[b.name], b)
                for b in self.state.open_boards()
                if b.name != job.lost_on and b.model in job.slowdown
                and self.state.fits(job, b.name)]
        if not fits:
            return None
        s, _, b = min(fits, key=lambda f: f[:2])
        return self.run(job, b.name, f"{job.id}, lost with {job.lost_on}, does not fit on a "
                                     f"server; it resumes on board {b.name} ({s:.3g}x there)")

    def pending_release(self, job: Job) -> Job | None:
        """A migration already under way whose release of a server would let `job` fit there."""
        for v in self.state.migrating():
            src = self.state.machines[v.location]
            if src.kind == "server" and not v.migration.source_released:
                cores, ram = self.state.free(src.name)
                if job.vcpus <= cores + v.vcpus and job.mem_mb <= ram + v.mem_mb:
                    return v
        return None

    def frees_enough(self, victim: Job, job: Job) -> bool:
        cores, ram = self.state.free(victim.location)
        return job.vcpus <= cores + victim.vcpus and job.mem_mb <= ram + victim.mem_mb

    def idle_for(self, now: float) -> float:
        since = self.state.queue_empty_since
        return 0.0 if since is None else now - since

    def settled(self, job: Job) -> bool:
        """Hysteresis: a job that has moved stays where it arrived for `min_residence_s`
        before it may move again. Each move costs a migration time m of the job's progress
        (checkpoint, transfer, restore); with moves at least R apart, at most m / (m + R) of
        its time goes to moving however the queue swings (R = 10 m: under a tenth), where an
        undamped policy can offload and recall it on every burst and lull. A job that never
        moved is free to, as the paper's policy has it."""
        return job.migrations == 0 or job.arrived_at is None \
            or self.state.now - job.arrived_at >= self.min_residence_s


class HexoPolicy(Policy):
    """HEXO's policy (paper §3.4), as stated there.

    The queue head J runs on the server if it fits; otherwise the running server job V with the
    lowest estimated slowdown that fits a board is offloaded and J runs once V's checkpoint has
    freed the server; otherwise J waits for a job to end. A J that a board lost resumes on
    another open board (`resume_on_board`) before any job is offloaded for it. When no job has
    been queued for `idle_after_s`, jobs come back from the boards, largest expected speedup
    first. Ties between equal estimates go to the job that started first. A job with no
    estimate yet (no counter sample so far) is not a candidate.
    """

    name = "hexo"

    def __init__(self, state: ClusterState, idle_after_s: float = 60.0,
                 min_residence_s: float = 0.0):
        super().__init__(state, min_residence_s)
        self.idle_after_s = idle_after_s

    def decide(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self.state.queue:
            job = self.state.jobs[self.state.queue[0]]
            run = self.place_on_server(job) or self.resume_on_board(job)
            if run:
                actions.append(run)
                continue
            pending = self.pending_release(job)
            if pending:
                actions.append(Wait(f"{job.id} waits for {pending.id} to leave "
                                    f"{pending.location}"))
                break
            choice = self.place_elsewhere(job)
            actions.append(choice)
            if not isinstance(choice, Run):
                break
        if not self.state.queue:
            actions += self.bring_back(now)
        return actions

    def place_elsewhere(self, job: Job) -> Action:
        """The queue head fits on no server: HEXO offloads the running job that suffers least."""
        return self.offload_for(job) or Wait(f"{job.id} does not fit on a server and no "
                                             "running job can be offloaded to a board")

    def offload_for(self, job: Job) -> Migrate | None:
        """Lowest slowdown first, then the oldest job, then the first board in machine order.
        Boards of one model are interchangeable here, so each model is tried once per job size
        (its first open board where the job fits)."""
        by_model: dict[str, list[Machine]] = {}
        for b in self.state.open_boards():
            by_model.setdefault(b.model, []).append(b)
        first_fit: dict[tuple, Machine | None] = {}
        best, candidates = None, 0
        for srv in self.state.servers:
            for v in self.state.running_on(srv.name):
                if not self.frees_enough(v, job) or not self.settled(v):
                    continue
                placed = False
                for model, boards in by_model.items():
                    s = v.slowdown.get(model)
                    if s is None:
                        continue
                    key = (model, v.vcpus, v.mem_mb)
                    if key not in first_fit:
                        first_fit[key] = next((b for b in boards if self.state.fits(v, b.name)),
                                              None)
                    b = first_fit[key]
                    if b is None:
                        continue
                    placed = True
                    rank = (s, candidates, self.state.order[b.name])
                    if best is None or rank < best[0]:
                        best = (rank, v, b)
                candidates += placed
        if best is None:
            return None
        (s, _, _), v, b = best
        return self.migrate(v, b.name, f"{job.id} does not fit on the server; {v.id} has the "
                                       f"lowest estimated slowdown on {b.name} ({s:.3g}x) of "
                                       f"{candidates} running jobs that could go to a board")

    def bring_back(self, now: float) -> list[Action]:
        idle = self.idle_for(now)
        if idle < self.idle_after_s:
            return []
        out: list[Action] = []
        on_boards = [j for b in self.state.boards for j in self.state.running_on(b.name)
                     if self.settled(j)]
        on_boards.sort(key=lambda j: (-j.slowdown.get(self.state.machines[j.location].model,
                                                      1.0), j.started_at, j.id))
        for j in on_boards:
            srv = next((s for s in self.state.servers if self.state.fits(j, s.name)), None)
            if srv is None:
                break
            s = j.slowdown.get(self.state.machines[j.location].model, 1.0)
            out.append(self.migrate(j, srv.name, f"no job queued for {idle:.0f} s; {j.id} has "
                                                 f"the largest expected speedup ({s:.3g}x)"))
        return out


class CostAwarePolicy(HexoPolicy):
    """Ours: values every board placement by the work it buys per second of board time,
    migration included, and keeps board cores for jobs that use them well.

    When the queue head J does not fit on a server, a free board core goes to the job that
    uses it best, wherever that job waits. The candidates are, for each board: start J there
    directly (its image has a slowdown estimate from an earlier run; no migration), start the
    first queued job of another benchmark there while J waits for a server core (backfilling:
    J keeps its place, since such a start takes no server core), or offload a running server
    job V (HEXO's move). Looking only at J and the server's jobs, a board core went to whatever
    J happened to be (a 10x job) while a 3x job queued two places behind would have done the
    same server-seconds in less board time. A candidate's efficiency is
    R / (t_mig + R * s): R the remaining server-seconds of work, t_mig the time the board core is
    held by checkpoint, transfer and restore, s the slowdown. R comes from the job's `work_s` or
    the mean length of finished jobs of the same benchmark; unknown R counts as unbounded (the
    efficiency is then HEXO's 1/s). Then:

    - none is taken while the free board cores are no more than the jobs on servers or queued
      (the next `lookahead`; by default one more than the servers' cores, the jobs the next
      server completions will pull in) that would use a board core at least 1/`reserve` times
      better (a CG at 30x does not take the board core an EP at 3x will want soon; with cores
      to spare, it does). Looking further, at the whole queue, kept board cores idle for jobs
      that would not need them for hours;
    - among candidates within `tolerance` of the best efficiency, the one that commits the board
      core for the least time wins (the same work rate, shorter turnaround, less work in flight),
      then a direct start (no migration), then the oldest job;
    - no offload starts when a server job is expected to end before the victim's checkpoint
      would free its core.

    On idle, a job comes back only if that ends it sooner, biggest saving first.
    """

    name = "cost-aware"

    def __init__(self, state: ClusterState, idle_after_s: float = 60.0, reserve: float = 0.5,
                 tolerance: float = 0.1, direct_start: bool = True, backfill: bool = True,
                 lookahead: int | None = None, min_residence_s: float = 0.0):
        super().__init__(state, idle_after_s, min_residence_s)
        self.reserve, self.tolerance, self.direct_start = reserve, tolerance, direct_start
        self.backfill = backfill and direct_start
        self.lookahead = lookahead if lookahead is not None else \
            1 + sum(m.usable_cores for m in state.servers)
        # per benchmark: finished jobs and their total work (a mean in constant time and space,
        # however long the daemon runs)
        self.lengths: dict[str, tuple[int, float]] = {}
        self.estimates: dict[tuple[str, str], float] = {}

    def learn_finished(self, job: Job) -> None:
        if job.benchmark:
            n, total = self.lengths.get(job.benchmark, (0, 0.0))
            self.lengths[job.benchmark] = (n + 1, total + job.done_s)

    def learn_estimate(self, job: Job, board_model: str, slowdown: float) -> None:
        if job.benchmark:
            self.estimates[(job.benchmark, board_model)] = slowdown

    def learned(self) -> dict:
        slowdowns: dict[str, dict[str, float]] = {}
        for (benchmark, model), s in self.estimates.items():
            slowdowns.setdefault(benchmark, {})[model] = s
        return {"lengths": {b: {"jobs": n, "work_s": total}
                            for b, (n, total) in self.lengths.items()},
                "slowdowns": slowdowns}

    def restore_learned(self, data: dict) -> None:
        lengths, estimates = {}, {}
        for benchmark, e in data["lengths"].items():
            n, total = e["jobs"], e["work_s"]
            if type(n) is not int or n < 1 or not _finite(total) or total < 0:
                raise ValueError(f"{benchmark}'s length is not a count >= 1 and a total "
                                 f"work >= 0: {e!r:.80}")
            lengths[benchmark] = (n, float(total))
        for benchmark, by_model in data["slowdowns"].items():
            for model, s in by_model.items():
                if not _finite(s) or s <= 0:
                    raise ValueError(f"{benchmark}'s slowdown on {model} is not a positive "
                                     f"number: {s!r:.40}")
                estimates[(benchmark, model)] = float(s)
        self.lengths, self.estimates = lengths, estimates

    def expected_work(self, job: Job) -> float | None:
        if job.work_s is not None:
            return job.work_s
        n, total = self.lengths.get(job.benchmark, (0, 0.0))
        return total / n if n else None

    def remaining(self, job: Job) -> float | None:
        """Server-seconds left; None when unknown or when the job has outrun its estimate."""
        w = self.expected_work(job)
        return None if w is None or job.done_s >= w else w - job.done_s

    def slowdown(self, job: Job, model: str) -> float | None:
        """The job's estimate on a board model, else the last one for its benchmark."""
        s = job.slowdown.get(model)
        return s if s is not None else self.estimates.get((job.benchmark, model))

    def migration_s(self, job: Job, src: Machine, dst: Machine) -> float:
        """Checkpoint on src, transfer over the board's link, restore on dst."""
        mb = checkpoint_mb(job)
        board = dst if dst.kind == "board" else src
        link = board.link_mbit or float("inf")
        return mb / src.checkpoint_mb_s + mb * 8.0 / link + mb / dst.restore_mb_s

    def place_elsewhere(self, job: Job) -> Action:
        return self.best_board_move(job)

    def candidates(self, job: Job) -> list[tuple]:
        """(efficiency, board-seconds committed, start time, kind, job, board, slowdown, t_mig)

        Boards alike (same model, link and restore speed) give the same candidate, so each
        class of boards is represented by its first open board where the job fits."""
        classes: dict[tuple, list[Machine]] = {}
        for b in self.state.open_boards():
            classes.setdefault((b.model, b.link_mbit, b.restore_mb_s), []).append(b)
        first_fit: dict[tuple, Machine | None] = {}

        def board_for(cls: tuple, j: Job) -> Machine | None:
            key = (cls, j.vcpus, j.mem_mb)
            if key not in first_fit:
                first_fit[key] = next((b for b in classes[cls] if self.state.fits(j, b.name)),
                                      None)
            return first_fit[key]

        victims = [(srv, v) for srv in self.state.servers for v in self.state.running_on(srv.name)
                   if self.frees_enough(v, job) and self.settled(v)]
        starts = [job] if self.direct_start else []
        if self.backfill:
            starts += [q for q in self.state.first_queued_per_benchmark()
                       if q.benchmark != job.benchmark]
        out = []
        for cls in classes:
            model = cls[0]
            for q in starts:
                s, b = self.slowdown(q, model), board_for(cls, q)
                if s is not None and b is not None:
                    w = self.expected_work(q)
                    out.append((1.0 / s, math.inf if w is None else w * s, math.inf, "run",
                                q, b, s, 0.0))
            for srv, v in victims:
                s = v.slowdown.get(model)
                b = None if s is None else board_for(cls, v)
                if b is None:
                    continue
                r, t = self.remaining(v), self.migration_s(v, srv, b)
                if r is None:
                    out.append((1.0 / s, math.inf, v.started_at, "migrate", v, b, s, t))
                else:
                    out.append((r / (t + r * s), t + r * s, v.started_at, "migrate", v, b, s, t))
        return out

    def better_jobs_soon(self, efficiency: float, enough: int) -> list[Job]:
        """Up to `enough` jobs on servers or among the next `lookahead` queued ones that would
        use a board core at least 1/reserve times better than `efficiency`.
        Queued jobs with no estimate of their own share their benchmark's, computed once."""
        models = {b.model for b in self.state.boards}
        by_benchmark: dict[str, bool] = {}

        def better(j: Job) -> bool:
            ss = [s for s in (self.slowdown(j, m) for m in models) if s is not None]
            return bool(ss) and self.reserve / min(ss) > efficiency

        out = []
        queue = self.state.queue[:self.lookahead]
        servers = (j for m in self.state.servers for j in self.state.running_on(m.name))
        for j in itertools.chain(queue, servers):
            if isinstance(j, str):
                j = self.state.jobs[j]
            if j.slowdown:
                ok = better(j)
            else:
                ok = by_benchmark.get(j.benchmark)
                if ok is None:
                    ok = by_benchmark[j.benchmark] = better(j)
            if ok:
                out.append(j)
                if len(out) >= enough:
                    break
        return out

    def best_board_move(self, job: Job) -> Action:
        cands = self.candidates(job)
        if not cands:
            return Wait(f"{job.id} does not fit on a server and no job has a board placement")
        top = max(c[0] for c in cands)
        pool = [c for c in cands if c[0] >= (1.0 - self.tolerance) * top]
        eff, commit, _, kind, target, board, s, t = min(
            pool, key=lambda c: (c[1], c[3] != "run", c[2]))
        free = sum(self.state.free(b.name)[0] for b in self.state.open_boards())
        better = self.better_jobs_soon(eff, max(free, 1))
        if better and len(better) >= free:
            return Wait(f"{job.id} waits: the best board placement ({target.id} at {s:.3g}x, "
                        f"{eff:.3g} work/board-s) would take one of {free} free board cores "
                        f"that at least {len(better)} jobs soon to need one would use more than "
                        f"{1 / self.reserve:g}x better ({', '.join(j.id for j in better[:3])})")
        committed = "unknown" if commit == math.inf else f"{commit:.0f} s"
        if kind == "run":
            target.slowdown.setdefault(board.model, s)
            ahead = "" if target is job else f" ahead of {job.id}, which waits for a server core"
            return self.run(target, board.name, f"{target.id} starts on {board.name}{ahead}: "
                                                f"its image's estimated slowdown there is "
                                                f"{s:.3g}x, no migration, board core committed "
                                                f"{committed}")
        src = self.state.machines[target.location]
        soonest = self.soonest_end(src)
        if soonest is not None and soonest[1] <= checkpoint_mb(target) / src.checkpoint_mb_s:
            return Wait(f"{job.id} waits: {soonest[0].id} should end on {src.name} in "
                        f"{soonest[1]:.1f} s, before a checkpoint of {target.id} would")
        return self.migrate(target, board.name,
                            f"{job.id} does not fit on the server; offloading {target.id} to "
                            f"{board.name} buys {eff:.3g} server-s of work per board-s "
                            f"(slowdown {s:.3g}x, migration {t:.1f} s), board core committed "
                            f"{committed}, least among {len(pool)} near-best of "
                            f"{len(cands)} candidates")

    def soonest_end(self, machine: Machine) -> tuple[Job, float] | None:
        """The job expected to end first on `machine`, and in how many seconds."""
        ends = []
        for j in self.state.running_on(machine.name):
            r, speed = self.remaining(j), j.speed_on(machine)
            if r is not None and speed:
                ends.append((r / speed, j.started_at, j))
        if not ends:
            return None
        t, _, j = min(ends, key=lambda e: e[:2])
        return j, t

    def bring_back(self, now: float) -> list[Action]:
        idle = self.idle_for(now)
        if idle < self.idle_after_s:
            return []
        moves = []
        for b in self.state.boards:
            for j in self.state.running_on(b.name):
                if not self.settled(j):
                    continue
                s = self.slowdown(j, b.model) or 1.0
                r = self.remaining(j)
                for srv in self.state.servers:
                    back = self.migration_s(j, b, srv)
                    saving = float("inf") if r is None else r * s - (back + r)
                    if saving > 0:
                        moves.append((-saving, j.started_at, j.id, j, srv, s, back))
                        break
        out: list[Action] = []
        for neg_saving, _, _, j, srv, s, back in sorted(moves, key=lambda m: m[:3]):
            if not self.state.fits(j, srv.name):
                continue
            gain = "unknown remaining work" if neg_saving == float("-inf") \
                else f"ends {-neg_saving:.0f} s sooner"
            out.append(self.migrate(j, srv.name, f"no job queued for {idle:.0f} s; {j.id} "
                                                 f"comes back from {j.location} "
                                                 f"({s:.3g}x there, migration {back:.1f} s, "
                                                 f"{gain})"))
        return out


def _finite(x) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def checkpoint_mb(job: Job) -> float:
    """Expected checkpoint size; the job's RAM when nothing better is known (an upper bound)."""
    return job.checkpoint_mb if job.checkpoint_mb is not None else job.mem_mb

