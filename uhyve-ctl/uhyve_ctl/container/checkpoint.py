"""`hexo container checkpoint` and `restore`: a Linux-mode process stopped at a migration
point, dumped by CRIU into a directory that carries everything another machine needs to
restore it (docs/formats.md, section 8), recoded for the other ISA (criu_images.py) when
asked."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import stat
import time
from pathlib import Path

from . import criu, criu_images, process
from .process import ProcessError

STATE_FILE = "hexo-process.json"
IMAGE_FILE = "image.hexo"
FILES_DIR = "files"
FORMAT_VERSION = 2
_PR_SET_CHILD_SUBREAPER = 36


def checkpoint(pid: int, out: Path, to_isa: str | None = None, timeout: float = 30.0,
               leave_stopped: bool = False) -> dict:
    """Dump process `pid` at its next migration point into `out`, for `to_isa`.

    CRIU ends the process after the dump unless `leave_stopped`: then it stays parked at the
    point until the caller ends it (the target runs the job) or resumes it (it did not)."""
    image, isa = process.image_of(pid)
    to_isa = to_isa or isa
    if out.exists() and any(out.iterdir()):
        raise ProcessError(f"{out}: exists and is not empty")
    process.check_movable(pid, image, isa, to_isa, f"process {pid}")
    out.mkdir(parents=True, exist_ok=True)
    regs = process.stop_at_point(pid, isa, timeout)
    state = {"format": "hexo-process", "version": FORMAT_VERSION, "pid": pid,
             "image": {"build_id": image.manifest["build_id"], "name": image.manifest["name"]},
             "isa": isa, "context": regs, "created": time.time()}
    # A process that does not lead its session (started from a shell) is dumped and restored
    # as a shell job: CRIU then leaves the session and terminal to whoever restores it.
    state["shell_job"] = os.getsid(pid) != pid
    t0 = time.perf_counter()
    try:
        criu.run(["dump", "-t", str(pid), *_shell_job(state),
                  *(["--leave-running"] if leave_stopped else [])],
                 f"criu dump of process {pid}", out)
    except criu.CriuError:
        process.resume(pid)                 # CRIU left it as it was: let it run on
        raise
    state["dump_s"] = round(time.perf_counter() - t0, 4)
    try:
        criu_images.mark_running(out, pid)
        shutil.copyfile(image.path, out / IMAGE_FILE)
        state["files"] = _carry_files(out, pid)
        # Written before the recode: should that fail, the directory still restores here.
        _write_state(out, state)
        if to_isa != isa:
            state = criu_images.recode(out, state, image, to_isa)
            _write_state(out, state)
    except BaseException:
        if leave_stopped:
            process.resume(pid)             # nothing moved: the source job runs on
        raise
    return state


def _write_state(out: Path, state: dict) -> None:
    tmp = out / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, out / STATE_FILE)


def _shell_job(state: dict) -> list[str]:
    return ["--shell-job"] if state.get("shell_job") else []


def _carry_files(out: Path, pid: int) -> list[dict]:
    """Copies of the regular files the process has open (output redirected to a file, data
    files in a volume), so that another machine can put them back at the same paths."""
    carried = []
    for entry_id, path, mode in criu_images.open_files(out, pid):
        copy = Path(FILES_DIR) / str(entry_id)
        (out / FILES_DIR).mkdir(exist_ok=True)
        shutil.copyfile(path, out / copy)
        carried.append({"path": path, "copy": str(copy), "mode": stat.S_IMODE(mode),
                        "size": (out / copy).stat().st_size})
    return carried


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


def _place_files(directory: Path, state: dict) -> None:
    """The executable of this machine, the working directory and the carried files, where
    the images expect them. A carried file replaces what is at its path (the job's view of
    its files is the checkpoint's); an identical one is left alone."""
    image = process.open_image(directory / IMAGE_FILE)
    if image.manifest["build_id"] != state["image"]["build_id"]:
        raise ProcessError(f"{directory}: {IMAGE_FILE} is not the image the process runs")
    pid = state["pid"]
    exe = process.executable(image, state["isa"])
    criu_images.point_executable(directory, pid, exe, exe.stat().st_size)
    cwd, mode = criu_images.working_directory(directory, pid)
    if not Path(cwd).is_dir():
        Path(cwd).mkdir(parents=True)
        os.chmod(cwd, stat.S_IMODE(mode))
    for f in state["files"]:
        data, path = (directory / f["copy"]).read_bytes(), Path(f["path"])
        if path.exists() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.hexo-restore")
        tmp.write_bytes(data)
        os.chmod(tmp, f["mode"])
        os.replace(tmp, path)


def restore(directory: Path, reap: bool = False, until_point: bool = False,
            timeout: float = criu.TIMEOUT, held: bool = False) -> int:
    """Restore the process of `directory` on this machine and let it run; its pid. With
    `reap` the caller becomes its parent (a subreaper), so that it can wait for its end; with
    `until_point` it stops again at its next migration point (one step on this machine); with
    `held` it waits at its point until resumed (process.resume)."""
    state = load_state(directory)
    if state["isa"] != process.host_isa():
        raise ProcessError(f"{directory} holds an {state['isa']} process; this machine is "
                           f"{process.host_isa()}")
    _place_files(directory, state)
    criu_images.mark_running(directory, state["pid"], until_point, held)
    _wait_pid_free(state["pid"])
    if reap:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # The source machine's cgroups mean nothing here: the job joins the restorer's.
    criu.run(["restore", "--restore-detached", "--manage-cgroups=ignore", *_shell_job(state)],
             "criu restore", directory, timeout)
    return state["pid"]


def wait(pid: int) -> int:
    """The exit status of a process restored with `reap` (a shell's, 128+N for signal N)."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
