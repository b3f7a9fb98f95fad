"""hexo-schedd: the live scheduler. Drives the same policy objects as the simulator with real
events: jobs submitted over the control socket, VMs that end, migrations that complete or fail.

One main loop probes the machines and ticks the policy; each migration runs in its own thread
(checkpoint in the source's own ISA, transform on the server, copy, restore, confirm). The
policy is touched only under `lock`, and the state file is rewritten after every change, so a
daemon killed at any point and restarted picks up its jobs where they are. The source keeps
the job's cores and its checkpoint until the target reports that the restored VM has passed a
migration point (or ended normally); if any step fails, the job resumes from that checkpoint
where it was. A board involved that stays silent for `board_lost_after_s` ends the migration:
a silent target as a failed step, a silent source as a board that lost the job (it resumes from
its saved checkpoint, as in _job_lost). A board VM whose serial console (`console` in its
section) shows a kernel oops or panic is that silent board at once, whether or not it answers.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import relay, saved
from .agents import MachineAgent, SegmentProbe, first_report
from .api import ApiError, ControlServer, parse_job_spec
from .boards.console import ConsoleWatch
from .config import ConfigError, DaemonConfig, load
from .counters import CountersUnavailable, PerfEventSource
from .energy import EnergyMeter, RaplReader, RaplUnavailable, table1_models
from .estimates import Estimator
from .sample import Sampler
from .hosts import HostError, LocalFiles
from .jobstore import (JobRecord, MigrationProgress, Segment, StateFile, StateFileError, dump,
                       load_into, load_learned)
from .metrics import Metrics
from .policy import (Action, ClusterState, CostAwarePolicy, HexoPolicy, Job, JobState, Migrate,
                     Run, TransitionError, Wait)
from .errors import SchedError

POLICIES = {"hexo": HexoPolicy, "cost-aware": CostAwarePolicy}
#: The estimate sentence of a job whose derived estimate (sample.py) is still to come.
SAMPLING = "a derived estimate is being sampled (both builds timed to the same migration point)"
#: What a job that ended before its derived estimate came says of the board models it lacks.
ENDED_FIRST = "none (the job ended before its sample did)"
LAUNCH_GRACE_S = 20.0        # a segment with no files and no VM after this was never launched
VANISHED_GRACE_S = 15.0      # a launched segment with no VM and no exit status after this died
REMOTE_PROBE_S = 1.0         # boards are probed at most this often
BOARD_CHECK_S = 10.0         # a board with no job is checked this often
RETRY_S = 5.0                # an unreachable source is retried this often after a failure
SAMPLE_S = 1.0               # hardware counters of server jobs are sampled this often (HEXO)
KEPT_DECISIONS = 500
MIB = 1 << 20

log = logging.getLogger("hexo-schedd")


class MigrationFailed(SchedError, RuntimeError):
    pass


class BoardSilent(MigrationFailed):
    """A board a migration needs has not answered for `board_lost_after_s`."""

    def __init__(self, board: str, seconds: float, error: str):
        super().__init__(f"board {board} silent for {seconds:.0f} s ({error})")
        self.board, self.seconds, self.error = board, seconds, error

    @property
    def outcome(self) -> str:
        return f"board {self.board} silent for {self.seconds:.0f} s"


def benchmark_of(manifest: dict) -> tuple[str, str | None]:
    """('EP', 'S') for an image built from the npb-ep workload at class S."""
    w = manifest.get("workload") or {}
    name = w.get("name") or ""
    return (name.removeprefix("npb-").upper() if name.startswith("npb-") else ""), w.get("class")


class Daemon:
    def __init__(self, cfg: DaemonConfig):
        self.cfg = cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = threading.RLock()
        self.file = StateFile(cfg.state_dir / "state.json")
        self.agents = {m.name: MachineAgent(m) for m in cfg.machines}
        boards = [m for m in cfg.machines if m.kind == "board"]
        self.estimator = Estimator(cfg.calibration, cfg.model_dataset,
                                   sorted({m.model for m in boards}),
                                   {m.model for m in boards if m.emulated})
        self.sampler = Sampler(cfg.state_dir / "estimates", self._sampled, config=cfg.path,
                               claim=self._claim_board, release=self._release_board,
                               wanted=lambda jid: jid in self.state.active)
        self.derived: dict[str, dict[str, str | None]] = {}  # job -> board model -> sentence
                                                              # of its derived estimate
        self.state = ClusterState([m.policy_machine() for m in cfg.machines])
        self.policy = POLICIES[cfg.policy](self.state, idle_after_s=cfg.idle_after_s,
                                           min_residence_s=cfg.min_residence_s)
        self.records: dict[str, JobRecord] = {}
        self.decisions: list[dict] = []
        self.next_id = 1
        self.learned_by_others: dict[str, dict] = {}    # policy name -> what it learned
        self.workers: dict[str, threading.Thread] = {}
        self.vanished: dict[tuple[str, int], float] = {}
        self.last_probe: dict[str, float] = {}
        self.last_wait: str | None = None
        self.metrics = Metrics()
        self.samplers: dict[tuple[str, int], PerfEventSource] = {}
        self.last_sample = 0.0
        self.energy_since = time.time()
        models = table1_models()
        self.energy = EnergyMeter({m.name: models[m.power_model] for m in cfg.machines},
                                  start=self.energy_since)
        try:
            RaplReader()
            self.rapl = ("RAPL is readable on the server but covers only its CPU packages; "
                         "the figures are the power models'")
        except RaplUnavailable as e:
            self.rapl = f"no RAPL: {e}"
        self.seen: dict[str, float] = {}    # attached job -> when its client last asked
        self.snapshots: dict[tuple, tuple[float, relay.Snapshot]] = {}
        self.unreachable: dict[str, str] = {}    # board -> why, while it does not answer
        self.reached: set[str] = set()           # boards that have answered at least once
        self.consoles = {m.name: ConsoleWatch(m.console) for m in cfg.machines
                         if m.kind == "board" and m.console is not None}
        self.silent_since: dict[str, float] = {}  # board -> since when it has not answered
        self.left_behind: dict[str, set[str]] = {}   # board -> jobs it lost (stopped there
                                                      # once it answers again)
        self.savers: dict[str, threading.Thread] = {}    # job -> live checkpoint being saved
        # board -> a second connection for live checkpoints, which take seconds on a board:
        # probes and output reads go on over the first meanwhile
        self.saver_agents = {m.name: MachineAgent(m) for m in cfg.machines if m.kind == "board"}
        self.save_tried: dict[str, float] = {}           # job -> last live checkpoint attempt
        self.drained = False                      # this daemon drained the Slurm node
        self.snapshot_lock = threading.Lock()
        self.metrics_port: int | None = None
        self.control: ControlServer | None = None
        self.stopping = threading.Event()
        data = self.file.load()
        if data is not None:
            self.records, self.decisions, self.next_id = load_into(data, self.state)
            log.info("recovered %d jobs from %s (%d not done)", len(self.records),
                     self.file.path, len(self.state.active))
            self._restore_learned(data)

    def _restore_learned(self, data: dict) -> None:
        others = load_learned(data, self.policy)
        if others is None:
            log.info("%s is format %s, from before what the policy learned was saved: the %s "
                     "policy starts with nothing learned", self.file.path,
                     ".".join(map(str, data["version"])), self.policy.name)
            return
        self.learned_by_others = others
        mine = self.policy.learned()
        if mine:
            log.info("the %s policy goes on from what it learned: %s", self.policy.name,
                     json.dumps(mine, sort_keys=True))

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        log.info("policy %s; %s", self.policy.name, self.estimator.counters)
        for m in self.cfg.machines:
            if m.emulated:
                log.info("board %s runs the %s build on the emulated backend (unicorn): a "
                         "stand-in for a physical arm64 board", m.name, m.isa)
            try:
                self.agents[m.name].prepare()
            except HostError as e:
                log.error("machine %s unusable for now: %s", m.name, e)
        self.metrics_port = self.metrics.serve(self.cfg.metrics_addr, self.cfg.metrics_port)
        log.info("metrics on http://%s:%d/metrics", self.cfg.metrics_addr, self.metrics_port)
        with self.lock:
            now = time.time()
            self.seen = {jid: now for jid, rec in self.records.items() if rec.attached}
            for jid in self.state.active:
                if self.records[jid].estimate_source.endswith(SAMPLING):
                    self._request_samples(jid)
            self._finish_interrupted_actions()
            for jid, rec in self.records.items():
                if rec.progress is not None:
                    log.info("resuming the migration of %s (%s -> %s) at phase %s", jid,
                             rec.progress.src, rec.progress.dst, rec.progress.phase)
                    self._spawn_worker(jid)
            self._save()
        self.control = ControlServer(self.cfg.state_dir, self.handle)

    def _finish_interrupted_actions(self) -> None:
        """Actions of one decision are saved one by one: a daemon killed between two of them
        leaves a job the policy placed but the daemon never launched or began to move."""
        for jid, job in self.state.active.items():
            rec = self.records[jid]
            if job.state is JobState.RUNNING and (rec.current is None
                                                  or rec.current.machine != job.location):
                log.info("%s was placed on %s but not launched before the restart; launching",
                         jid, job.location)
                self._launch(jid, job.location)
            elif job.state is JobState.MIGRATING and rec.progress is None:
                log.info("%s was to migrate %s -> %s when the daemon stopped; starting", jid,
                         job.migration.src, job.migration.dst)
                rec.progress = MigrationProgress(job.migration.src, job.migration.dst,
                                                 rec.current.n)
                rec.history.append({"time": time.time(), "src": job.migration.src,
                                    "dst": job.migration.dst, "reason": job.migration.reason,
                                    "outcome": "under way"})

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
                self.sample_counters(time.time())
            except Exception:                 # the loop must survive a bad probe or a bug
                log.exception("poll failed")
            self.stopping.wait(self.cfg.poll_s)

    def stop(self) -> None:
        """Stop the daemon; jobs go on running and the next daemon adopts them."""
        self.stopping.set()
        if self.control:
            self.control.close()
        self.sampler.close()
        self.metrics.close()
        for a in [*self.agents.values(), *self.saver_agents.values()]:
            a.close()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _now(self) -> float:
        return max(time.time(), self.state.now)

    def _save(self) -> None:
        learned = dict(self.learned_by_others)
        if mine := self.policy.learned():
            learned[self.policy.name] = mine
        self.file.save(dump(self.state, self.records, self.decisions[-KEPT_DECISIONS:],
                            self.next_id, learned))
        self.metrics.update(self.state)
        self.metrics.update_energy(self._energy())

    def _decision(self, action: str, job: str | None, text: str) -> None:
        log.info("decision: %s", text)
        self.decisions.append({"time": time.time(), "action": action, "job": job,
                               "reason": text})
        del self.decisions[:-KEPT_DECISIONS]
        self.metrics.decisions.labels(action).inc()

    def _carry_out(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Wait):
                if a.reason != self.last_wait:
                    self._decision("wait", None, f"wait: {a.reason}")
                self.last_wait = a.reason
                continue
            self.last_wait = None
            if isinstance(a, Run):
                self._decision("run", a.job, f"run {a.job} on {a.machine}: {a.reason}")
                self._launch(a.job, a.machine)
            elif isinstance(a, Migrate):
                self._decision("migrate", a.job, f"migrate {a.job} {a.src} -> {a.dst}: "
                                                 f"{a.reason}")
                rec = self.records[a.job]
                rec.progress = MigrationProgress(a.src, a.dst, rec.current.n)
                rec.history.append({"time": time.time(), "src": a.src, "dst": a.dst,
                                    "reason": a.reason, "outcome": "under way"})
                self._save()
                self._spawn_worker(a.job)

    def _launch(self, jid: str, machine: str) -> None:
        """Start the job on `machine`: from its saved checkpoint if a board lost it, else
        from the beginning."""
        rec, job, agent = self.records[jid], self.state.jobs[jid], self.agents[machine]
        kept = rec.saved
        seg = Segment(rec.next_seg(), machine, "restore" if kept else "run", time.time(),
                      output_base=dict(kept.output) if kept else {"stdout": 0, "stderr": 0})
        rec.segments.append(seg)
        self._save()                            # before launching: a restart finds it either way
        try:
            image = agent.image_path(Path(rec.image))
            if kept is None:
                agent.run(jid, seg.n, image, job.mem_mb, rec.args)
                return
            there, args = saved.place(kept, agent, jid, seg.n, rec.image, self.cfg.hexo,
                                      self.cfg.state_dir / "transfer")
            agent.restore(jid, seg.n, there, image, *args)
        except (HostError, OSError, saved.SaveFailed) as e:
            log.error("launching %s on %s failed (%s); it is requeued once the failure is "
                      "confirmed", jid, machine, e)

    def _event(self, handler, *args) -> None:
        """Feed one event to the policy and carry out what it decides (lock held)."""
        self._carry_out(handler(*args, now=self._now()))
        now = time.time()
        for m in self.cfg.machines:
            self.energy.set_busy(m.name, self.state.used(m.name)[0], now)
        self._save()

    # -- requests from hexo submit / hexo status / hexo run ------------------------------------
    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "submit":
            jobs = req.get("jobs")
            if not isinstance(jobs, list) or not jobs:
                raise ApiError("submit needs a non-empty list of jobs")
            return self.submit(jobs)
        if op == "status":
            return self.status()
        if op == "run":
            slurm_job = req.get("slurm_job")
            if slurm_job is not None and (not isinstance(slurm_job, str) or len(slurm_job) > 64):
                raise ApiError("slurm_job must be a string of at most 64 characters")
            jid = self.submit([req.get("job")], attached=True, slurm_job=slurm_job)["jobs"][0]
            return {"job": jid}
        if op == "attach":
            jid = self._job_arg(req)
            return {"job": jid, "hold": lambda conn: self._attached(jid, conn)}
        if op == "follow":
            return self.follow(self._job_arg(req), req.get("out"), req.get("err"))
        if op == "cancel":
            why = req.get("reason", "cancelled by its owner")
            if not isinstance(why, str) or len(why) > 200:
                raise ApiError("reason must be a string of at most 200 characters")
            return self.cancel(self._job_arg(req), why)
        if op == "move":
            return self.move(self._job_arg(req), self._machine_arg(req, "to", "machine"))
        if op == "drain":
            if not isinstance(req.get("undo", False), bool):
                raise ApiError("undo must be true or false")
            return self.drain(self._machine_arg(req, "board", "board"), not req.get("undo"))
        raise ApiError(f"unknown request {op!r:.80}")

    def _job_arg(self, req: dict) -> str:
        jid = req.get("job")
        if not isinstance(jid, str) or jid not in self.records:
            raise ApiError(f"no job {jid!r:.80}")
        return jid

    def _machine_arg(self, req: dict, key: str, kind: str) -> str:
        name = req.get(key)
        if not isinstance(name, str) or name not in self.state.machines \
                or kind == "board" and self.state.machines[name].kind != "board":
            raise ApiError(f"no {kind} {name!r:.80}")
        return name

    def move(self, jid: str, dst: str) -> dict:
        """An operator's move of a running job (`hexo move`): started at once, carried out
        as any migration; the reply does not wait for it."""
        with self.lock:
            try:
                self._event(self.policy.on_move_request, jid, dst)
            except TransitionError as e:
                raise ApiError(str(e)) from None
            return {"job": jid, "from": self.state.jobs[jid].location, "to": dst}

    def drain(self, board: str, draining: bool) -> dict:
        """`hexo drain BOARD [--undo]`: the policy moves the board's jobs elsewhere (other
        boards first) and sends nothing there until it is undrained; the jobs leaving it."""
        with self.lock:
            self._event(self.policy.on_drain, board, draining)
            leaving = sorted(j.id for j in self.state.migrating() if j.location == board)
            return {"board": board, "draining": draining, "leaving": leaving,
                    "staying": [j.id for j in self.state.running_on(board)]}

    def submit(self, specs: list, **record) -> dict:
        """Check every job first, so that a bad one leaves the queue as it was. `record`:
        extra JobRecord fields of every job (a `hexo run` client's)."""
        from hexo.image import Image, ImageError
        checked = []
        for s in specs:
            image, vcpus, mem_bytes, args = parse_job_spec(s)
            try:
                img = Image(image)
            except ImageError as e:
                raise ApiError(str(e)) from None
            need = {m.isa for m in self.cfg.machines}
            if not need <= set(img.isas):
                raise ApiError(f"{image}: has builds for {', '.join(img.isas)}; the cluster "
                               f"needs {', '.join(sorted(need))}")
            needed = int(img.manifest.get("memory", {}).get("min_mem", 0))
            if mem_bytes < needed:
                raise ApiError(f"{image}: mem {mem_bytes / MIB:.3g} MiB is below the "
                               f"{needed / MIB:.3g} MiB this image needs")
            mem = mem_bytes / MIB
            if not any(vcpus <= m.usable_cores and mem <= m.ram_mb
                       for m in self.state.machines.values()):
                raise ApiError(f"{image}: {vcpus} vCPUs and {mem:.0f} MiB fit on no "
                               "machine of the cluster")
            bench, klass = benchmark_of(img.manifest)
            if "migration" in img.manifest:
                slow, source = self.estimator.estimate(bench, klass)
                if not slow and self.state.boards:
                    source = f"{source}; {SAMPLING}"
            else:
                slow, source = {}, "no estimate: the image was built with --no-migratable, " \
                                   "so it is never offloaded"
            checked.append((str(Path(image).resolve()), vcpus, mem, bench, klass, slow, source,
                            args))
        ids = []
        with self.lock:
            for image, vcpus, mem, bench, klass, slow, source, args in checked:
                jid = f"job-{self.next_id}"
                # counted before the event, which saves the state with the job in it: a
                # daemon killed right after would otherwise hand out this id again
                self.next_id += 1
                job = Job(jid, vcpus, mem, benchmark=bench, slowdown=dict(slow))
                self.records[jid] = JobRecord(jid, image, bench, klass, source, args=args,
                                              **record)
                if record.get("attached"):
                    self.seen[jid] = time.time()
                try:
                    self._event(self.policy.on_submit, job)
                except ValueError as e:            # refused by the policy: no trace of it left
                    del self.records[jid]
                    self.next_id -= 1
                    if jid in self.state.jobs:
                        raise
                    raise ApiError(str(e)) from None
                log.info("submitted %s: %s, %d vCPU, %.0f MiB; estimate: %s", jid, image, vcpus,
                         mem, source)
                if source.endswith(SAMPLING):
                    self._request_samples(jid)
                ids.append(jid)
        return {"jobs": ids}

    def status(self) -> dict:
        with self.lock:
            machines = []
            for m in self.cfg.machines:
                pm = self.state.machines[m.name]
                cores, ram = self.state.used(m.name)
                machines.append({"name": m.name, "kind": m.kind, "model": m.model,
                                 "isa": m.isa, "backend": m.backend, "emulated": m.emulated,
                                 "cores_usable": pm.usable_cores, "cores_used": cores,
                                 "ram_mb": pm.ram_mb, "ram_used_mb": ram,
                                 "silent_s": (round(time.time() - self.silent_since[m.name], 1)
                                              if m.name in self.silent_since else None),
                                 "draining": m.name in self.state.draining,
                                 "sampling": m.name in self.state.sampling})
            jobs = []
            for jid, rec in self.records.items():
                j = self.state.jobs[jid]
                jobs.append({"id": jid, "image": rec.image, "state": j.state.value,
                             "location": j.location, "vcpus": j.vcpus, "mem_mb": j.mem_mb,
                             "benchmark": rec.benchmark, "npb_class": rec.npb_class,
                             "slowdown": dict(j.slowdown),
                             "estimate_source": rec.estimate_source,
                             "migrating_to": j.migration.dst if j.migration else None,
                             "migrations": [dict(h) for h in rec.history],
                             "segments": [dict(vars(s)) for s in rec.segments],
                             "outcome": rec.outcome, "output": rec.output,
                             "slurm_job": rec.slurm_job,
                             "saved": dict(vars(rec.saved)) if rec.saved else None,
                             "losses": [dict(x) for x in rec.losses]})
            return {"policy": self.policy.name, "counters": self.estimator.counters,
                    "energy": self._energy(),
                    "metrics": f"http://{self.cfg.metrics_addr}:{self.metrics_port}/metrics",
                    "machines": machines, "queue": list(self.state.queue), "jobs": jobs,
                    "decisions": self.decisions[-50:]}

    def follow(self, jid: str, out, err) -> dict:
        """For `hexo run`: the job's output from the client's offsets on (relay.py), where the
        job is, and once it is done its outcome. Each call renews the client's lease."""
        offsets = {"out": out, "err": err}
        for name, v in offsets.items():
            if type(v) is not int or v < 0:
                raise ApiError(f"{name} must be a byte offset (an integer >= 0), got {v!r:.40}")
        with self.lock:
            rec, j = self.records[jid], self.state.jobs[jid]
            if rec.attached:
                self.seen[jid] = time.time()
            parts = {st: self._output_parts(jid, st) for st in relay.STREAMS}
            done = j.state is JobState.DONE
            reply = {"job": jid, "state": j.state.value, "location": j.location,
                     "migrating_to": j.migration.dst if j.migration else None,
                     "epoch": max(0, sum(s.kind == "run" for s in rec.segments) - 1),
                     "outcome": rec.outcome if done else None, "rc": None, "cause": None}
            if done and rec.outcome and rec.outcome.startswith("exit "):
                reply["rc"] = int(rec.outcome.split()[1])
                last = self.cfg.state_dir / "jobs" / jid / f"seg{rec.current.n}.err"
                reply["cause"] = first_report(LocalFiles().read(str(last)))
        more = False
        for st in relay.STREAMS:
            data, m = relay.read(parts[st], st, offsets[st])
            reply[st] = base64.b64encode(data).decode()
            more |= m
        return {**reply, "more": more}

    def _output_parts(self, jid: str, stream: str) -> list[relay.Part]:
        """The files of one stream of the job, in order, up to a restore not yet confirmed
        (lock held)."""
        rec = self.records[jid]
        pg = rec.progress
        held = {pg.dst_seg, pg.resume_seg} if pg else set()
        parts = []
        for s in rec.segments:
            if s.discarded:
                continue
            if s.n in held:
                break
            copy = self.cfg.state_dir / "jobs" / jid / f"seg{s.n}.{stream}"
            if (s.rc is not None or s.lost) and copy.exists():
                parts.append(relay.local_part(str(copy)))
            else:
                agent = self.agents[s.machine]
                path = agent.seg_path(jid, s.n, stream)
                if agent.host.remote:
                    def files(fn, a=agent, n=s.n):
                        return fn(self._snapshot(a, jid, n))
                else:
                    files = agent.host.files
                parts.append(relay.Part(files, path, s.rc is not None))
        return parts

    def _snapshot(self, agent: MachineAgent, jid: str, n: int) -> relay.Snapshot:
        """Both output files of a segment on a board, read at most every REMOTE_PROBE_S in
        one SFTP session whoever asks."""
        key = (agent.name, jid, n)
        with self.snapshot_lock:
            taken, snap = self.snapshots.get(key, (0.0, None))
            if snap is None or time.time() - taken >= REMOTE_PROBE_S:
                paths = [agent.seg_path(jid, n, st) for st in relay.STREAMS]
                snap = relay.Snapshot(agent.host.files(
                    lambda fs: {p: fs.read_bytes(p) for p in paths}))
                self.snapshots = {k: v for k, v in self.snapshots.items()
                                  if time.time() - v[0] < 60}
                self.snapshots[key] = (time.time(), snap)
            return snap

    def cancel(self, jid: str, why: str) -> dict:
        """Stop the job wherever it is and remove everything of it. A job being migrated is
        cancelled as soon as its migration has settled (succeeded or resumed at the source),
        so that no copy is left behind on either side."""
        with self.lock:
            rec, j = self.records[jid], self.state.jobs[jid]
            if j.state is not JobState.DONE:
                rec.cancel = rec.cancel or why
                self._save()
                if jid not in self.workers:
                    self._cancel_now(jid)
            return {"job": jid, "state": j.state.value, "outcome": rec.outcome}

    def _cancel_now(self, jid: str) -> None:
        """(lock held)"""
        rec, j = self.records[jid], self.state.jobs[jid]
        machines = {s.machine for s in rec.segments} | {j.location} - {None}
        for m in sorted(machines):
            try:
                self.agents[m].discard(jid)
            except HostError as e:
                log.error("cancelling %s: %s; what it left on %s stays there", jid, e, m)
        shutil.rmtree(self.cfg.state_dir / "jobs" / jid, ignore_errors=True)
        for t in (self.cfg.state_dir / "transfer").glob(f"{jid}-*"):
            shutil.rmtree(t, ignore_errors=True)
        rec.outcome, rec.output, rec.progress = f"cancelled: {rec.cancel}", None, None
        self.seen.pop(jid, None)
        self.metrics.completed.labels("cancelled").inc()
        self._decision("cancel", jid, f"cancel {jid} ({j.state.value}"
                       + (f" on {j.location}" if j.location else "") + f"): {rec.cancel}")
        self._event(self.policy.on_job_cancelled, jid)

    def _attached(self, jid: str, conn) -> None:
        """A `hexo run` client stays connected while it follows its job: when its end of the
        connection closes (the client was killed, e.g. by Slurm after the batch shell it ran
        in), the job is cancelled at once. A daemon that stops closes these connections
        itself and cancels nothing: clients reconnect to the next one."""
        conn.settimeout(None)
        try:
            while conn.recv(64):
                pass
        except OSError:
            pass
        if self.stopping.is_set():
            return
        self.cancel(jid, "its hexo run client is gone")

    def _cancel_due(self) -> None:
        """Cancels that waited for a migration to settle, and jobs whose `hexo run` client
        stopped asking for their output (killed before it could cancel) (lock held)."""
        now = time.time()
        for jid, j in list(self.state.active.items()):
            rec = self.records[jid]
            if rec.attached and rec.cancel is None \
                    and now - self.seen.get(jid, now) > self.cfg.client_lease_s:
                rec.cancel = (f"its hexo run client has not asked for {self.cfg.client_lease_s:g}"
                              " s")
            if rec.cancel is not None and jid not in self.workers:
                self._cancel_now(jid)

    def _energy(self) -> dict:
        """Energy since this daemon started, from each machine's power model and its busy
        cores over time (lock held)."""
        joules = self.energy.close(time.time())
        done = sum(j.state is JobState.DONE for j in self.state.jobs.values())
        total = sum(joules.values())
        return {"source": "modelled: HEXO Table 1 wall power, linear in busy cores "
                          f"(a core is busy while it holds a job); {self.rapl}",
                "since": self.energy_since,
                "machines": {m.name: {"power_model": m.power_model, "joules": joules[m.name]}
                             for m in self.cfg.machines},
                "energy_kj": total / 1000.0, "jobs_completed": done,
                "jobs_per_kj": done / (total / 1000.0) if total else 0.0,
                "joules_per_job": total / done if done else None}

    # -- watching running jobs -----------------------------------------------------------------
    def _request_samples(self, jid: str) -> None:
        """A derived estimate of the job for every board model (sample.py): on the emulator
        for an emulated model, on an idle board of the model for another."""
        rec = self.records[jid]
        models = sorted({b.model for b in self.state.boards})
        self.derived[jid] = dict.fromkeys(models)
        for model in models:
            self.sampler.request(jid, rec.image, rec.args, int(self.state.jobs[jid].mem_mb * MIB),
                                 model, on_board=model not in self.estimator.emulated)

    def _derived_source(self, jid: str) -> str:
        """The job's estimate sentence: each board model's derived estimate, then the models
        still waiting for theirs (or, once the job has ended, that it ended first)."""
        parts = self.derived[jid]
        done = [why for _, why in sorted(parts.items()) if why is not None]
        waiting = [model for model, why in sorted(parts.items()) if why is None]
        if waiting:
            ended = self.state.jobs[jid].state is JobState.DONE
            done.append(f"{', '.join(waiting)}: {ENDED_FIRST if ended else SAMPLING}")
        return "; ".join(done)

    def _sampled(self, jid: str, model: str, result: dict) -> None:
        """A derived estimate (sample.py) arrived, on the sampler's thread: into the policy,
        which may now offload the job to boards of `model`."""
        slow, why = self.estimator.from_sample(result, model)
        with self.lock:
            rec, job = self.records.get(jid), self.state.jobs.get(jid)
            if rec is None or jid not in self.derived:
                return
            self.derived[jid][model] = why
            rec.estimate_source = self._derived_source(jid)
            log.info("estimate of %s: %s", jid, why)
            if job.state is not JobState.DONE:
                for board, s in slow.items():
                    self._event(self.policy.on_estimate, jid, board, s)
            self._save()

    def _claim_board(self, jid: str, model: str) -> str | None:
        """An idle board of `model` to time a sample on, kept free of jobs until it is
        released; None while every one holds a job, is silent, draining or sampling."""
        with self.lock:
            for m in self.cfg.machines:
                if m.kind == "board" and m.model == model and not self.state.holders(m.name) \
                        and m.name not in (self.state.down | self.state.draining
                                           | self.state.sampling | set(self.unreachable)):
                    self.state.sampling.add(m.name)
                    log.info("timing a sample of %s on board %s (nothing goes there "
                             "meanwhile)", jid, m.name)
                    return m.name
        return None

    def _release_board(self, board: str) -> None:
        with self.lock:
            self.state.sampling.discard(board)

    def sample_counters(self, now: float) -> None:
        """Where the server has hardware counters: each server job's vCPU thread, about once a
        second, through the model into the policy (HEXO §4.3). Elsewhere the calibration
        estimates stay, and `hexo status` says so."""
        if not self.estimator.hardware or now - self.last_sample < SAMPLE_S:
            return
        self.last_sample = now
        server = next(m for m in self.cfg.machines if m.kind == "server")
        with self.lock:
            running = [j.id for j in self.state.active.values()
                       if j.state is JobState.RUNNING and j.location == server.name]
        threads = {}
        for jid in running:
            try:
                vm = json.loads(LocalFiles().read(f"{server.run_dir}/{jid}.json") or "{}")
                threads[(jid, int(vm["vcpu_tid"]))] = jid
            except (ValueError, KeyError, TypeError):
                continue                        # not started, not KVM, or being rewritten
        for key in set(self.samplers) - set(threads):
            self.samplers.pop(key).close()
        for key, jid in threads.items():
            try:
                if key not in self.samplers:
                    self.samplers[key] = PerfEventSource(key[1])
                rates = self.samplers[key].sample(now)
            except (CountersUnavailable, OSError) as e:
                log.warning("counters of %s: %s", jid, e)
                continue
            if rates is None:
                continue
            slow, why = self.estimator.predict(rates)
            with self.lock:
                if jid in self.records:
                    self.records[jid].estimate_source = why
                    for board, s in slow.items():
                        self._event(self.policy.on_estimate, jid, board, s)

    def poll_once(self) -> None:
        now = time.time()
        with self.lock:
            wanted: dict[str, list[tuple[str, int]]] = {}
            for j in self.state.active.values():
                if j.state is JobState.RUNNING and j.id not in self.workers:
                    seg = self.records[j.id].current
                    wanted.setdefault(j.location, []).append((j.id, seg.n))
            self._cancel_due()
        results, failed = {}, self._failed_boards()
        for machine, segs in wanted.items():
            if machine in failed:
                continue
            agent = self.agents[machine]
            if agent.host.remote and now - self.last_probe.get(machine, 0) < REMOTE_PROBE_S:
                continue
            self.last_probe[machine] = now
            try:
                results[machine] = agent.probe(segs)
                self._board_answers(machine, None)
            except HostError as e:
                log.warning("cannot probe %s: %s", machine, e)
                self._board_answers(machine, str(e))
        for m in self.cfg.machines:
            if m.kind == "board" and m.name not in wanted and m.name not in failed \
                    and now - self.last_probe.get(m.name, 0) >= BOARD_CHECK_S:
                self.last_probe[m.name] = now
                try:
                    self.agents[m.name].host.files(lambda fs, d=m.work_dir: fs.exists(d))
                    self._board_answers(m.name, None)
                except HostError as e:
                    self._board_answers(m.name, str(e))
        with self.lock:
            for machine, probes in results.items():
                for (jid, n), p in probes.items():
                    j, rec = self.state.jobs[jid], self.records[jid]
                    if j.state is not JobState.RUNNING or j.location != machine \
                            or rec.current.n != n or jid in self.workers:
                        continue                       # changed while we probed
                    self._check_segment(jid, rec.current, p)
            self._resume_lost_jobs(time.time())
            self._start_live_checkpoints(time.time())
            self._event(self.policy.on_tick)

    # -- board failure -------------------------------------------------------------------------
    def _failed_boards(self) -> set[str]:
        """Boards whose console shows a kernel oops or panic. Such a board has lost its jobs
        now, not after `board_lost_after_s` of silence (its sshd may still answer while the
        kernel hangs), so they resume from their saved checkpoints; it is not probed until its
        console is a new one (the board booted again)."""
        failed = set()
        for name, watch in self.consoles.items():
            report = watch.check()
            if report is None or not report.fatal:
                continue
            failed.add(name)
            self._board_answers(name, f"its kernel reported {report.summary()} (console "
                                      f"{watch.path})", what="has failed")
            lost_at = time.time() - self.cfg.board_lost_after_s
            self.silent_since[name] = min(self.silent_since.get(name, lost_at), lost_at)
        return failed

    def _resume_lost_jobs(self, now: float) -> None:
        """Jobs on a board that has not answered for `board_lost_after_s` resume elsewhere
        (lock held); the board stops them when it answers again."""
        for board, since in self.silent_since.items():
            if now - since < self.cfg.board_lost_after_s:
                continue
            for j in list(self.state.active.values()):
                if j.state is JobState.RUNNING and j.location == board \
                        and j.id not in self.workers:
                    self.left_behind.setdefault(board, set()).add(j.id)
                    self._job_lost(j.id, self.records[j.id].current,
                                   f"did not answer for {now - since:.0f} s", now - since)

    def _start_live_checkpoints(self, now: float) -> None:
        """Every `checkpoint_period_s`, a live checkpoint of each job on a board that answers,
        saved here (lock held; saved.py)."""
        period = self.cfg.checkpoint_period_s
        if period <= 0:
            return
        for j in self.state.active.values():
            if j.state is not JobState.RUNNING or j.id in self.workers or j.id in self.savers \
                    or self.cfg.machine(j.location).kind != "board" \
                    or j.location in self.unreachable:
                continue
            rec = self.records[j.id]
            seg = rec.current
            since = max(seg.launched_at, self.save_tried.get(j.id, 0.0))
            if rec.saved is not None and rec.saved.seg == seg.n:
                since = max(since, rec.saved.taken)
            if seg.rc is None and now - since >= period:
                log.info("%s: live checkpoint on %s", j.id, j.location)
                self.save_tried[j.id] = now
                t = threading.Thread(target=self._take_live_checkpoint, args=(j.id, seg),
                                     daemon=True, name=f"save-{j.id}")
                self.savers[j.id] = t
                t.start()

    def _take_live_checkpoint(self, jid: str, seg: Segment) -> None:
        agent, new = self.saver_agents[seg.machine], None
        try:
            new = saved.take_live(agent, self.cfg.state_dir / "jobs" / jid, jid, seg,
                                  self.cfg.server.isa, self.cfg.checkpoint_timeout_s)
        except (saved.SaveFailed, HostError, OSError) as e:
            log.warning("no saved checkpoint of %s this time: %s", jid, e)
        finally:
            with self.lock:
                self.savers.pop(jid, None)
                rec = self.records[jid]
                if new is not None and (rec.current is not seg or seg.lost or rec.cancel
                                        or self.state.jobs[jid].state is JobState.DONE):
                    saved.drop(new)             # the job moved, ended or went meanwhile
                    new = None
                if new is not None:
                    old, rec.saved = rec.saved, new
                    self._save()
        if new is not None:
            saved.drop(old)
            log.info("%s: checkpoint of segment %d on %s saved (output %s)", jid, seg.n,
                     seg.machine, new.output)

    def _wait_for_saver(self, jid: str) -> None:
        """A migration's own checkpoint waits for a live one under way."""
        t = self.savers.get(jid)
        if t is not None:
            t.join()

    def _board_answers(self, board: str, error: str | None, what: str = "does not answer"
                       ) -> None:
        """Track which boards answer; with `slurm_node` set, the Slurm node is drained while
        one does not (Slurm cannot shrink a node, slurm.py) and resumed when all answer."""
        if self.cfg.machine(board).kind != "board":
            return
        if error is None and board not in self.reached:
            self.reached.add(board)
            log.info("board %s answers", board)
        if (error is None) == (board not in self.unreachable):
            return
        if error is None:
            log.info("board %s answers again", board)
            del self.unreachable[board]
            self.silent_since.pop(board, None)
            for jid in sorted(self.left_behind.pop(board, ())):
                try:
                    if self.agents[board].kill_vm(jid):
                        log.info("stopped %s on %s: it resumed elsewhere while the board was "
                                 "silent", jid, board)
                except HostError as e:
                    log.warning("could not stop the copy of %s left on %s: %s", jid, board, e)
            with self.lock:                 # only now may the policy send jobs there again
                self.state.down.discard(board)
        else:
            log.error("board %s %s: %s", board, what, error)
            self.unreachable[board] = error
            self.silent_since[board] = time.time()
            with self.lock:
                self.state.down.add(board)
        if not self.cfg.slurm_node:
            return
        from . import slurm
        conf = str(self.cfg.slurm_conf) if self.cfg.slurm_conf else None
        try:
            if self.unreachable:
                left = sum(m.cores - m.reserved_cores for m in self.cfg.machines
                           if m.name not in self.unreachable)
                total = sum(m.cores - m.reserved_cores for m in self.cfg.machines)
                slurm.drain(self.cfg.slurm_node, f"hexo: {', '.join(sorted(self.unreachable))} "
                            f"unreachable, {left} of {total} CPUs left", conf=conf)
                self.drained = True
            elif self.drained:
                slurm.resume(self.cfg.slurm_node, conf=conf)
                self.drained = False
        except slurm.SlurmError as e:
            log.error("cannot update Slurm node %s: %s", self.cfg.slurm_node, e)

    def _check_segment(self, jid: str, seg: Segment, p: SegmentProbe) -> None:
        key = (jid, seg.n)
        if p.ended:
            self.vanished.pop(key, None)
            self._segment_ended(jid, seg, p)
            if p.checkpointed:
                log.error("%s was checkpointed outside the daemon on %s; it is requeued", jid,
                          seg.machine)
                self._job_failed(jid)
                return
            self._finished(jid, seg, p, self.policy.on_job_finished)
            return
        if p.vm_state is not None:
            self.vanished.pop(key, None)
            return
        if not p.launched and time.time() - seg.launched_at < LAUNCH_GRACE_S:
            return
        first = self.vanished.setdefault(key, time.time())
        if p.launched and time.time() - first < VANISHED_GRACE_S:
            return
        self.vanished.pop(key, None)
        self._job_lost(jid, seg, "has neither a VM nor an exit status" if p.launched
                       else "was never launched")

    def _finished(self, jid: str, seg: Segment, p: SegmentProbe, event) -> None:
        rec = self.records[jid]
        saved.drop(rec.saved)
        rec.saved = None
        rec.outcome = f"exit {p.rc}"
        rec.output = str(self._join_output(jid))
        self.metrics.completed.labels(rec.outcome).inc()
        log.info("%s ended on %s with status %d after %d segment(s); output in %s", jid,
                 seg.machine, p.rc, len(rec.segments), rec.output)
        self._event(event, jid)
        if jid in self.derived and rec.estimate_source.endswith(SAMPLING):
            rec.estimate_source = self._derived_source(jid)     # it ended before sampling
            self._save()

    def _job_failed(self, jid: str) -> None:
        for s in self.records[jid].segments:
            s.discarded = True
        self._event(self.policy.on_job_failed, jid)

    def _job_lost(self, jid: str, seg: Segment, why: str, silent_s: float = 0.0) -> None:
        """Segment `seg`'s machine lost the job (lock held): it resumes from its saved
        checkpoint, its output cut where the checkpoint was taken, or else from the start.
        The work lost is the time since that checkpoint (or since the job first started), of
        which `silent_s` passed while the daemon waited for a silent board to answer."""
        rec, now = self.records[jid], time.time()
        kept = rec.saved
        if kept is None:
            lost_s = now - rec.segments[0].launched_at
            log.error("%s: segment %d on %s %s; no saved checkpoint: the job starts again",
                      jid, seg.n, seg.machine, why)
            for s in rec.segments:
                s.discarded = True
        else:
            lost_s = now - (kept.taken if kept.seg == seg.n else seg.launched_at)
            seg.lost = True
            short = saved.cut_output(kept, seg, self.cfg.state_dir / "jobs" / jid)
            if any(short.values()):
                log.error("%s: the copy of segment %d's output lacks %s bytes before its "
                          "checkpoint", jid, seg.n, short)
            log.error("%s: segment %d on %s %s; it resumes from its %s checkpoint of %.1f s "
                      "ago", jid, seg.n, seg.machine, why, kept.kind, lost_s)
        rec.losses.append({"time": now, "machine": seg.machine, "why": why,
                           "resumed_from": kept.kind if kept else "start",
                           "lost_s": round(lost_s, 3), "silent_s": round(silent_s, 3),
                           "checkpoint_period_s": self.cfg.checkpoint_period_s})
        self.metrics.work_lost.inc(lost_s)
        self.metrics.losses.labels("checkpoint" if kept else "start").inc()
        self._event(self.policy.on_job_lost, jid)

    def _segment_ended(self, jid: str, seg: Segment, p: SegmentProbe) -> None:
        seg.rc, seg.checkpointed = p.rc, p.checkpointed
        try:
            self.agents[seg.machine].fetch_segment(jid, seg.n, self.cfg.state_dir / "jobs" / jid)
        except (HostError, OSError) as e:
            log.error("cannot fetch the output of %s segment %d from %s: %s", jid, seg.n,
                      seg.machine, e)

    def _join_output(self, jid: str) -> Path:
        d = self.cfg.state_dir / "jobs" / jid
        out = d / "output.txt"
        with open(out, "w") as f:
            for s in self.records[jid].segments:
                part = d / f"seg{s.n}.out"
                if not s.discarded and part.exists():
                    f.write(part.read_text(errors="replace"))
        return out

    # -- migrations ----------------------------------------------------------------------------
    def _spawn_worker(self, jid: str) -> None:
        t = threading.Thread(target=self._migrate, args=(jid,), daemon=True,
                             name=f"migrate-{jid}")
        self.workers[jid] = t
        t.start()

    def _migrate(self, jid: str) -> None:
        try:
            self._migration_steps(jid)
        except Exception as e:               # whatever failed, the job must go on somewhere
            log.warning("migration of %s failed: %s", jid, e)
            self._recover(jid, e.outcome if isinstance(e, BoardSilent) else str(e))
        finally:
            with self.lock:
                self.workers.pop(jid, None)
                if self.records[jid].cancel is not None \
                        and self.state.jobs[jid].state is not JobState.DONE:
                    self._cancel_now(jid)

    def _recover(self, jid: str, why: str) -> None:
        """Resume the job at its source after a failed migration. A source board that stays
        silent for `board_lost_after_s` has lost the job: it resumes from its saved checkpoint
        (or the start), as when a board dies under a running job."""
        src = self.agents[self.records[jid].progress.src]
        first_failure = None
        while not self.stopping.is_set():
            try:
                self._migration_failed(jid, why)
                return
            except (HostError, BoardSilent) as e:
                if not src.host.remote:       # the server itself: keep trying
                    log.warning("cannot resume %s at its source yet (%s); retrying in %g s",
                                jid, e, RETRY_S)
                    self.stopping.wait(RETRY_S)
                    continue
                first_failure = first_failure or time.time()
                silent = e.seconds if isinstance(e, BoardSilent) \
                    else self._silent_for(src.name, first_failure)
                if silent >= self.cfg.board_lost_after_s:
                    self._source_lost(jid, silent, str(e))
                    return
                log.warning("cannot resume %s at its source yet (%s); retrying", jid, e)
                self.stopping.wait(min(RETRY_S, self.cfg.board_lost_after_s - silent))
            except Exception:
                if not self.stopping.is_set():
                    log.exception("could not recover %s after a failed migration; the next "
                                  "daemon start retries", jid)
                return

    def _silent_for(self, board: str, first_failure: float) -> float:
        """How long a board has not answered: since this worker's first failed call to it, or
        since the main loop saw it fall silent, whichever is earlier."""
        return time.time() - min(first_failure, self.silent_since.get(board, first_failure))

    def _leave_behind(self, board: str, jid: str, error: str) -> None:
        """A copy of `jid` may live on a board that does not answer: it is stopped when the
        board answers again (_board_answers)."""
        with self.lock:
            self.left_behind.setdefault(board, set()).add(jid)
        self._board_answers(board, error)

    def _source_lost(self, jid: str, silent_s: float, error: str) -> None:
        """The board a job was migrating from stopped answering before any target confirmed:
        the migration is off and the job resumes from its saved checkpoint (or the start)."""
        with self.lock:
            rec = self.records[jid]
            pg = rec.progress
        self._leave_behind(pg.src, jid, error)
        for n in (pg.dst_seg, pg.resume_seg):
            m = n is not None and rec.segments[n].machine
            if m and m != pg.src:
                try:
                    self.agents[m].kill_vm(jid)
                except HostError as e:
                    self._leave_behind(m, jid, str(e))
        why = f"board {pg.src} silent for {silent_s:.0f} s"
        with self.lock:
            for n in (pg.dst_seg, pg.resume_seg):
                if n is not None:
                    rec.segments[n].discarded = True
            rec.progress = None
            rec.history[-1].update(outcome=f"failed: {why}", ended=time.time())
            self.metrics.migrations.labels(pg.src, pg.dst, "failed").inc()
            self._job_lost(jid, rec.segments[pg.src_seg], f"went silent while {jid} migrated "
                           f"to {pg.dst}", silent_s)      # the policy requeues a migrating job

    def _probe1(self, agent: MachineAgent, jid: str, n: int) -> SegmentProbe:
        return agent.probe([(jid, n)])[(jid, n)]

    def _pause(self, agent: MachineAgent) -> None:
        """Between probes while a migration waits on a machine (a probe is cheap: one shell)."""
        time.sleep(0.1 if agent.host.remote else 0.02)

    def _settled(self, agent: MachineAgent, jid: str, n: int, timeout: float) -> SegmentProbe:
        """Wait until the segment's VM runs undisturbed or has ended."""
        deadline = time.time() + timeout
        while True:
            p = self._probe1(agent, jid, n)
            if p.ended or p.vm_state == "running" or time.time() > deadline:
                return p
            self._pause(agent)

    def _migration_steps(self, jid: str) -> None:
        with self.lock:
            rec = self.records[jid]
            pg = rec.progress
        if pg.phase == "resume":
            raise MigrationFailed(pg.failure or "resuming at the source")
        src, dst = self.agents[pg.src], self.agents[pg.dst]
        wait_s = self.cfg.checkpoint_timeout_s + 60
        if pg.phase == "checkpoint":
            self._wait_for_saver(jid)
            log.info("migration of %s: checkpoint on %s", jid, src.name)
            p = self._settled(src, jid, pg.src_seg, wait_s)
            if not p.ended:
                ok, msg = src.checkpoint(jid, pg.src_seg, self.cfg.checkpoint_timeout_s)
                log.info("checkpoint of %s on %s: %s", jid, src.name, msg)
                p = self._settled(src, jid, pg.src_seg, wait_s)
                if ok:
                    deadline = time.time() + wait_s    # the VM stops, then its status appears
                    while not p.ended and time.time() < deadline:
                        self._pause(src)
                        p = self._probe1(src, jid, pg.src_seg)
            if not p.checkpointed:
                raise MigrationFailed(f"{jid} was not checkpointed on {src.name} ("
                                      + ("it ended first" if p.ended else "no migration point "
                                         "reached in time") + ")")
            counts = src.host.files(lambda fs: fs.read(
                src.checkpoint_dir(jid, pg.src_seg) + "/checkpoint.json"))
            with self.lock:
                self._segment_ended(jid, rec.segments[pg.src_seg], p)
                pg.phase, pg.output = "transfer", json.loads(counts or "{}").get("output")
                self._save()
        launched = False                        # known only when resuming at phase restore
        if pg.phase == "transfer":
            log.info("migration of %s: transfer %s -> %s", jid, src.name, dst.name)
            ck = self._transfer(jid, rec, pg, src, dst)
            with self.lock:
                pg.dst_checkpoint, pg.dst_seg, pg.phase = ck, rec.next_seg(), "restore"
                rec.segments.append(Segment(pg.dst_seg, dst.name, "restore", time.time(),
                                            **self._base(pg)))
                self._save()
        else:
            launched = self._probe1(dst, jid, pg.dst_seg).launched
        if not launched:
            log.info("migration of %s: restore on %s", jid, dst.name)
            try:
                dst.restore(jid, pg.dst_seg, pg.dst_checkpoint, dst.image_path(Path(rec.image)))
            except HostError as e:              # it may have started: confirmation decides
                log.warning("launching the restore of %s on %s: %s", jid, dst.name, e)
        log.info("migration of %s: waiting for %s to confirm", jid, dst.name)
        self._confirm(dst, jid, pg.dst_seg)
        with self.lock:
            rec.progress = None
            rec.history[-1].update(outcome="done", ended=time.time())
            self.metrics.migrations.labels(pg.src, pg.dst, "done").inc()
            log.info("%s runs on %s (confirmed); removing its source checkpoint on %s", jid,
                     dst.name, src.name)
            self._event(self.policy.on_migration_finished, jid)
        self._keep_or_remove_source(jid, rec, pg, src, dst)

    @staticmethod
    def _base(pg: MigrationProgress) -> dict:
        """A segment restored from the migration's checkpoint starts at its output counts."""
        return {"output_base": dict(pg.output)} if pg.output else {}

    def _keeps_source(self, dst: MachineAgent) -> bool:
        """A job moved onto a board keeps its source checkpoint here as its saved state (what
        it resumes from if the board dies before its first live checkpoint)."""
        return dst.cfg.kind == "board" and self.cfg.checkpoint_period_s > 0

    def _transfer_dir(self, jid: str, src_seg: int) -> Path:
        return self.cfg.state_dir / "transfer" / f"{jid}-{src_seg}"

    def _keep_or_remove_source(self, jid: str, rec: JobRecord, pg: MigrationProgress,
                               src: MachineAgent, dst: MachineAgent) -> None:
        """The source checkpoint becomes the job's saved state (_keeps_source: from a board
        source, the copy the transfer brought here) or goes, and so does an older saved
        state."""
        ck, tmp = src.checkpoint_dir(jid, pg.src_seg), self._transfer_dir(jid, pg.src_seg)
        kept = None
        if self._keeps_source(dst):
            try:
                here = Path(ck)
                if src.host.remote:
                    here = tmp / "source"
                    if not here.exists():           # a restarted daemon: fetched again
                        src.host.get_dir(ck, here)
                kept = saved.adopt(here, self.cfg.state_dir / "jobs" / jid, pg.src_seg)
            except (saved.SaveFailed, OSError, HostError) as e:
                log.warning("cannot keep the source checkpoint of %s: %s", jid, e)
        shutil.rmtree(tmp, ignore_errors=True)
        with self.lock:
            old, rec.saved = rec.saved, kept
            self._save()
        saved.drop(old)
        try:
            src.remove(ck)
        except HostError as e:
            log.warning("could not remove the source checkpoint of %s: %s", jid, e)

    def _transfer(self, jid: str, rec: JobRecord, pg: MigrationProgress, src: MachineAgent,
                  dst: MachineAgent) -> str:
        """Source checkpoint -> this machine -> transformed for the target's ISA -> target.
        The source checkpoint itself is never modified."""
        tmp = self._transfer_dir(jid, pg.src_seg)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        src_ck = src.checkpoint_dir(jid, pg.src_seg)
        if src.host.remote:
            src.host.get_dir(src_ck, tmp / "source")
            src_ck = str(tmp / "source")
        final = dst.checkpoint_dir(jid, pg.src_seg, dst.cfg.isa)
        if src.cfg.isa == dst.cfg.isa:
            out = Path(src_ck)
        else:
            out = tmp / "transformed" if dst.host.remote else Path(final)
            shutil.rmtree(out, ignore_errors=True)
            p = subprocess.run([self.cfg.hexo, "transform", src_ck, "--to", dst.cfg.isa, "-o",
                                str(out), "--image", rec.image], capture_output=True, text=True,
                               timeout=600)
            if p.returncode:
                raise MigrationFailed(f"transform of {jid} for {dst.cfg.isa} failed: "
                                      f"{p.stderr.strip()}")
            log.info("%s: %s", jid, p.stdout.strip())
        if dst.host.remote or str(out) != final:
            dst.remove(final)
            dst.host.put_dir(out, final)
        shutil.rmtree(tmp / "transformed", ignore_errors=True)
        if not (src.host.remote and self._keeps_source(dst)):
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _confirm(self, dst: MachineAgent, jid: str, n: int) -> None:
        """The target confirms when its restored VM has passed a migration point (its state
        was sound) or has run to a normal end; merely starting is not enough. A target board
        that does not answer may be running the job, so the source copy stays until it has
        been silent for `board_lost_after_s` (BoardSilent); its copy there is stopped when it
        answers again."""
        deadline = time.time() + self.cfg.confirm_timeout_s
        first_failure = None
        while time.time() < deadline or first_failure is not None:
            try:
                p = self._probe1(dst, jid, n)
                first_failure = None
            except HostError as e:
                if not dst.host.remote:
                    raise
                first_failure = first_failure or time.time()
                silent = self._silent_for(dst.name, first_failure)
                if silent >= self.cfg.board_lost_after_s:
                    self._leave_behind(dst.name, jid, str(e))
                    raise BoardSilent(dst.name, silent, str(e)) from None
                log.warning("cannot reach %s to confirm %s (%s); retrying", dst.name, jid, e)
                if self.stopping.wait(min(RETRY_S, self.cfg.board_lost_after_s - silent)):
                    raise MigrationFailed("the daemon stops; the next one confirms") from None
                continue
            if p.confirmed or (p.ended and p.rc == 0 and not p.checkpointed):
                return
            if p.ended:
                raise MigrationFailed(f"restore of {jid} on {dst.name} ended with status {p.rc}"
                                      + (f": {p.cause}" if p.cause else ""))
            self._pause(dst)
        dst.kill_vm(jid)
        raise MigrationFailed(f"{dst.name} did not confirm {jid} (no migration point passed) "
                              f"within {self.cfg.confirm_timeout_s:g} s")

    def _migration_failed(self, jid: str, why: str) -> None:
        """Resume the job where it was: still running there, or restored from its checkpoint."""
        with self.lock:
            rec = self.records[jid]
            pg = rec.progress
        src = self.agents[pg.src]
        p = self._settled(src, jid, pg.src_seg, self.cfg.checkpoint_timeout_s + 60)
        if p.ended and not p.checkpointed:
            with self.lock:
                rec.progress = None
                rec.history[-1].update(outcome="abandoned: the job ended before its checkpoint",
                                       ended=time.time())
                self.metrics.migrations.labels(pg.src, pg.dst, "abandoned").inc()
                log.info("%s ended on %s before it could be checkpointed; nothing to migrate",
                         jid, src.name)
                seg = rec.segments[pg.src_seg]
                self._segment_ended(jid, seg, p)
                self._finished(jid, seg, p, self.policy.on_migration_abandoned)
            return
        resumed = None
        if p.checkpointed:
            if pg.dst_seg is not None and pg.phase != "resume":
                try:
                    self.agents[pg.dst].kill_vm(jid)
                except HostError as e:
                    log.warning("could not stop %s on %s: %s", jid, pg.dst, e)
                    if self.agents[pg.dst].host.remote:
                        self._leave_behind(pg.dst, jid, str(e))
            with self.lock:
                if pg.phase == "resume":          # a retry: launched before, or about to be
                    resumed = rec.segments[pg.resume_seg]
                else:
                    if pg.dst_seg is not None:
                        rec.segments[pg.dst_seg].discarded = True
                    resumed = Segment(rec.next_seg(), src.name, "restore", time.time(),
                                      **self._base(pg))
                    rec.segments.append(resumed)
                    pg.phase, pg.resume_seg, pg.failure = "resume", resumed.n, why
                    self._save()
            if not self._probe1(src, jid, resumed.n).launched:
                ck = src.checkpoint_dir(jid, pg.src_seg)
                src.restore(jid, resumed.n, ck, src.image_path(Path(rec.image)))
            self._confirm(src, jid, resumed.n)
            why = pg.failure or why
        shutil.rmtree(self._transfer_dir(jid, pg.src_seg), ignore_errors=True)
        with self.lock:
            rec.progress = None
            rec.history[-1].update(outcome=f"failed: {why}", ended=time.time())
            self.metrics.migrations.labels(pg.src, pg.dst, "failed").inc()
            dst_model = self.state.machines[pg.dst].model
            # a board that went silent failed, not the job: it stays a candidate (the policy
            # sends nothing to that board until it answers again)
            if self.state.machines[pg.dst].kind == "board" and pg.dst not in self.unreachable \
                    and self.state.jobs[jid].slowdown.pop(dst_model, None) is not None:
                log.info("%s is no longer a candidate for %s boards: its estimate is dropped "
                         "so that the policy does not retry a failing migration", jid, dst_model)
            log.info("%s goes on on %s%s", jid, src.name,
                     f" (restored from its checkpoint as segment {resumed.n})" if resumed else "")
            self._event(self.policy.on_migration_failed, jid)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="hexo-schedd", description="hexo scheduler daemon: runs "
                                 "jobs on a server and offloads them to boards")
    ap.add_argument("--config", required=True, help="cluster.toml (see scheduler/README.md)")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"hexo-schedd: {e}", file=sys.stderr)
        return 2
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handlers = [logging.StreamHandler(), logging.FileHandler(cfg.state_dir / "schedd.log")]
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    try:
        daemon = Daemon(cfg)
        daemon.start()
    except (StateFileError, ConfigError, OSError) as e:
        log.error("cannot start: %s", e)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: daemon.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: daemon.stopping.set())
    daemon.loop()
    daemon.stop()
    log.info("stopped; running jobs go on and the next daemon adopts them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
