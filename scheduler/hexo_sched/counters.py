"""Counter sources: instructions/s, LLC references/s and LLC misses/s of a running job.

HEXO samples them per VM every second with perf (§4.3). Where the CPU has a PMU, the daemon opens
the three generic hardware events on the vCPU thread with perf_event_open and turns deltas into
rates. Where it has none (this project's development VMs: perf_event_open fails with ENOENT for
hardware events), the fallback is the image's calibration row (callgrind counts over the
native run time, see calibrate.py), and the rates say so in their `source`. No source ever
returns zeros in place of a measurement: it raises CountersUnavailable instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import SchedError

# perf_event_open ABI (linux/perf_event.h)
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1             # kernel-counted events: every Linux has them
PERF_COUNT_HW_INSTRUCTIONS = 1
PERF_COUNT_HW_CACHE_REFERENCES = 2   # the last-level cache on x86 and arm64 PMU drivers
PERF_COUNT_HW_CACHE_MISSES = 3
_ATTR_SIZE_VER0 = 64
_FLAG_EXCLUDE_KERNEL = 1 << 5
_FLAG_EXCLUDE_HV = 1 << 6
_SYSCALL = {"x86_64": 298, "aarch64": 241}

EVENTS = (("instructions_per_s", PERF_COUNT_HW_INSTRUCTIONS),
          ("llc_references_per_s", PERF_COUNT_HW_CACHE_REFERENCES),
          ("llc_misses_per_s", PERF_COUNT_HW_CACHE_MISSES))
HARDWARE_EVENTS = tuple((PERF_TYPE_HARDWARE, config) for _, config in EVENTS)
EVENT_SOURCES = Path("/sys/bus/event_source/devices")
# perf event sources of the kernel itself, not of the CPU's PMU
SOFTWARE_SOURCES = frozenset({"software", "tracepoint", "kprobe", "uprobe", "breakpoint", "msr",
                              "power"})


class CountersUnavailable(SchedError, RuntimeError):
    """No source can give rates for this job; the message says why."""


@dataclass(frozen=True)
class CounterRates:
    instructions_per_s: float
    llc_references_per_s: float
    llc_misses_per_s: float
    source: str
    #: the instruction mix per instruction (model.MIX_FEATURES order, NaN where not measured):
    #: a program's property that a calibration row carries; hardware samples here do not
    mix: tuple[float, ...] | None = None

    def features(self) -> list[float]:
        return [self.instructions_per_s, self.llc_references_per_s, self.llc_misses_per_s]

    def inputs(self, columns) -> list[float]:
        """The values of a model's input columns, or CountersUnavailable naming the missing."""
        from .model import MIX_FEATURES
        named = dict(zip(("instructions_per_s", "llc_references_per_s", "llc_misses_per_s"),
                         self.features()))
        named.update((c, v) for c, v in zip(MIX_FEATURES, self.mix or ()) if v == v)
        missing = [c for c in columns if c not in named]
        if missing:
            raise CountersUnavailable(f"{self.source}: no {', '.join(missing)}")
        return [named[c] for c in columns]


@dataclass(frozen=True)
class Pmu:
    """A hardware event source as the kernel lists it in sysfs: its perf type and its named
    events (name -> config)."""

    name: str
    type: int
    events: dict[str, int]

    def describe(self) -> str:
        return f"{self.name} lists {', '.join(self.events) or 'no named events'}"


def _config(terms: str, formats: Path) -> int | None:
    """The config value of a sysfs event ("event=0x11" or "event=0x2e,umask=0x4f"), placing
    each term at the bits its format file gives; None for terms outside `config`."""
    config = 0
    for term in terms.strip().split(","):
        key, _, value = term.partition("=")
        try:
            field, _, bits = (formats / key).read_text().strip().partition(":")
            lo = int(bits.split("-")[0])
            number = int(value or "1", 0)
        except (OSError, ValueError):
            return None
        if field != "config":
            return None
        config |= number << lo
    return config


def hardware_pmus(root: Path = EVENT_SOURCES) -> list[Pmu]:
    """The hardware PMUs this kernel exposes (none in a VM without a virtual PMU)."""
    pmus = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name in SOFTWARE_SOURCES:
            continue
        try:
            kind = int((d / "type").read_text())
        except (OSError, ValueError):
            continue
        events = {}
        for e in sorted((d / "events").glob("*")) if (d / "events").is_dir() else []:
            if "." in e.name:                   # .scale / .unit companions
                continue
            config = _config(e.read_text(), d / "format")
            if config is not None:
                events[e.name] = config
        pmus.append(Pmu(d.name, kind, events))
    return pmus


def _no_such_event() -> str:
    """Why the kernel answered ENOENT to a hardware event, in terms of what it does have."""
    pmus = hardware_pmus()
    if not pmus:
        sources = sorted(d.name for d in EVENT_SOURCES.iterdir()) if EVENT_SOURCES.is_dir() \
            else []
        return (f"no hardware PMU here (perf event sources: {', '.join(sources) or 'none'}; "
                "a VM without a virtual PMU)")
    return f"the PMU has no such event ({'; '.join(p.describe() for p in pmus)})"


def _perf_event_open(config: int, tid: int, kind: int = PERF_TYPE_HARDWARE) -> int:
    nr = _SYSCALL.get(platform.machine())
    if nr is None:
        raise CountersUnavailable(f"perf_event_open: unknown syscall number on "
                                  f"{platform.machine()}")
    attr = struct.pack("<IIQQQQQIIQ", kind, _ATTR_SIZE_VER0, config, 0, 0, 0,
                       _FLAG_EXCLUDE_KERNEL | _FLAG_EXCLUDE_HV, 0, 0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(nr, ctypes.create_string_buffer(attr), tid, -1, -1, 0)
    if fd < 0:
        e = ctypes.get_errno()
        why = {errno.ENOENT: _no_such_event() if kind == PERF_TYPE_HARDWARE else "no such event",
               errno.EOPNOTSUPP: "hardware events not supported here",
               errno.EACCES: "not permitted (see /proc/sys/kernel/perf_event_paranoid)",
               errno.EPERM: "not permitted (see /proc/sys/kernel/perf_event_paranoid)",
               errno.ESRCH: f"no thread {tid}"}.get(e, os.strerror(e))
        raise CountersUnavailable(f"perf_event_open(config={config}, tid={tid}): {why}")
    return fd


def hardware_counters() -> tuple[bool, str]:
    """Whether this machine can count hardware instructions, and why not."""
    _, ok, why = event_report()[0]
    return ok, "perf_event_open hardware events work" if ok else why


class PerfEventSource:
    """The three hardware counters of one thread (a VM's vCPU thread); rates between samples.
    `events` are (perf type, config) pairs, the hardware ones unless a test says otherwise."""

    def __init__(self, tid: int, events=HARDWARE_EVENTS):
        self.tid = tid
        self.fds: list[int] = []
        try:
            for kind, config in events:
                self.fds.append(_perf_event_open(config, tid, kind))
        except CountersUnavailable:
            self.close()
            raise
        self.last: tuple[float, list[int]] | None = None

    def _read(self) -> list[int]:
        return [struct.unpack("<Q", os.read(fd, 8))[0] for fd in self.fds]

    def sample(self, now: float) -> CounterRates | None:
        """Rates since the previous sample (None on the first call, which only starts)."""
        counts = self._read()
        prev, self.last = self.last, (now, counts)
        if prev is None:
            return None
        dt = now - prev[0]
        if dt <= 0:
            raise ValueError("samples must be taken at increasing times")
        rates = [(c - p) / dt for c, p in zip(counts, prev[1])]
        return CounterRates(*rates, source=f"perf_event_open on thread {self.tid}")

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class CalibrationSource:
    """Fallback: fixed rates per (benchmark, class) from a calibration CSV (calibrate.py)."""

    def __init__(self, path: str | os.PathLike):
        from .model import load_dataset
        self.path = Path(path)
        self.table = load_dataset(self.path)

    def rates(self, benchmark: str, npb_class: str | None = None) -> CounterRates:
        t = self.table.frame
        rows = t[t["benchmark"].str.upper() == benchmark.upper()]
        if npb_class is not None:
            rows = rows[rows["npb_class"] == npb_class]
        rows = rows.dropna(subset=[c for c, _ in EVENTS])
        if rows.empty:
            raise CountersUnavailable(f"no calibration counts for {benchmark}"
                                      f"{'.' + npb_class if npb_class else ''} in {self.path.name}"
                                      " (run hexo_sched.calibrate for it)")
        from .model import MIX_FEATURES
        r = rows.iloc[-1]
        mix = tuple(float(r[c]) if c in r.index else float("nan") for c in MIX_FEATURES)
        return CounterRates(float(r["instructions_per_s"]), float(r["llc_references_per_s"]),
                            float(r["llc_misses_per_s"]),
                            source=f"calibration {self.path.name}: {r['counters_source']}",
                            mix=mix)


def open_source(tid: int, benchmark: str, npb_class: str | None,
                calibration: CalibrationSource | None):
    """Hardware counters on `tid` when they work, else the calibration rates; returns
    (PerfEventSource or CounterRates, a sentence for the log saying which and why)."""
    try:
        return PerfEventSource(tid), f"hardware counters on thread {tid}"
    except CountersUnavailable as e:
        if calibration is None:
            raise CountersUnavailable(f"{e}; and no calibration table was given") from e
        rates = calibration.rates(benchmark, npb_class)
        return rates, f"no hardware counters ({e}); using {rates.source}"


def event_report() -> list[tuple[str, bool, str]]:
    """For each event the slowdown model uses: (name, readable here, what perf_event_open
    said). Run on a board (`python3 -m hexo_sched.counters`) it tells what sampling there can
    and cannot read."""
    report = []
    for name, config in EVENTS:
        try:
            os.close(_perf_event_open(config, 0))
            report.append((name, True, "perf_event_open works"))
        except CountersUnavailable as e:
            report.append((name, False, str(e)))
    return report


def pmu_counts(work=lambda: sum(range(200_000))) -> list[tuple[str, str, int | str]]:
    """Every named event of every hardware PMU, counted over `work` in this thread:
    (PMU, event, count or why it could not be counted). What a board can read beyond the
    model's three events (a TCG board's PMU counts cycles and stalls, not instructions)."""
    out = []
    for pmu in hardware_pmus():
        for event, config in pmu.events.items():
            try:
                fd = _perf_event_open(config, 0, pmu.type)
            except CountersUnavailable as e:
                out.append((pmu.name, event, str(e)))
                continue
            try:
                work()
                out.append((pmu.name, event, struct.unpack("<Q", os.read(fd, 8))[0]))
            finally:
                os.close(fd)
    return out


def main() -> None:
    report = event_report()
    print(f"hardware counters on {platform.machine()} ({platform.node()}):")
    for event, ok, why in report:
        print(f"  {event:22} {'readable' if ok else 'NOT readable'}: {why}")
    pmus = hardware_pmus()
    if not pmus:
        print("  no hardware PMU: only software events (task-clock, page-faults...) count here")
    for pmu, event, count in pmu_counts():
        what = (f"NOT readable: {count}" if isinstance(count, str) else
                f"readable, {count} over a busy loop" if count else
                "opens, but counted nothing over a busy loop")
        print(f"  PMU {pmu} {event}: {what}")
    if all(ok for _, ok, _ in report):
        print("sampling: possible here (the three events on a job's vCPU thread)")
    else:
        print("sampling: NOT possible here; slowdown estimates use per-image calibration "
              "rates, labelled as such")


if __name__ == "__main__":
    main()
