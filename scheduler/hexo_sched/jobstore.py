"""The daemon's persistent state: one JSON file in its state directory, replaced atomically.

It holds every job (the policy's view plus where each segment ran and how far a migration got),
the queue order and what the policy learned from finished jobs, so that a daemon killed at any
point and restarted rebuilds the same ClusterState, finishes what was under way and decides as
it would have. Format: docs/formats.md, section "Scheduler daemon state".
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .policy import ClusterState, Job, JobState, Migration, Policy, TransitionError
from .errors import SchedError

FORMAT = "hexo-schedd-state"
VERSION = (1, 6)
LEARNED_SINCE = (1, 4)


class StateFileError(SchedError, ValueError):
    pass


@dataclass
class Segment:
    """One run of a job on one machine (a fresh start or a restore)."""

    n: int
    machine: str
    kind: str                        # run | restore
    launched_at: float
    rc: int | None = None
    checkpointed: bool = False
    discarded: bool = False          # its output is not part of the job's (a failed restore)
    lost: bool = False               # its machine lost it: its output ends at the job's saved
                                     # checkpoint (the daemon's copy), the job resumed from there
    output_base: dict = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
                                     # the job's output counts when it started (0 or those of
                                     # the checkpoint it was restored from)


@dataclass
class MigrationProgress:
    """How far the daemon got with a migration, so that a restart can finish it.

    phase: checkpoint (asked the source VM to stop at a migration point) -> transfer (source
    stopped, checkpoint in its own ISA on the source) -> restore (target segment launched or
    about to be) -> done; after a failure, resume (the job is being restored at the source
    from that checkpoint)."""

    src: str
    dst: str
    src_seg: int
    phase: str = "checkpoint"
    dst_seg: int | None = None
    dst_checkpoint: str | None = None
    resume_seg: int | None = None     # phase resume: the segment restoring it at the source
    failure: str | None = None        # why the migration failed (phase resume)
    output: dict | None = None        # the job's output counts in the source checkpoint


@dataclass
class SavedCheckpoint:
    """A verified checkpoint of an offloaded job in the daemon's state directory: what the job
    resumes from if its board dies. `seg`: the segment it was taken of (a periodic live
    checkpoint) or the one before the board's (the migration's own source checkpoint);
    `output`: the job's stdout/stderr byte counts at that point (from the checkpoint)."""

    path: str
    seg: int
    taken: float
    output: dict
    kind: str = "periodic"           # periodic | migration


@dataclass
class JobRecord:
    id: str
    image: str                       # on the daemon's machine (the server)
    benchmark: str = ""
    npb_class: str | None = None
    estimate_source: str = ""
    segments: list[Segment] = field(default_factory=list)
    progress: MigrationProgress | None = None
    history: list[dict] = field(default_factory=list)
    outcome: str | None = None       # once done: "exit 0", "exit 3", "cancelled: <why>"
    output: str | None = None        # the job's stdout, all segments joined, once done
    args: list[str] = field(default_factory=list)   # the guest's arguments
    attached: bool = False           # a `hexo run` client follows it: cancelled when it is gone
    slurm_job: str | None = None     # the Slurm job whose `hexo run` submitted it
    cancel: str | None = None        # why it is to be cancelled once its migration has settled
    saved: SavedCheckpoint | None = None    # the latest server-side checkpoint of an offloaded job
    losses: list[dict] = field(default_factory=list)    # machines that lost it, and the work lost

    @property
    def current(self) -> Segment | None:
        live = [s for s in self.segments if not s.discarded]
        return live[-1] if live else None

    def next_seg(self) -> int:
        return len(self.segments)


def _job_to_json(j: Job) -> dict:
    d = asdict(j)
    d["state"] = j.state.value
    return d


def _job_from_json(d: dict) -> Job:
    d = dict(d)
    d["state"] = JobState(d["state"])
    if d.get("migration"):
        d["migration"] = Migration(**d["migration"])
    return Job(**d)


def _record_from_json(d: dict) -> JobRecord:
    d = dict(d)
    d["segments"] = [Segment(**s) for s in d.get("segments", [])]
    if d.get("progress"):
        d["progress"] = MigrationProgress(**d["progress"])
    if d.get("saved"):
        d["saved"] = SavedCheckpoint(**d["saved"])
    return JobRecord(**d)


def dump(state: ClusterState, records: dict[str, JobRecord], decisions: list[dict],
         next_id: int, learned: dict | None = None) -> dict:
    """`learned`: {policy name: what it learned (Policy.learned)}."""
    return {"format": FORMAT, "version": list(VERSION), "now": state.now, "next_id": next_id,
            "queue": list(state.queue),
            "jobs": [{"policy": _job_to_json(state.jobs[i]), "record": asdict(records[i])}
                     for i in state.jobs],
            "decisions": decisions, "learned": learned or {},
            "draining": sorted(state.draining)}


def load_into(data: dict, state: ClusterState) -> tuple[dict[str, JobRecord], list[dict], int]:
    """Fill an empty ClusterState from saved data; returns (records, decisions, next_id)."""
    if data.get("format") != FORMAT:
        raise StateFileError(f"not a {FORMAT} file")
    version = tuple(data.get("version", ()))
    if not version or version[0] != VERSION[0]:
        raise StateFileError(f"state format {version} is not {VERSION[0]}.x")
    try:
        jobs = [_job_from_json(e["policy"]) for e in data["jobs"]]
        records = {e["record"]["id"]: _record_from_json(e["record"]) for e in data["jobs"]}
        unknown = ({j.location for j in jobs if j.location}
                   | {j.migration.dst for j in jobs if j.migration}) - set(state.machines)
        if unknown:
            raise StateFileError(f"jobs on machines the config no longer has: {unknown}")
        if {j.id for j in jobs} != set(records):
            raise StateFileError("policy jobs and job records differ")
        state.restore(jobs, data["queue"], float(data["now"]))
        state.draining = {b for b in data.get("draining", []) if b in state.machines}
        return records, list(data.get("decisions", [])), int(data["next_id"])
    except (KeyError, TypeError, ValueError) as e:
        raise StateFileError(f"malformed state: {e!r}") from None
    except TransitionError as e:
        raise StateFileError(str(e)) from None


def load_learned(data: dict, policy: Policy) -> dict | None:
    """Give a fresh `policy` what it learned before the restart. Returns what other policies
    learned (for the next save: a daemon run for a while with another policy loses none of
    it), or None for a file older than 1.4, which holds nothing learned."""
    if tuple(data.get("version", ())) < LEARNED_SINCE:
        return None
    try:
        if not isinstance(data["learned"], dict):
            raise TypeError("not a JSON object")
        learned = dict(data["learned"])
        mine = learned.pop(policy.name, None)
        if mine is not None:
            policy.restore_learned(mine)
        return learned
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise StateFileError(f"malformed state: what the {policy.name} policy learned: "
                             f"{e!r}") from None


def checksum(data: dict) -> str:
    """SHA-256 of the canonical JSON of everything but the checksum itself."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def verify(data: dict) -> str | None:
    """Why `data` fails its integrity check, or None. Only a format 1.0 file (written before
    checksums) may lack one."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if "checksum" not in data:
        return None if data.get("version") == [1, 0] else "no checksum"
    if data["checksum"] != checksum(data):
        return "checksum does not match the contents"
    return None


class StateFile:
    """Atomic replace: write a temporary file, fsync it, rename it over the old one. Every file
    carries a checksum; the copy it replaces is kept as `<name>.prev` (a hard link renamed into
    place, so that a file of that name always exists once there has been a second save)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.prev = self.path.with_name(self.path.name + ".prev")

    def save(self, data: dict) -> None:
        data = {**data, "checksum": checksum(data)}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if self.path.exists():
            link = self.path.with_name(self.path.name + ".prev.tmp")
            link.unlink(missing_ok=True)
            os.link(self.path, link)
            os.replace(link, self.prev)
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self) -> dict | None:
        """The saved data without its checksum; None when there is no file. A damaged file
        raises StateFileError and is left as it is, with the state of the previous good copy
        in the message."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            why = verify(data)
        except ValueError as e:
            why = f"not valid JSON ({e})"
        if why is not None:
            raise StateFileError(f"{self.path}: damaged, {why}; the file is left as it is for "
                                 f"inspection. {self._previous()}")
        data.pop("checksum", None)
        return data

    def _previous(self) -> str:
        try:
            prev = json.loads(self.prev.read_bytes())
        except FileNotFoundError:
            return "There is no previous copy."
        except ValueError:
            return f"The previous copy {self.prev} is damaged too."
        if verify(prev) is not None:
            return f"The previous copy {self.prev} is damaged too."
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.prev.stat().st_mtime))
        return (f"The previous copy {self.prev} (saved {when}) is intact: move it over "
                f"{self.path.name} to go on from there (the last change is lost).")
