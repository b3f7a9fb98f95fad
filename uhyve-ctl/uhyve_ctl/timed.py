"""Timed runs to migration points: the CPU time a build takes to pass a number of points.

The scheduler compares two builds of an image (a board's and the server's) over the same
progress, counted in migration points, which both builds pass in the same order. The guest
counts the points itself (a probe request whose skip count never runs out, hexo/abi.py), so a
point costs it a decrement and no exit whatever the points' density. A *budget* run reads
that count every POLL_S from a host thread: the last change seen dates its point to within
half a poll (points may come a thousand times faster in a program's initialisation than in
its main loop, so only the count is exact); once the budget is spent the guest is asked to
stop at its next point. A *point* run lets the guest count down to point N and exit there,
where the host reads the CPU time exactly; a run with neither counts every point to the
guest's end, as a budget run does.
"""

from __future__ import annotations

import os
import threading
import time

from hexo.records import record

from .backends import Crashed, Exited

#: The version of the result's JSON, which a board sends the server (docs/formats.md §5).
FORMAT = 1
#: How often a budget run reads the guest's count (a wake-up costs the host ~20 µs).
POLL_S = 0.005

Reached = record("Reached", "point", doc="The run reached the point it was to stop at.")


def timed_run(vm, *, budget_s: float | None = None, point: int | None = None,
              cap_s: float, wall_s: float) -> dict:
    """Run `vm` counting migration points: for `budget_s` of CPU (a budget run), to point
    `point`, or (neither) to its end. Returns {"points": points passed, "at_s": process CPU
    seconds since the guest started when the last of them passed, "stop": "point" |
    "exited" | "crashed" | "capped", "status": exit status, "reason": why it crashed,
    "end_s": CPU seconds to the end of the run}; a run that exited or crashed counts its
    points to its end. An emulated guest is stopped after `cap_s`
    of CPU (points may never come), any guest after `wall_s` seconds."""
    from .migration import ALL_POINTS, MigrationError, Request
    seen = {"points": 0, "at_s": 0.0}
    stopping = threading.Event()

    def at_point(*_):
        now = time.process_time() - t0
        if point is not None:
            seen.update(points=point, at_s=now)
        return Reached(seen["points"])

    vm.hypercalls.on_migrate = at_point
    if point is not None:
        vm.migrator.arm(Request("", vm.isa, False, mode="probe", skip=point - 1))
    else:
        vm.migrator.count_points()
    finished = threading.Event()
    capped = [False]

    def watch() -> None:
        """Read the guest's count; past the budget ask for a stop at the next point (again
        if the guest's own decrement overwrote the request); stop an emulated guest that
        has not stopped after `cap_s` (a stop from outside lands anywhere, so the run is
        not resumed)."""
        before = 0.0
        while not finished.wait(POLL_S):
            now = time.process_time() - t0
            if budget_s is not None and not stopping.is_set():
                counted = vm.migrator.points_counted
                if counted != seen["points"]:
                    seen.update(points=counted, at_s=(before + now) / 2)
                if now >= budget_s:
                    stopping.set()
            if stopping.is_set() and vm.migrator.points_counted != ALL_POINTS:
                try:
                    vm.migrator.arm(Request("", vm.isa, False, mode="probe", skip=0))
                except MigrationError:          # the run is over
                    pass
            if now >= cap_s and vm.backend_kind == "emu":
                capped[0] = True
                while not finished.wait(0.01):
                    vm.backend.uc.emu_stop()
            before = now

    t0 = time.process_time()
    if budget_s is not None or vm.backend_kind == "emu":
        threading.Thread(target=watch, daemon=True).start()
    try:
        stop = vm.run(timeout=wall_s)
    finally:
        finished.set()
    out = {"format": FORMAT, **seen, "end_s": time.process_time() - t0, "stop": "capped",
           "status": None, "reason": None}
    if capped[0]:               # the emulator stopped from outside may report anything
        pass
    elif isinstance(stop, Reached):
        out["stop"] = "point"
    elif isinstance(stop, Exited):
        out.update(stop="exited", status=stop.status)
    elif isinstance(stop, Crashed):
        out.update(stop="crashed", reason=stop.reason)
    if out["stop"] in ("exited", "crashed") and point is None and not stopping.is_set():
        out["points"] = vm.migrator.points_counted      # the guest's count, exact at its end
    return out


def main(args) -> int:
    """`uhyve-ctl time`: one JSON line on stdout; the guest's own output is dropped."""
    import json

    from hexo.image import Image
    from hexo.sizes import parse_size

    from .vm import HOST_ISA, VirtualMachine
    null = os.open(os.devnull, os.O_RDWR)
    try:
        vm = VirtualMachine(Image(args.image), args.isa or HOST_ISA, backend=args.backend,
                            mem_size=parse_size(args.mem) if args.mem else None,
                            argv=args.guest_args, stdio=(null, null, null))
    finally:
        os.close(null)
    try:
        out = timed_run(vm, budget_s=args.budget, point=args.point,
                        cap_s=args.cap or 2 * (args.budget or args.wall), wall_s=args.wall)
    finally:
        vm.close()
    print(json.dumps(out), flush=True)
    return 0
