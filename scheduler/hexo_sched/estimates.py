"""Slowdown estimates for the daemon: counter rates through the model, one per board model.

A job's first estimate comes from the image's calibration row (the documented fallback of
counters.py); where the server has hardware counters the daemon replaces it with rates
sampled on the job's vCPU thread (`predict`). Every estimate carries a sentence saying where
its rates came from, which `hexo status` shows. A migratable job without a calibration row
(an operator's own program) gets a derived estimate per board model from a timed sample of
its image (sample.py, `from_sample`): on the emulator for emulated boards, on an idle board of
the model for the others; until it arrives it has none for that model and is not a candidate
for its boards (as in HEXO, a job without a counter sample is not one).
"""

from __future__ import annotations

from pathlib import Path

from .counters import CalibrationSource, CounterRates, CountersUnavailable, hardware_counters
from .model import InsufficientData, SlowdownModel, best_features, load_dataset

RATES = "per-instruction-log"


class Estimator:
    def __init__(self, calibration: Path, dataset: Path, board_models: list[str],
                 emulated: list[str] = ()):
        """`emulated`: the board models whose boards run the emulated backend here: a
        sample times them on the emulator, the others on a board of the model."""
        self.emulated = sorted(emulated)
        self.hardware, why = hardware_counters()
        self.counters = ("hardware counters: yes; the vCPU threads of jobs on the server are "
                         "sampled about once a second (calibration rates until then)"
                         if self.hardware else
                         f"hardware counters: NO ({why}); using calibration rates from "
                         f"{Path(calibration).name}")
        self.source = CalibrationSource(calibration)
        ds = load_dataset(dataset)
        # per board, the features that predict held-out benchmarks best (the instruction mix
        # only a calibration row carries) and the three rates for hardware samples
        self.features: dict[str, str] = {}
        self.models: dict[str, SlowdownModel] = {}
        self.rate_models: dict[str, SlowdownModel] = {}
        self.missing: dict[str, str] = {}
        for b in board_models:
            rows = ds.labelled(b)
            try:
                self.features[b] = best_features(rows, b)
                self.models[b] = SlowdownModel(b, self.features[b]).fit(rows)
                self.rate_models[b] = SlowdownModel(b, RATES).fit(rows)
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

    def from_sample(self, result: dict, model: str) -> tuple[dict[str, float], str]:
        """({model: slowdown}, sentence) of a sample.py result for boards of `model`: timed
        on the emulator for an emulated model, on a board of the model for another."""
        if "error" in result:
            return {}, f"{model}: no estimate: {result['error']}"
        s = float(result["slowdown"])
        if not s > 0:
            return {}, f"{model}: no estimate: the sample timed a slowdown of {s}"
        return {model: s}, f"{model} {s:.3g}x; {result['source']}"

    def predict(self, rates: CounterRates) -> tuple[dict[str, float], str]:
        """Slowdown per board model for measured or calibrated rates, and a sentence."""
        out, notes, used = {}, [], set()
        for b, m in self.models.items():
            m, name = ((m, f"{self.features[b]} features") if _has_inputs(rates, m)
                       else (self.rate_models[b], "rates"))
            s, clipped = m.predict(rates)
            out[b] = s
            used.add(name)
            notes.append(f"{b} {s:.3g}x" + (" (held in the training range)" if clipped else ""))
        notes += [f"{b}: no model ({why})" for b, why in self.missing.items()]
        return out, f"{'; '.join(notes)}; {', '.join(sorted(used))}: {rates.source}"


def _has_inputs(rates: CounterRates, m: SlowdownModel) -> bool:
    """Whether `rates` carry every input of `m`: a hardware sample has the three rates only,
    and a calibration row may lack what valgrind could not measure."""
    try:
        rates.inputs(m.features.columns)
    except CountersUnavailable:
        return False
    return True
