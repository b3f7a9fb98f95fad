"""Derived slowdown estimates for images that no calibration row names: both builds of the
image timed up to the same migration point.

An operator's own program names no calibrated benchmark, and this machine has no hardware
counters to sample it with; without an estimate no policy ever offloads it. The .hexo file is
all the daemon has: both unikernel builds at one layout, and migration points that both
builds pass in the same order (one optimized IR). So the sample runs the board's build for a
CPU budget where that board model runs it (for an emulated model, the aarch64 build on the
emulator here; for another, on an idle board of the model, by that board's own uhyve-ctl
over SSH), then the x86-64 build on KVM (what the server runs) three times to the last point
the board's run passed. Both sides count points the same way (uhyve_ctl/timed.py): the guest
counts them down itself and exits to the host only at the end, so a point costs each side a
decrement, not an exit or a host callback (a hook at every point inflated the emulated side
of point-dense programs; a board's KVM has no hook at all). The slowdown is the ratio of the
two CPU times from the start to that point, as calibrate.py measures whole runs (boot and
initialisation included).

A job short enough to end within the budget is timed whole on both sides: an exact ratio,
said so. One whose whole x86-64 run is too short to time (MIN_SERVER_S) gets "the job ends
before sampling": it stays on the server, where it has ended by the time a sample could
move it.

Why this design, measured on the calibration corpus' class W workloads: timed from the start,
the estimate was within 30 % of the emulated board's measured slowdown for 12 of 13 (median
error 8 %; 13 of 15, median 13 %, in a later run on a more loaded machine); timed over the
second half of the sample only (leaving out boot and first translations), for 10 of 13 (median
15 %): a program's phases and a short server span weigh more than translation. With the
guest's own count, 9 of the accuracy test's 10 within 30 % (median error 9 %), and a
point-dense program (tests/programs/point_dense.c) within 7 %, where a hook's callbacks had
left a span too short to time. An
instruction mix through the fitted model (insn_mix, model.py's "aarch64-cost" set) was the
alternative: a counting block hook made unicorn 5.5x slower on EP.S (2.6 M blocks: 0.33 s CPU
without it, 1.8 s with it), and the model's features include software-TLB refills and
last-level cache misses, which would need a hook on every load and store; a board's own time
over the same progress *is* the board's time.

The numbers come from a prefix of the run, not hardware counters: a program whose prefix is
unlike the rest of its run gets its prefix's estimate. `python -m hexo_sched.sample [--budget
S] [--config CLUSTER.TOML --board NAME] IMAGE [ARG...]` prints the estimate, or why there is
none, as JSON; the daemon runs it in a subprocess (Sampler) with a deadline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable


#: CPU seconds of the emulated aarch64 run: most of a sample's cost (the three x86-64 runs
#: to the same point take 20-200x less each).
BUDGET_S = 3.0
#: The function every migration point calls.
POINT = "hexo_check_migrate"
#: Wall seconds the x86-64 build may take to the last point (it is 20-200x faster).
SERVER_WALL_S = 60.0
#: Runs of the x86-64 build whose median is taken.
SERVER_RUNS = 3
#: Below this much x86-64 CPU time a span is too short to time (a KVM exit costs ~40 µs, a
#: scheduler tick 1-4 ms).
MIN_SERVER_S = 0.01
#: The sampler process gets this many wall seconds per CPU second of budget (a loaded server).
SAMPLE_WALL_S = 20
#: A board sample that found no idle board of its model asks again this often.
BOARD_RETRY_S = 5.0


class SampleFailed(Exception):
    """The sample gave no estimate; the message is the sentence after 'no estimate: '."""


def _entry(image, isa: str, name: str) -> int:
    """The address of function `name` in one build of the image."""
    import io

    from elftools.elf.elffile import ELFFile
    symbols = ELFFile(io.BytesIO(image.elf(isa))).get_section_by_name(".symtab")
    found = symbols.get_symbol_by_name(name) if symbols is not None else None
    if not found:
        raise SampleFailed(f"the {isa} build has no {name}: no migration points")
    return found[0]["st_value"]


def _vm(image, isa: str, backend: str, args: list[str], mem: int | None):
    from uhyve_ctl.vm import VirtualMachine
    null = os.open(os.devnull, os.O_RDWR)
    try:
        return VirtualMachine(image, isa, backend=backend, mem_size=mem, argv=args,
                              stdio=(null, null, null))
    finally:
        os.close(null)


def emulated_run(image, args: list[str], mem: int | None, budget_s: float) -> dict:
    """The aarch64 build on the emulator, as an emulated board runs it, for about `budget_s`
    of CPU (uhyve_ctl.timed's budget run)."""
    from uhyve_ctl.timed import timed_run
    vm = _vm(image, "aarch64", "emu", args, mem)
    try:
        return timed_run(vm, budget_s=budget_s, cap_s=2 * budget_s,
                         wall_s=SAMPLE_WALL_S * budget_s)
    finally:
        vm.close()


def board_run(path: str, args: list[str], mem: int | None, budget_s: float,
              machine) -> dict:
    """The board's build on `machine` (a board of the daemon's config), by that board's own
    uhyve-ctl on its backend, for about `budget_s` of CPU, over a connection of its own."""
    from .agents import MachineAgent
    from .hosts import HostError
    agent = MachineAgent(machine)
    try:
        return agent.timed(path, args, mem, budget_s=budget_s, wall_s=SAMPLE_WALL_S * budget_s)
    except HostError as e:
        raise SampleFailed(str(e)) from None
    finally:
        agent.close()


def server_run(image, args: list[str], mem: int | None, point: int | None,
               wall_s: float) -> dict:
    """The x86-64 build on KVM, as the server runs it, to migration point `point` (None: to
    its end, counting every point as the board's run did)."""
    from uhyve_ctl import kvm
    from uhyve_ctl.timed import timed_run
    from uhyve_ctl.vm import pick_backend
    if pick_backend("x86_64") != "kvm":
        raise SampleFailed(f"no KVM to time the x86-64 build on ({kvm.unavailable()})")
    vm = _vm(image, "x86_64", "kvm", args, mem)
    try:
        return timed_run(vm, point=point, cap_s=wall_s, wall_s=wall_s)
    finally:
        vm.close()


def _failure(isa: str, run: dict) -> str | None:
    """Why a run that crashed or failed leaves nothing to time."""
    passed = run["points"]
    after = f" after migration point {passed}" if passed else " before its first migration point"
    if run["stop"] == "crashed":
        return f"the {isa} build crashed{after}: {run['reason']}"
    if run["stop"] == "exited" and run["status"] != 0:
        return f"the {isa} build exited with status {run['status']}{after}"
    return None


def _server_seconds(image, args: list[str], mem: int | None, point: int | None) -> float:
    """CPU seconds of the x86-64 build to `point` (None: to its end), the median of
    SERVER_RUNS runs (each costs a fraction of the board's; a few milliseconds on a loaded
    server vary)."""
    runs = []
    for _ in range(SERVER_RUNS):
        run = server_run(image, args, mem, point, wall_s=SERVER_WALL_S)
        if failed := _failure("x86_64", run):
            raise SampleFailed(failed)
        if point is None and run["stop"] != "exited":
            raise SampleFailed(f"the x86-64 build did not end in {SERVER_WALL_S:g} s")
        if point is not None and run["stop"] != "point":
            raise SampleFailed(f"the x86-64 build ended before migration point {point}, "
                               "which the board's build reached" if run["stop"] == "exited"
                               else f"the x86-64 build did not reach migration point "
                               f"{point} in {SERVER_WALL_S:g} s")
        runs.append(run["end_s"] if point is None else run["at_s"])
    return statistics.median(runs)


def estimate(path: str, args: list[str], mem: int | None = None, budget_s: float = BUDGET_S,
             config: str | None = None, board: str | None = None) -> dict:
    """The board's slowdown over the sample of a job with arguments `args` and `mem` bytes
    of guest RAM (None: the image's default), how it was timed, a sentence. The board is the
    emulator here, or `board` of the daemon's `config`."""
    from hexo.image import Image, ImageError
    try:
        image = Image(path)
    except ImageError as e:
        raise SampleFailed(str(e)) from None
    if board is None:
        isa, where, derived = "aarch64", "the aarch64 build emulated", "derived"
    else:
        from .config import ConfigError, load
        try:
            machine = load(config).machine(board)
        except (ConfigError, StopIteration):
            raise SampleFailed(f"{config} has no board {board}") from None
        isa, derived = machine.isa, f"derived on board {board}"
        where = f"the {isa} build on board {board}'s {machine.backend}"
    _entry(image, isa, POINT)
    run = (emulated_run(image, args, mem, budget_s) if board is None else
           board_run(path, args, mem, budget_s, machine))
    if failed := _failure(isa, run):
        raise SampleFailed(failed)
    whole = run["stop"] == "exited"
    if whole:                          # the whole run fitted in the budget: time all of it
        board_s, what = run["end_s"], ("the whole run (it ends within the sample: an exact "
                                       "ratio)")
    elif not run["points"]:
        raise SampleFailed(f"the {isa} build passed no migration point in "
                           f"{run['end_s']:.3g} s of CPU")
    else:
        board_s, what = run["at_s"], f"the run to migration point {run['points']}"
    point = None if whole else run["points"]
    server = _server_seconds(image, args, mem, point)
    if server < MIN_SERVER_S:
        raise SampleFailed(f"the job ends before sampling: its whole x86-64 run took "
                           f"{1e3 * server:.2g} ms, too short to time; it stays on the server"
                           if whole else f"the x86-64 build ran {1e3 * server:.2g} ms to "
                           f"migration point {point}, too short to time")
    return {"slowdown": board_s / server, "point": point or 0, "board_s": board_s,
            "server_s": server, "whole_run": whole, "board": board,
            "source": f"{derived} (a timed sample, not hardware counters): {what} took "
                      f"{board_s:.3g} s CPU on {where}, {1e3 * server:.3g} ms on the x86-64 "
                      "build on KVM"}


class Sampler:
    """Samples images for the daemon, one at a time in a worker thread (the job runs on the
    server meanwhile), each in a subprocess with a deadline, so that no guest or emulator
    failure reaches the daemon. A request names a board model: an emulated one is timed on
    the emulator here; another on a board of that model, which `claim(job, model)` names
    when one is idle (and keeps free of jobs until `release(board)`; None: none is idle
    now, asked again every BOARD_RETRY_S while `wanted(job)`, the job not ended). Results,
    estimates and the sentences of failures alike, are kept in `cache_dir` by the image's
    content digest, the job's arguments, its RAM and the board model: the same job
    submitted again is not sampled again. `done(job, model, result)` is called on the
    worker thread with estimate()'s dict or {"error": why}."""

    def __init__(self, cache_dir: Path, done: Callable[[str, str, dict], None],
                 budget_s: float = BUDGET_S, config: Path | None = None,
                 claim: Callable[[str, str], str | None] = lambda job, model: None,
                 release: Callable[[str], None] = lambda board: None,
                 wanted: Callable[[str], bool] = lambda job: True):
        self.cache_dir, self.done, self.budget_s, self.config = cache_dir, done, budget_s, config
        self.claim, self.release, self.wanted = claim, release, wanted
        self.queue: queue.Queue = queue.Queue()
        self.proc: subprocess.Popen | None = None
        self.closed = False
        self.thread: threading.Thread | None = None

    def request(self, job: str, image: str, args: list[str], mem: int, model: str,
                on_board: bool = False) -> None:
        """Sample `job` for `model` boards: `image` run with `args` in `mem` bytes of guest
        RAM, on the emulator or (`on_board`) on a board of the model."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="hexo-sample", daemon=True)
            self.thread.start()
        self.queue.put((job, image, list(args), mem, model, on_board))

    def close(self) -> None:
        """Stop sampling; a sample under way is killed (the next daemon samples again)."""
        self.closed = True
        self.queue.put(None)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def cached(self, image: str, args: list[str], mem: int, model: str) -> Path:
        with open(image, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
        digest.update(json.dumps([args, mem, model]).encode())
        return self.cache_dir / f"{digest.hexdigest()[:32]}.json"

    def _work(self) -> None:
        waiting: list[tuple] = []          # board samples with no idle board yet
        while True:
            try:
                new = [self.queue.get(timeout=BOARD_RETRY_S if waiting else None)]
            except queue.Empty:
                new = []
            if new == [None]:
                return
            todo, waiting = [*waiting, *new], []
            for item in todo:
                result = self._try(*item)
                if self.closed:
                    return
                if result is False:
                    waiting.append(item)
                elif result is not None:
                    try:
                        self.done(item[0], item[4], result)
                    except Exception:             # the next job's sample must still come
                        logging.getLogger("hexo-schedd").exception(
                            "a derived estimate was lost")

    def _try(self, job: str, image: str, args: list[str], mem: int, model: str,
             on_board: bool) -> dict | bool | None:
        """The result; False while no board of the model is idle; None once the job no
        longer wants a board's time (the emulator's is spent all the same: a job that ended
        within the sample gets its exact ratio cached for its next submission)."""
        try:
            path = self.cached(image, args, mem, model)
        except OSError as e:
            return {"error": f"the sample could not run: {e}"}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        if not on_board:
            return self._sample(path, image, args, mem, [])
        if not self.wanted(job):
            return None
        board = self.claim(job, model)
        if board is None:
            return False
        try:
            return self._sample(path, image, args, mem,
                                ["--config", str(self.config), "--board", board])
        finally:
            self.release(board)

    def _sample(self, path: Path, image: str, args: list[str], mem: int,
                where: list[str]) -> dict:
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hexo_sched.sample", "--budget", str(self.budget_s),
                 "--mem", str(mem), *where, image, *args],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            return {"error": f"the sample could not run: {e}"}
        try:
            out, err = self.proc.communicate(
                timeout=SAMPLE_WALL_S * self.budget_s + SERVER_RUNS * SERVER_WALL_S + 180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {"error": "the sample ran out of time"}
        try:
            result = json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            tail = err.strip().splitlines()[-1:] or [f"status {self.proc.returncode}"]
            return {"error": f"the sample process failed ({tail[0][:200]})"}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)
        return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hexo_sched.sample", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the job's arguments")
    ap.add_argument("--budget", type=float, default=BUDGET_S,
                    help=f"CPU seconds of the board's run (default {BUDGET_S:g})")
    ap.add_argument("--mem", type=int, help="guest RAM in bytes (default: the image's)")
    ap.add_argument("--board", help="time the board's build on this board of --config "
                    "(default: the aarch64 build on the emulator here)")
    ap.add_argument("--config", help="the daemon's cluster.toml (with --board)")
    a = ap.parse_args(argv)
    if (a.board is None) != (a.config is None):
        ap.error("--board and --config go together")
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cap = int(10 * a.budget) + 30
    resource.setrlimit(resource.RLIMIT_CPU, (cap if soft < 0 else min(soft, cap), hard))
    try:
        out = estimate(a.image, a.args, a.mem, a.budget, a.config, a.board)
    except SampleFailed as e:
        out = {"error": str(e)}
    except Exception as e:              # a guest's state the VM refused, a full disk...
        from hexo.errors import HexoError, one_line
        from uhyve_ctl import UhyveError
        out = {"error": one_line(e, "the sample", (HexoError, UhyveError, ValueError))}
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
