"""Energy: per-machine power models, integration over time, jobs per kJ and cost per job.

Power models come from wall-socket measurements (HEXO Table 1: idle, 1, 4 and 8 busy threads);
between the measured points power is interpolated linearly in the number of busy cores, which is
also how HEXO's §5.2 numbers come out (3 busy cores). Where a machine exposes RAPL counters
(/sys/class/powercap) they can be read instead, but RAPL covers the CPU package (and DRAM), not
the whole machine, so the two are not interchangeable; reports say which source was used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import paper
from .errors import SchedError


@dataclass(frozen=True)
class PowerModel:
    """Whole-machine power as a function of busy cores: (busy cores, watts) points."""

    name: str
    points: tuple[tuple[int, float], ...]
    source: str

    def __post_init__(self):
        xs = [p[0] for p in self.points]
        if not xs or xs[0] != 0 or xs != sorted(set(xs)):
            raise ValueError(f"{self.name}: points must start at 0 busy cores, increasing")

    def watts(self, busy: float) -> float:
        """Linear between measured points; flat beyond the last one."""
        if busy < 0:
            raise ValueError("busy cores cannot be negative")
        pts = self.points
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if busy <= x1:
                return y0 + (y1 - y0) * (busy - x0) / (x1 - x0)
        return pts[-1][1]


def table1_models() -> dict[str, PowerModel]:
    return {name: PowerModel(name, tuple(sorted(m["power_w"].items())),
                             "HEXO Table 1 (wall power, Kill-A-Watt), linear in busy cores")
            for name, m in paper.TABLE1.items()}


class EnergyMeter:
    """Integrates each machine's power over time from the changes in its busy-core count."""

    def __init__(self, models: dict[str, PowerModel], start: float = 0.0):
        self.models = dict(models)
        self.busy = {m: 0.0 for m in models}
        self.joules = {m: 0.0 for m in models}
        self.since = {m: start for m in models}

    def set_busy(self, machine: str, busy: float, now: float) -> None:
        self._accumulate(machine, now)
        self.busy[machine] = busy

    def close(self, now: float) -> dict[str, float]:
        """Energy per machine up to `now`, in joules."""
        for m in self.models:
            self._accumulate(m, now)
        return dict(self.joules)

    def _accumulate(self, machine: str, now: float) -> None:
        dt = now - self.since[machine]
        if dt < 0:
            raise ValueError(f"{machine}: time went backwards")
        self.joules[machine] += self.models[machine].watts(self.busy[machine]) * dt
        self.since[machine] = now


@dataclass(frozen=True)
class EnergyReport:
    energy_j: float
    jobs_completed: int
    hardware_usd: float
    usd_per_kwh: float
    amortize_years: float
    seconds: float

    @property
    def jobs_per_kj(self) -> float:
        return self.jobs_completed / (self.energy_j / 1000.0) if self.energy_j else 0.0

    @property
    def energy_usd_per_job(self) -> float | None:
        if not self.jobs_completed:
            return None
        return self.energy_j / 3.6e6 * self.usd_per_kwh / self.jobs_completed

    @property
    def cost_usd_per_job(self) -> float | None:
        """Electricity plus the hardware price written off linearly over `amortize_years`."""
        if not self.jobs_completed:
            return None
        capital = self.hardware_usd * self.seconds / (self.amortize_years * 365.25 * 86400)
        return self.energy_usd_per_job + capital / self.jobs_completed

    def as_dict(self) -> dict:
        return {"energy_kj": self.energy_j / 1000.0, "jobs_completed": self.jobs_completed,
                "jobs_per_kj": self.jobs_per_kj, "energy_usd_per_job": self.energy_usd_per_job,
                "cost_usd_per_job": self.cost_usd_per_job, "usd_per_kwh": self.usd_per_kwh,
                "amortize_years": self.amortize_years}


class RaplUnavailable(SchedError, RuntimeError):
    pass


class RaplReader:
    """Package energy from Linux powercap (intel-rapl), handling counter wrap-around."""

    def __init__(self, root: str | os.PathLike = "/sys/class/powercap"):
        root = Path(root)
        if not root.is_dir():
            raise RaplUnavailable(f"{root} does not exist: no RAPL on this machine; "
                                  "use a power model (energy.table1_models) instead")
        self.domains = sorted(p for p in root.glob("intel-rapl:*")
                              if p.name.count(":") == 1 and (p / "energy_uj").exists())
        if not self.domains:
            raise RaplUnavailable(f"{root} has no readable intel-rapl package domain")
        self.last = [self._read(d) for d in self.domains]
        self.total_uj = 0

    @staticmethod
    def _read(d: Path) -> tuple[int, int]:
        try:
            return int((d / "energy_uj").read_text()), int(
                (d / "max_energy_range_uj").read_text())
        except PermissionError as e:
            raise RaplUnavailable(f"{d}/energy_uj is not readable (root only since Linux 5.10)"
                                  ) from e

    def joules(self) -> float:
        """Energy of all packages since this reader was created."""
        for i, d in enumerate(self.domains):
            now, wrap = self._read(d)
            prev = self.last[i][0]
            self.total_uj += now - prev if now >= prev else now + wrap - prev
            self.last[i] = (now, wrap)
        return self.total_uj / 1e6
