"""Server-side checkpoints of offloaded jobs: what a job resumes from when its board dies.

The daemon takes a live checkpoint of every job on a board each `checkpoint_period_s`
(`uhyve-ctl checkpoint --keep-running --to <server ISA>`: the job goes on, the checkpoint holds
the server's state and keeps the board's beside it), copies it and the segment's output files
back over the board's SSH connection into `<state_dir>/jobs/<job>/saved-<seg>-<ms>`, verifies
every area, and only then records it in state.json and removes the previous one; a daemon
killed at any point finds the state file naming a complete, verified directory. A migration
onto a board leaves its source checkpoint here as the first saved state.

Output exactly once: a checkpoint carries the job's stdout/stderr byte counts. When a board
dies, its segment's output is cut at those counts (the daemon's copy) and the resumed job
produces the rest again; a `hexo run` client, which follows byte offsets, skips what it was
already shown (docs/formats.md §6).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from hexo.checkpoint import Checkpoint, CheckpointError

from .agents import MachineAgent
from .errors import SchedError
from .jobstore import SavedCheckpoint, Segment
from .relay import guest_stderr

STREAM_FILES = {"stdout": "out", "stderr": "err"}


class SaveFailed(SchedError, RuntimeError):
    pass


def _verified(path: Path) -> Checkpoint:
    try:
        ck = Checkpoint(path)
        ck.verify()
    except CheckpointError as e:
        raise SaveFailed(f"the copied checkpoint is not sound: {e}") from None
    return ck


def take_live(agent: MachineAgent, job_dir: Path, jid: str, seg: Segment, to_isa: str,
              timeout: float) -> SavedCheckpoint:
    """A live checkpoint of segment `seg` on `agent`, copied here and verified."""
    ok, msg = agent.live_checkpoint(jid, seg.n, to_isa, timeout)
    if not ok:
        raise SaveFailed(f"live checkpoint of {jid} on {agent.name} failed: {msg}")
    remote = agent.live_checkpoint_dir(jid, seg.n)
    taken = time.time()
    final = job_dir / f"saved-{seg.n}-{int(taken * 1000)}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        agent.host.get_dir(remote, tmp / "checkpoint")
        for ext in STREAM_FILES.values():      # after the checkpoint: at least its counts
            agent.host.get_file(agent.seg_path(jid, seg.n, ext), tmp / f"seg.{ext}")
        ck = _verified(tmp / "checkpoint")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    agent.remove(remote)
    return SavedCheckpoint(str(final / "checkpoint"), seg.n, taken, dict(ck.meta["output"]))


def adopt(checkpoint_dir: Path, job_dir: Path, seg: int) -> SavedCheckpoint:
    """A migration's source checkpoint on the server, moved here as the job's saved state."""
    taken = time.time()
    final = job_dir / f"saved-{seg}-{int(taken * 1000)}"
    final.mkdir(parents=True)
    shutil.move(str(checkpoint_dir), final / "checkpoint")
    ck = _verified(final / "checkpoint")
    return SavedCheckpoint(str(final / "checkpoint"), seg, taken,
                           dict(ck.meta.get("output", {"stdout": 0, "stderr": 0})),
                           kind="migration")


def drop(saved: SavedCheckpoint | None) -> None:
    if saved is not None:
        shutil.rmtree(Path(saved.path).parent, ignore_errors=True)


def cut_output(saved: SavedCheckpoint, seg: Segment, copy_dir: Path) -> dict:
    """The lost segment's output as the job's streams keep it: up to the checkpoint's counts
    (of stderr only the guest's own bytes, as the relay shows them). Returns the byte counts
    the daemon had no copy of (0 unless a copy was short)."""
    copy_dir.mkdir(parents=True, exist_ok=True)
    short = {}
    for stream, ext in STREAM_FILES.items():
        keep = saved.output[stream] - seg.output_base[stream]
        raw = b""
        if saved.seg == seg.n:
            raw = (Path(saved.path).parent / f"seg.{ext}").read_bytes()
        data = guest_stderr(raw, True) if ext == "err" else raw
        short[stream] = max(0, keep - len(data))
        (copy_dir / f"seg{seg.n}.{ext}").write_bytes(data[:max(0, keep)])
    return short


def place(saved: SavedCheckpoint, agent: MachineAgent, jid: str, n: int, image: str,
          hexo: str, scratch: Path) -> tuple[str, list[str]]:
    """The saved checkpoint on `agent`, in a state its ISA restores: its own (transformed on
    the board when taken; the board's kept state is the fallback), the kept source copy
    (`--source-copy`), or transformed here.
    Returns the path there and uhyve-ctl restore's extra arguments."""
    meta = Checkpoint(saved.path).meta
    src, args = Path(saved.path), []
    kept_isa = meta.get("source", {}).get("isa")
    if meta["isa"] == agent.cfg.isa and kept_isa:
        args = ["--fallback"]        # the board's own state, should the transformed one fail
    elif kept_isa == agent.cfg.isa:
        args = ["--source-copy"]
    elif meta["isa"] != agent.cfg.isa:
        src = scratch / f"{jid}-{n}-{agent.cfg.isa}"
        shutil.rmtree(src, ignore_errors=True)
        p = subprocess.run([hexo, "transform", saved.path, "--to", agent.cfg.isa, "-o", str(src),
                            "--image", image], capture_output=True, text=True, timeout=600)
        if p.returncode:
            raise SaveFailed(f"transform of {jid}'s saved checkpoint for {agent.cfg.isa} "
                             f"failed: {p.stderr.strip()}")
    there = agent.checkpoint_dir(jid, n) + "-saved"
    agent.remove(there)
    if agent.host.remote:
        agent.host.put_dir(src, there)
    else:
        shutil.copytree(src, there)
    if src != Path(saved.path):
        shutil.rmtree(src, ignore_errors=True)
    return there, args
