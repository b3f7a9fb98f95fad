"""Derived slowdown estimates for images that no calibration row names: both builds of the
image timed up to the same migration point.

An operator's own program names no calibrated benchmark, and this machine has no hardware
counters to sample it with; without an estimate no policy ever offloads it. The .hexo file is
all the daemon has: both unikernel builds at one layout, and migration points that both
builds pass in the same order (one optimized IR). So the sample runs the aarch64 build on the
emulator (unicorn, what an emulated board runs) for a CPU budget, counting every migration
point with a hook on the entry of hexo_check_migrate (points may come a thousand times faster
in a program's initialisation than in its main loop, so only a count is exact), then the
x86-64 build on KVM (what the server runs) three times to the last point the aarch64 run
passed (its guest counts the points down itself and exits to the host only there). The
slowdown is the ratio of the two CPU times from the start to that point, as calibrate.py
measures whole runs (boot and initialisation included); a run that ends within the budget is
timed whole.

Why this design, measured on the calibration corpus' class W workloads: timed from the start,
the estimate was within 30 % of the emulated board's measured slowdown for 12 of 13 (median
error 8 %; 13 of 15, median 13 %, in a later run on a more loaded machine); timed over the
second half of the sample only (leaving out boot and first translations), for 10 of 13 (median
15 %): a program's phases and a short server span weigh more than translation. An
instruction mix through the fitted model (insn_mix, model.py's "aarch64-cost" set) was the
alternative: a counting block hook made unicorn 5.5x slower on EP.S (2.6 M blocks: 0.33 s CPU
without it, 1.8 s with it), and the model's features include software-TLB refills and
last-level cache misses, which would need a hook on every load and store; for an emulated
board the emulator's own time over the same progress *is* the board's time. Other board
models get no derived estimate (their time cannot be sampled here), and the sentence says so.

The numbers come from a prefix of the run, not hardware counters: a program whose prefix is
unlike the rest of its run gets its prefix's estimate. `python -m hexo_sched.sample [--budget
S] IMAGE [ARG...]` prints the estimate, or why there is none, as JSON; the daemon runs it in a
subprocess (Sampler) under a CPU-time limit.
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
import time
from pathlib import Path
from typing import Callable

from hexo.records import record

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

Sampled = record("Sampled", "point", doc="The sample reached the point it was to stop at.")


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


def board_run(image, args: list[str], mem: int | None, budget_s: float, wall_s: float):
    """The aarch64 build on the emulator, as an emulated board runs it, for about `budget_s`
    of CPU: (the last migration point it passed, the process CPU seconds since the guest
    started when it did, why the run stopped, its CPU seconds). A hook on the entry of
    hexo_check_migrate counts every point exactly, whatever their frequency, at one host
    callback per point."""
    from unicorn import UC_HOOK_CODE
    from uhyve_ctl.backends import TimedOut

    entry = _entry(image, "aarch64", POINT)
    vm = _vm(image, "aarch64", "emu", args, mem)
    # --auto-points' points call hexo_check_migrate only while a request is raised: a request
    # whose skip count never runs out makes every point call it, as the server run's does.
    vm.migrator.count_points()
    state = {"point": 0, "at": 0.0, "over": False}

    def at_point(uc, _address, _size, _data):
        state["point"] += 1
        state["at"] = time.process_time() - t0
        if state["at"] >= budget_s:
            state["over"] = True
            uc.emu_stop()

    finished = threading.Event()

    def watchdog() -> None:
        """Points may never come: stop the emulator after twice the budget of CPU time (a
        stop from outside lands anywhere, so the run is not resumed)."""
        while not finished.wait(0.05):
            if time.process_time() - t0 >= 2 * budget_s:
                state["over"] = True
                while not finished.wait(0.01):
                    vm.backend.uc.emu_stop()

    try:
        vm.backend.uc.hook_add(UC_HOOK_CODE, at_point, None, entry, entry)
        t0 = time.process_time()
        threading.Thread(target=watchdog, daemon=True).start()
        stop = vm.run(timeout=wall_s)
        end = time.process_time() - t0
    finally:
        finished.set()
        vm.close()
    return state["point"], state["at"], TimedOut(budget_s) if state["over"] else stop, end


def server_run(image, args: list[str], mem: int | None, point: int | None, wall_s: float):
    """The x86-64 build on KVM, as the server runs it, to migration point `point` (the
    guest counts the points down itself and exits to the host only there) or, if None, to
    its end: (why it stopped, the process CPU seconds since the guest started)."""
    from uhyve_ctl import kvm
    from uhyve_ctl.vm import pick_backend
    if pick_backend("x86_64") != "kvm":
        raise SampleFailed(f"no KVM to time the x86-64 build on ({kvm.unavailable()})")
    from uhyve_ctl.migration import Request
    vm = _vm(image, "x86_64", "kvm", args, mem)
    try:
        if point is not None:
            vm.hypercalls.on_migrate = lambda *_: Sampled(point)
            vm.migrator.arm(Request("", "x86_64", False, mode="probe", skip=point - 1))
        t0 = time.process_time()
        stop = vm.run(timeout=wall_s)
        return stop, time.process_time() - t0
    finally:
        vm.close()


def _failure(isa: str, stop, passed: int | None) -> str | None:
    """Why a run that crashed or failed (after `passed` migration points) leaves nothing
    to time."""
    from uhyve_ctl.backends import Crashed, Exited
    after = (f" after migration point {passed}" if passed else
             " before its first migration point" if passed == 0 else "")
    if isinstance(stop, Crashed):
        return f"the {isa} build crashed{after}: {stop.reason}"
    if isinstance(stop, Exited) and stop.status != 0:
        return f"the {isa} build exited with status {stop.status}{after}"
    return None


def _server_seconds(image, args: list[str], mem: int | None, point: int | None) -> float:
    """CPU seconds of the x86-64 build to `point` (None: to its end), the median of
    SERVER_RUNS runs (each costs a fraction of the board's; a few milliseconds on a loaded
    server vary)."""
    from uhyve_ctl.backends import Exited
    runs = []
    for _ in range(SERVER_RUNS):
        stop, seconds = server_run(image, args, mem, point, wall_s=SERVER_WALL_S)
        if failed := _failure("x86_64", stop, None):
            raise SampleFailed(failed)
        if point is not None and not isinstance(stop, Sampled):
            raise SampleFailed(f"the x86-64 build ended before migration point {point}, "
                               "which the aarch64 build reached" if isinstance(stop, Exited)
                               else f"the x86-64 build did not reach migration point {point}"
                               f" in {SERVER_WALL_S:g} s")
        if point is None and not isinstance(stop, Exited):
            raise SampleFailed(f"the x86-64 build did not end in {SERVER_WALL_S:g} s")
        runs.append(seconds)
    return statistics.median(runs)


def estimate(path: str, args: list[str], mem: int | None = None,
             budget_s: float = BUDGET_S) -> dict:
    """The emulated board's slowdown over the sample of a job with arguments `args` and
    `mem` bytes of guest RAM (None: the image's default), how it was timed, a sentence."""
    from hexo.image import Image, ImageError
    from uhyve_ctl.backends import Exited
    try:
        image = Image(path)
    except ImageError as e:
        raise SampleFailed(str(e)) from None
    point, board, stop, board_end = board_run(image, args, mem, budget_s,
                                              wall_s=SAMPLE_WALL_S * budget_s)
    if failed := _failure("aarch64", stop, point):
        raise SampleFailed(failed)
    if isinstance(stop, Exited):        # the whole run fitted in the budget: time all of it
        point, board, what = 0, board_end, "the whole run"
    elif point == 0:
        raise SampleFailed(f"the aarch64 build passed no migration point in "
                           f"{board_end:.3g} s of emulation")
    else:
        what = f"the run to migration point {point}"
    server = _server_seconds(image, args, mem, point or None)
    if server < MIN_SERVER_S:
        raise SampleFailed(f"the x86-64 build ran {1e3 * server:.2g} ms, too short to time")
    return {"slowdown": board / server, "point": point, "board_s": board, "server_s": server,
            "source": f"derived (a timed sample, not hardware counters): {what} took "
                      f"{board:.3g} s CPU on the aarch64 build emulated, {1e3 * server:.3g} "
                      f"ms on the x86-64 build on KVM"}


class Sampler:
    """Samples images for the daemon, one at a time in a worker thread (the job runs on the
    server meanwhile), each in a subprocess under a CPU-time limit, so that no guest or
    emulator failure reaches the daemon. Results, estimates and the sentences of failures
    alike, are kept in `cache_dir` by the image's content digest, the job's arguments and
    its RAM: the same job submitted again is not sampled again. `done(job, result)` is
    called on the worker thread with estimate()'s dict or {"error": why}."""

    def __init__(self, cache_dir: Path, done: Callable[[str, dict], None],
                 budget_s: float = BUDGET_S):
        self.cache_dir, self.done, self.budget_s = cache_dir, done, budget_s
        self.queue: queue.Queue = queue.Queue()
        self.proc: subprocess.Popen | None = None
        self.closed = False
        self.thread: threading.Thread | None = None

    def request(self, job: str, image: str, args: list[str], mem: int) -> None:
        """Sample `job`: `image` run with `args` in `mem` bytes of guest RAM."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="hexo-sample", daemon=True)
            self.thread.start()
        self.queue.put((job, image, list(args), mem))

    def close(self) -> None:
        """Stop sampling; a sample under way is killed (the next daemon samples again)."""
        self.closed = True
        self.queue.put(None)
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def cached(self, image: str, args: list[str], mem: int) -> Path:
        with open(image, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
        digest.update(json.dumps([args, mem]).encode())
        return self.cache_dir / f"{digest.hexdigest()[:32]}.json"

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            job, image, args, mem = item
            try:
                result = self._sample(image, args, mem)
            except OSError as e:
                result = {"error": f"the sample could not run: {e}"}
            if self.closed:
                continue
            try:
                self.done(job, result)
            except Exception:             # the next job's sample must still come
                logging.getLogger("hexo-schedd").exception("a derived estimate was lost")

    def _sample(self, image: str, args: list[str], mem: int) -> dict:
        path = self.cached(image, args, mem)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexo_sched.sample", "--budget", str(self.budget_s),
             "--mem", str(mem), image, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = self.proc.communicate(
                timeout=SAMPLE_WALL_S * self.budget_s + SERVER_RUNS * SERVER_WALL_S + 60)
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
                    help=f"CPU seconds of emulation (default {BUDGET_S:g})")
    ap.add_argument("--mem", type=int, help="guest RAM in bytes (default: the image's)")
    a = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cap = int(10 * a.budget) + 30
    resource.setrlimit(resource.RLIMIT_CPU, (cap if soft < 0 else min(soft, cap), hard))
    try:
        out = estimate(a.image, a.args, a.mem, a.budget)
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
