"""Counter sources: instructions/s, LLC references/s and LLC misses/s of a running job.

HEXO samples them per VM every second with perf (§4.3). Where the CPU has a PMU, the daemon opens
the three generic hardware events on the vCPU thread with perf_event_open and turns deltas into
rates. Where it has none (this project's development VMs: perf_event_open fails with ENOENT for
hardware events), the fallback is the image's calibration row (cachegrind counts over the
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


class CountersUnavailable(SchedError, RuntimeError):
    """No source can give rates for this job; the message says why."""


@dataclass(frozen=True)
class CounterRates:
    instructions_per_s: float
    llc_references_per_s: float
    llc_misses_per_s: float
    source: str

    def features(self) -> list[float]:
        return [self.instructions_per_s, self.llc_references_per_s, self.llc_misses_per_s]


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
        why = {errno.ENOENT: "this CPU (or hypervisor) exposes no such hardware event",
               errno.EOPNOTSUPP: "hardware events not supported here",
               errno.EACCES: "not permitted (see /proc/sys/kernel/perf_event_paranoid)",
               errno.EPERM: "not permitted (see /proc/sys/kernel/perf_event_paranoid)",
               errno.ESRCH: f"no thread {tid}"}.get(e, os.strerror(e))
        raise CountersUnavailable(f"perf_event_open(config={config}, tid={tid}): {why}")
    return fd


def hardware_counters() -> tuple[bool, str]:
    """Whether this machine can count hardware instructions, and why not."""
    try:
        os.close(_perf_event_open(PERF_COUNT_HW_INSTRUCTIONS, 0))
        return True, "perf_event_open hardware events work"
    except CountersUnavailable as e:
        return False, str(e)


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
        r = rows.iloc[-1]
        return CounterRates(float(r["instructions_per_s"]), float(r["llc_references_per_s"]),
                            float(r["llc_misses_per_s"]),
                            source=f"calibration {self.path.name}: {r['counters_source']}")


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
