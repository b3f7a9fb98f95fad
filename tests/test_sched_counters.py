"""Counter sources: hardware where it exists, a labelled calibration fallback, never zeros."""

import pytest

from hexo_sched import model
from hexo_sched.counters import (CalibrationSource, CounterRates, CountersUnavailable,
                                 PerfEventSource, hardware_counters, open_source)

def test_hardware_counters_say_why_not():
    ok, why = hardware_counters()
    assert why
    if not ok:
        assert "perf_event_open" in why
        with pytest.raises(CountersUnavailable):
            PerfEventSource(0)


def test_perf_event_source_counts_when_available():
    ok, why = hardware_counters()
    if not ok:
        pytest.skip(f"no hardware counters here: {why}")
    src = PerfEventSource(0)
    try:
        assert src.sample(0.0) is None
        sum(range(100000))
        rates = src.sample(1.0)
        assert rates.instructions_per_s > 0 and "perf_event_open" in rates.source
    finally:
        src.close()


def test_calibration_fallback_is_labelled_and_never_zero():
    cal = CalibrationSource(model.EMULATED_DATASET)
    r = cal.rates("cg", "S")
    assert isinstance(r, CounterRates) and min(r.features()) > 0
    assert "cachegrind" in r.source and "emulated_aarch64_npb.csv" in r.source
    with pytest.raises(CountersUnavailable, match="no calibration counts for LU"):
        cal.rates("LU")
    potato = CalibrationSource(model.DEFAULT_DATASET)
    with pytest.raises(CountersUnavailable):
        potato.rates("Kmeans")       # the paper's slowdown is there, but no counts


def test_open_source_falls_back_with_a_reason():
    ok, _ = hardware_counters()
    cal = CalibrationSource(model.EMULATED_DATASET)
    src, why = open_source(0, "EP", "S", cal)
    if ok:
        assert isinstance(src, PerfEventSource)
        src.close()
    else:
        assert isinstance(src, CounterRates) and why.startswith("no hardware counters")
        with pytest.raises(CountersUnavailable, match="no calibration table"):
            open_source(0, "EP", "S", None)
