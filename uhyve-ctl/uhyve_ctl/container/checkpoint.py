"""`hexo container checkpoint` and `restore`: a Linux-mode process stopped at a migration
point, dumped by CRIU into a directory with a hexo-process.json that says what it is, and
recoded for the other ISA (criu_images.py) when asked."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from hexo import abi

from . import criu, process
from .process import ProcessError

STATE_FILE = "hexo-process.json"
FORMAT_VERSION = 1


def checkpoint(pid: int, out: Path, to_isa: str | None = None, timeout: float = 30.0) -> dict:
    image, isa = process.image_of(pid)
    to_isa = to_isa or isa
    if to_isa not in abi.ISA_IDS:
        raise ProcessError(f"unknown ISA {to_isa!r} (one of {', '.join(abi.ISA_IDS)})")
    if out.exists() and any(out.iterdir()):
        raise ProcessError(f"{out}: exists and is not empty")
    if to_isa != isa and "migration" not in image.manifest:
        raise ProcessError(f"{image.path}: built without --migratable, it cannot change ISA")
    tcp = process.tcp_connections(pid)
    if tcp:
        raise ProcessError(f"process {pid} has {len(tcp)} open TCP connection(s), which hexo "
                           f"does not migrate yet; it keeps running")
    out.mkdir(parents=True, exist_ok=True)
    ctx = process.stop_at_point(pid, timeout)
    regs = {"pc": ctx["pc"], "sp": ctx["sp"]}
    regs.update({n: ctx[f"callee{i}"] for i, n in enumerate(abi.CALLEE_SAVED[isa])})
    state = {"format": "hexo-process", "version": FORMAT_VERSION, "pid": pid,
             "image": {"build_id": image.manifest["build_id"], "name": image.manifest["name"]},
             "isa": isa, "context": regs, "created": time.time()}
    # A process that does not lead its session (started from a shell) is dumped and restored
    # as a shell job: CRIU then leaves the session and terminal to whoever restores it.
    state["shell_job"] = os.getsid(pid) != pid
    t0 = time.perf_counter()
    try:
        criu.run(["dump", "-t", str(pid), *_shell_job(state)], f"criu dump of process {pid}",
                 out)
    except criu.CriuError:
        os.kill(pid, signal.SIGCONT)        # CRIU left it as it was: let it run on
        raise
    state["dump_s"] = round(time.perf_counter() - t0, 4)
    if to_isa != isa:
        from . import criu_images
        state = criu_images.recode(out, state, image, to_isa)
    (out / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
    return state


def _shell_job(state: dict) -> list[str]:
    return ["--shell-job"] if state.get("shell_job") else []


def load_state(directory: Path) -> dict:
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        raise ProcessError(f"{directory}: not a hexo process checkpoint (no {STATE_FILE})") \
            from None
    if state.get("format") != "hexo-process" or state.get("version") != FORMAT_VERSION:
        raise ProcessError(f"{directory}: unsupported checkpoint format "
                           f"{state.get('format')} {state.get('version')}")
    return state


def _wait_pid_free(pid: int, timeout: float = 5.0) -> None:
    """CRIU restores the process under its own pid: wait for the dumped one to be reaped."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise ProcessError(f"pid {pid} is still in use (the dumped process not yet reaped "
                               f"by its parent, or another process); the checkpoint is kept")
        time.sleep(0.01)


def restore(directory: Path) -> int:
    """Restore the process of `directory` on this machine and let it run; its pid."""
    state = load_state(directory)
    if state["isa"] != process.host_isa():
        raise ProcessError(f"{directory} holds an {state['isa']} process; this machine is "
                           f"{process.host_isa()}")
    _wait_pid_free(state["pid"])
    criu.run(["restore", "--restore-detached", *_shell_job(state)], "criu restore", directory)
    os.kill(state["pid"], signal.SIGCONT)
    return state["pid"]
