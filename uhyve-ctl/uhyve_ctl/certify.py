"""`hexo certify IMAGE [-- args]`: the operator's pre-flight check of a migratable job.

It runs the job unmigrated on both ISAs (counting the migration points a full run reaches,
and on x86-64 when it passed them), then migrated at chosen points in both directions and once
there and back, and compares each run's whole output (stdout and stderr) and exit status with
the unmigrated x86-64 run. A percentage in --points is of that run's time by default: many
programs pass most of their points in a quick set-up and a quick print-out of results
(PolyBench/C: 10 % of gemm's points is still initialising its arrays, 90 % printing them),
while a job is migrated in practice where it spends its time. Every
VM runs in this process (KVM for x86-64 where usable, the emulator otherwise), each checkpoint
in a temporary directory. Exit status 0: every run identical; 1: a difference; 2: the check
could not be made. Registered as a `hexo` subcommand through the `hexo.commands` entry-point
group (the core CLI does not import the runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import namedtuple

from .cli import env_option, mount_option
from . import UhyveError

ISAS = ("x86_64", "aarch64")
OTHER = {"x86_64": "aarch64", "aarch64": "x86_64"}
DEFAULT_POINTS = "10%,50%,90%"
NO_POINT = ("{} reaches no migration point (call hexo_check_migrate, or build it with "
            "--auto-points)")
POLL_S = 0.002          # how often the counting run's progress is sampled for the timeline


class CertifyError(UhyveError):
    """The check cannot be made (bad arguments, an image that does not run)."""


class Outcome(namedtuple("Outcome", "stdout stderr status failure points timeline",
                         defaults=(0, ()))):
    """What one run printed and how it ended; `failure` says why it did not end normally.
    A counting run's `timeline`: (CPU seconds of the guest's thread since it started, points
    passed) samples, from (0, 0) to its end."""
    __slots__ = ()


class Plan(namedtuple("Plan", "name legs")):
    # legs: (ISA, checkpoint at this point or None)
    __slots__ = ()


def register(sub) -> None:
    sub.add_parser("certify", add_help=False,
                   help="run a job unmigrated and migrated at chosen points in both "
                        "directions; compare outputs (options: hexo certify --help)"
                   ).set_defaults(run=main, raw_argv=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hexo certify", usage="hexo certify IMAGE [options] [-- guest arguments]",
        description="Run the job unmigrated on both ISAs, then migrated at the chosen points "
                    "in both directions and once there and back; compare every run's whole "
                    "output and exit status with the unmigrated x86-64 run. Exit status 0: "
                    "all identical; 1: a difference; 2: the check could not be made.")
    p.add_argument("image")
    p.add_argument("--points", default=DEFAULT_POINTS,
                   help="where to migrate: percentages of a full run (see --by) and/or "
                        "point numbers, e.g. 10%%,50%%,90%% (default) or 1,40,300")
    p.add_argument("--by", choices=("time", "points"), default="time",
                   help="what a percentage counts: the unmigrated x86-64 run's time "
                        "(default: the point it passed then) or the points it passed")
    p.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                   help="leave out of the comparison the output lines this matches, e.g. "
                        "the timings a benchmark prints; with (groups), only what the groups "
                        "match is left out of the line (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds each VM may run (default 900)")
    p.add_argument("--mem", help="guest RAM, e.g. 512M (default: what the image needs)")
    p.add_argument("--stdin", metavar="FILE",
                   help="the job's standard input (default: empty); a migrated run's "
                        "legs read on from where the one before stopped, as a job moved "
                        "with its input stream does")
    env_option(p)
    mount_option(p)
    return p


def point_at(timeline, share: float) -> int:
    """The first point the run passed after `share` of its time; the count is interpolated
    between the two samples around that moment (a run shorter than a sample interval is thus
    counted by its points)."""
    end, total = timeline[-1]
    when = share * end
    for (t0, c0), (t1, c1) in zip(timeline, timeline[1:]):
        if t1 >= when:
            return max(1, min(total, int(c0 + (c1 - c0) * (when - t0) / (t1 - t0 or 1)) + 1))
    return max(1, total)


def parse_points(text: str, total: int, timeline=None) -> list[int]:
    """'10%,50%,90%' or '1,40' -> sorted distinct point numbers in 1..total; a percentage
    is of the run's time when its `timeline` is given, else of its points."""
    points = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            if item.endswith("%"):
                share = float(item[:-1]) / 100
                n = (point_at(timeline, share) if timeline else max(1, round(total * share)))
            else:
                n = int(item)
        except ValueError:
            raise CertifyError(f"--points: '{item}' is neither a percentage nor a point "
                               f"number") from None
        if not 1 <= n <= total:
            raise CertifyError(f"--points: point {item} is outside the 1-{total} migration "
                               f"points a full run reaches")
        points.append(n)
    if not points:
        raise CertifyError("--points: no point given")
    return sorted(set(points))


def plans(points: list[int], total: int) -> list[Plan]:
    """Both directions at every point, and one round trip: out at the first point, back at
    the last (or at the next point when there is only one; none when that is the last)."""
    out = [Plan(f"{src} -> {OTHER[src]} at {p}", ((src, p), (OTHER[src], None)))
           for src in ISAS for p in points]
    first, last = points[0], points[-1]
    back = last if last > first else first + 1
    if back <= total:
        out.append(Plan(f"x86_64 -> aarch64 at {first} -> x86_64 at {back}",
                        (("x86_64", first), ("aarch64", back - first), ("x86_64", None))))
    return out


class Runner:
    """Runs legs of a job in this process with its output captured."""

    def __init__(self, image_path: str, argv: list[str], mem: int | None, timeout: float,
                 workdir: str, env: list[str] = (), mounts: list[str] = (),
                 stdin: str | None = None):
        from hexo.image import Image, ImageError
        if stdin is not None and not os.path.isfile(stdin):
            raise CertifyError(f"--stdin: {stdin} is not a readable file")
        self.stdin = stdin
        try:
            self.image = Image(image_path)
        except (ImageError, OSError) as e:
            raise CertifyError(str(e)) from None
        missing = [isa for isa in ISAS if f"meta.{isa}" not in self.image.entries]
        if missing:
            raise CertifyError(f"{image_path} has no {' or '.join(missing)} migration "
                               f"metadata: it was built with --no-migratable")
        if self.image.manifest.get("migration", {}).get("call_sites") == 0:
            raise CertifyError(NO_POINT.format(image_path))     # known without running it
        self.argv, self.mem, self.timeout, self.workdir = argv, mem, timeout, workdir
        from .hypercalls import Mount
        try:
            self.mounts = [Mount.parse(m) for m in mounts]
        except ValueError as e:
            raise CertifyError(str(e)) from None
        self.env = list(env)
        self.checkpoints = 0

    def run(self, plan: Plan, timed: bool = False) -> Outcome:
        """Every leg of the plan in turn; the output is what all legs printed together."""
        from hexo.checkpoint import Checkpoint
        stdout = stderr = b""
        ckpt = None
        # one open input for every leg: each reads on from the offset the one before left
        with open(self.stdin or os.devnull, "rb") as stdin:
            for n, (isa, at) in enumerate(plan.legs):
                target = plan.legs[n + 1][0] if at is not None else None
                leg, path = self.leg(isa, ckpt, at, target, count=len(plan.legs) == 1,
                                     stdin=stdin.fileno(), timed=timed)
                stdout, stderr = stdout + leg.stdout, stderr + leg.stderr
                if path is None:
                    return leg._replace(stdout=stdout, stderr=stderr)
                ckpt = Checkpoint(path)
        raise AssertionError("a plan ends with a leg that runs to the end")

    def leg(self, isa: str, restore, at: int | None, target: str | None,
            count: bool, stdin: int, timed: bool = False) -> tuple[Outcome, str | None]:
        """One VM: fresh or restored, to its end or to a checkpoint at point `at` for
        `target`; returns its outcome and the checkpoint it wrote. `timed`: a counting run
        also samples its count against its CPU time (the outcome's timeline)."""
        from hexo.checkpoint import CheckpointError
        from hexo.image import ImageError

        from .backends import Checkpointed, Crashed, Exited, TimedOut
        from .migration import MigrationError, Request
        from .vm import VirtualMachine
        import tempfile
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                vm = VirtualMachine(self.image, isa, mem_size=self.mem, argv=self.argv,
                                    env=self.env, mounts=self.mounts,
                                    stdio=(stdin, out.fileno(), err.fileno()),
                                    restore=restore)
            except (ImageError, CheckpointError, ValueError, OSError) as e:
                return Outcome(b"", b"", None, f"{isa} VM could not start: {e}"), None
            with vm:
                try:
                    if count:
                        vm.migrator.count_points()
                    if at is not None:
                        self.checkpoints += 1
                        vm.migrator.arm(Request(os.path.join(self.workdir,
                                                             f"ck{self.checkpoints}"),
                                                target, False, skip=at - 1))
                except MigrationError as e:
                    return Outcome(b"", b"", None, str(e)), None
                started = time.perf_counter()
                timeline = _Timeline(vm.migrator) if count and timed else None
                try:
                    stop = vm.run(self.timeout)
                finally:
                    points = vm.migrator.points_counted if count else 0
                    samples = timeline.end(points) if timeline else ()
                why = vm.migrator.outcome()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if isinstance(stop, Checkpointed):
            return Outcome(stdout, stderr, None, None, points), stop.path
        if isinstance(stop, Exited):
            failure = None if at is None else (
                f"no checkpoint at point {at} on {isa}: " + (why or "the job ended first"))
            return Outcome(stdout, stderr, stop.status & 0xFF, failure, points, samples), None
        if isinstance(stop, TimedOut):
            return Outcome(stdout, stderr, None, f"{isa} run timed out after "
                                                 f"{time.perf_counter() - started:.0f} s"), None
        assert isinstance(stop, Crashed)
        pc = f" at pc 0x{stop.pc:x}" if stop.pc is not None else ""
        return Outcome(stdout, stderr, None, f"{isa} guest stopped: {stop.reason}{pc}"), None


class _Timeline:
    """Samples, from another thread, a guest's count of the points it has passed against the
    CPU time of the thread that runs it (created there): time the machine's load takes from
    the job (waiting for a core) is not counted."""

    def __init__(self, migrator):
        import threading
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self._migrator, self._started = migrator, time.clock_gettime(self._clock)
        self.samples = [(0.0, 0)]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _now(self) -> float:
        return time.clock_gettime(self._clock) - self._started

    def _sample(self) -> None:
        while not self._done.wait(POLL_S):
            self.samples.append((self._now(), self._migrator.points_counted))

    def end(self, points: int) -> list:
        """The samples, with the run's end and the points it passed in all."""
        self._done.set()
        self._thread.join()
        return self.samples + [(self._now(), points)]


def _is_text(lines: list) -> bool:
    """No line, or one that reads as text: binary output (bzip2 -c) is shown by byte."""
    try:
        return all(ln.decode().replace("\t", " ").isprintable() for ln in lines)
    except UnicodeDecodeError:
        return False


def _byte(data: bytes, at: int) -> str:
    return f"0x{data[at]:02x}" if at < len(data) else "(end)"


def _clip(line: bytes) -> str:
    text = " ".join(line.decode(errors="replace").split())
    return text if len(text) <= 60 else text[:57] + "..."


def _compared_lines(text: bytes, ignore) -> list[bytes]:
    """The lines of `text` that are compared: a line an `ignore` pattern without groups
    matches is left out; a pattern with groups blanks only what its groups match, wherever it
    matches, and the rest of the line is compared (the timing column of a line that also holds
    a step's energies)."""
    out = []
    for line in text.splitlines():
        for p in ignore:
            if not p.groups:
                if p.search(line):
                    break
                continue
            drop = {i for m in p.finditer(line) for g in range(1, p.groups + 1)
                    for i in range(*m.span(g))}           # (-1, -1): a group that took no part
            if drop:
                line = bytes(c for i, c in enumerate(line) if i not in drop)
        else:
            out.append(line)
    return out


def compare(reference: Outcome, got: Outcome, ignore=()) -> str | None:
    """None when `got` is identical to the reference (lines matching an `ignore` pattern
    left out), else what differs, in a few words."""
    if got.failure:
        return got.failure
    if got.status != reference.status:
        return f"exit status {got.status}, unmigrated {reference.status}"
    for name, a, b in (("stdout", reference.stdout, got.stdout),
                       ("stderr", reference.stderr, got.stderr)):
        la, lb = (_compared_lines(text, ignore) for text in (a, b))
        if la != lb:
            n = next((i for i, (x, y) in enumerate(zip(la, lb)) if x != y),
                     min(len(la), len(lb)))
            if not (_is_text(la[n:n + 1]) and _is_text(lb[n:n + 1])):
                at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                          min(len(a), len(b)))
                return (f"{name} byte {at}: {_byte(b, at)}, unmigrated {_byte(a, at)} "
                        f"({len(b)} and {len(a)} bytes)")
            return (f"{name} line {n + 1}: '{_clip(lb[n]) if n < len(lb) else '(end)'}', "
                    f"unmigrated '{_clip(la[n]) if n < len(la) else '(end)'}'")
    return None


def certify(args, argv: list[str], progress=None) -> dict:
    """Every run, compared; `progress(name, runs)` is called before each run (`runs`: how
    many there are in all, once known)."""
    import re
    import tempfile

    from hexo.sizes import parse_size
    mem = parse_size(args.mem) if args.mem else None
    try:
        ignore = [re.compile(p.encode()) for p in args.ignore]
    except re.error as e:
        raise CertifyError(f"--ignore: bad pattern: {e}") from None
    rows = []
    with tempfile.TemporaryDirectory(prefix="hexo-certify-") as work:
        runner = Runner(args.image, argv, mem, args.timeout, work, args.env, args.mount,
                        args.stdin)
        unmigrated = [Plan(f"{isa} unmigrated", ((isa, None),)) for isa in ISAS]
        step = progress or (lambda name, runs: None)
        results = []
        for plan in unmigrated:
            step(plan.name, None)
            t0 = time.perf_counter()
            # only the reference run's timeline places percentages of its time
            timed = plan is unmigrated[0] and args.by == "time"
            results.append((plan, runner.run(plan, timed), time.perf_counter() - t0))
        reference = results[0][1]
        if reference.failure:
            raise CertifyError(f"the unmigrated run failed: {reference.failure}")
        total = reference.points
        if total == 0:
            raise CertifyError(NO_POINT.format(args.image))
        chosen = parse_points(args.points, total, reference.timeline)
        migrated = plans(chosen, total)
        for plan in migrated:
            step(plan.name, len(unmigrated) + len(migrated))
            t0 = time.perf_counter()
            results.append((plan, runner.run(plan), time.perf_counter() - t0))
    for plan, got, seconds in results:
        diff = None if got is reference else compare(reference, got, ignore)
        if diff is None and len(plan.legs) == 1 and got.points != total:
            diff = f"reached {got.points} migration points, x86_64 {total}"
        rows.append({"run": plan.name, "legs": [list(leg) for leg in plan.legs],
                     "exit_status": got.status, "identical": diff is None,
                     "difference": diff, "reference": got is reference,
                     "seconds": round(seconds, 3)})
    return {"image": os.path.abspath(args.image), "args": argv, "points_total": total,
            "points": chosen, "by": args.by, "ignored": args.ignore, "runs": rows, "ok": all(r["identical"] for r in rows)}


def _table(result: dict):
    from rich.table import Table
    t = Table(title=f"hexo certify {os.path.basename(result['image'])}: "
                    f"{result['points_total']} migration points in a full run, migrated at "
                    f"{', '.join(map(str, result['points']))} (--points by {result['by']})")
    for col in ("run", "exit", "output", "seconds"):
        t.add_column(col, justify="right" if col in ("exit", "seconds") else "left")
    for r in result["runs"]:
        t.add_row(r["run"], "-" if r["exit_status"] is None else str(r["exit_status"]),
                  "reference" if r["reference"] else "[green]identical[/]" if r["identical"]
                  else f"[red]{r['difference']}[/]",
                  f"{r['seconds']:.2f}")
    return t


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    guest_args = argv[split + 1:]
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    err = Console(stderr=True)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(
                "{task.completed}/{task.total}"), TimeElapsedColumn(), console=err,
                transient=True) as bar:
            task = bar.add_task("unmigrated runs", total=None)
            started = []

            def step(name: str, runs: int | None) -> None:
                bar.update(task, description=name, completed=len(started), total=runs)
                started.append(name)
            result = certify(args, guest_args, step)
    except CertifyError as e:
        print(f"hexo certify: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        Console().print(_table(result))
        verdict = ("every migrated run is identical to the unmigrated one" if result["ok"]
                   else f"{sum(not r['identical'] for r in result['runs'])} run(s) differ")
        print(f"hexo certify: {verdict}")
    return 0 if result["ok"] else 1
