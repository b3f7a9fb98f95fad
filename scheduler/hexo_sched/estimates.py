"""Slowdown estimates for the daemon: counter rates through the model, one per board model.

A job's first estimate comes from the image's calibration row (the documented fallback of
counters.py); where the server has hardware counters the daemon replaces it with rates
sampled on the job's vCPU thread (`predict`). Every estimate carries a sentence saying where
its rates came from, which `hexo status` shows. A job without a calibration row gets no estimate and is then never a
candidate for offloading (as in HEXO, a job without a counter sample is not one).
"""

from __future__ import annotations

from pathlib import Path

from .counters import CalibrationSource, CounterRates, CountersUnavailable, hardware_counters
from .model import InsufficientData, SlowdownModel, load_dataset


class Estimator:
    def __init__(self, calibration: Path, dataset: Path, board_models: list[str]):
        self.hardware, why = hardware_counters()
        self.counters = ("hardware counters: yes; the vCPU threads of jobs on the server are "
                         "sampled about once a second (calibration rates until then)"
                         if self.hardware else
                         f"hardware counters: NO ({why}); using calibration rates from "
                         f"{Path(calibration).name}")
        self.source = CalibrationSource(calibration)
        ds = load_dataset(dataset)
        self.models: dict[str, SlowdownModel] = {}
        self.missing: dict[str, str] = {}
        for b in board_models:
            try:
                self.models[b] = SlowdownModel(b).fit(ds.labelled(b))
            except InsufficientData as e:
                self.missing[b] = str(e)

    def estimate(self, benchmark: str, npb_class: str | None) -> tuple[dict[str, float], str]:
        """({board model: slowdown}, where the numbers come from)."""
        if not benchmark:
            return {}, "no estimate: the image names no known benchmark"
        try:
            rates = self.source.rates(benchmark, npb_class)
        except CountersUnavailable as e:
            return {}, f"no estimate: {e}"
        return self.predict(rates)

    def predict(self, rates: CounterRates) -> tuple[dict[str, float], str]:
        """Slowdown per board model for measured or calibrated rates, and a sentence."""
        out, notes = {}, []
        for b, m in self.models.items():
            s, clipped = m.predict(rates)
            out[b] = s
            notes.append(f"{b} {s:.3g}x" + (" (held in the training range)" if clipped else ""))
        notes += [f"{b}: no model ({why})" for b, why in self.missing.items()]
        return out, f"{'; '.join(notes)}; rates: {rates.source}"
