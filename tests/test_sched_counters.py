"""Counter sources: hardware where it exists, a labelled calibration fallback, never zeros."""

import numpy as np
import pytest

from hexo_sched import model
from hexo_sched.counters import (CalibrationSource, CounterRates, CountersUnavailable,
                                 PerfEventSource, hardware_counters, hardware_pmus, open_source)


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


def test_pmus_and_their_events_come_from_sysfs(tmp_path):
    """An x86 PMU (event and umask terms at their format bits), an arm64 one, and the kernel's
    own event sources, which are no PMU."""
    def source(name, kind, formats, events):
        d = tmp_path / name
        (d / "format").mkdir(parents=True)
        (d / "events").mkdir()
        (d / "type").write_text(f"{kind}\n")
        for k, v in formats.items():
            (d / "format" / k).write_text(v + "\n")
        for k, v in events.items():
            (d / "events" / k).write_text(v + "\n")
    source("cpu", 4, {"event": "config:0-7", "umask": "config:8-15", "ldlat": "config1:0-15"},
           {"instructions": "event=0xc0", "cache-references": "event=0x2e,umask=0x4f",
            "cache-misses": "event=0x2e,umask=0x41", "mem-loads": "event=0xcd,umask=0x1,ldlat=3",
            "mem-loads.unit": "ns"})
    source("armv8_pmuv3", 8, {"event": "config:0-15"},
           {"cpu_cycles": "event=0x0011", "stall": "event=0x003c"})
    source("software", 1, {}, {})
    source("msr", 9, {"event": "config:0-63"}, {"tsc": "event=0x00"})
    pmus = {p.name: p for p in hardware_pmus(tmp_path)}
    assert set(pmus) == {"cpu", "armv8_pmuv3"}
    assert pmus["cpu"].type == 4
    assert pmus["cpu"].events == {"cache-misses": 0x412e, "cache-references": 0x4f2e,
                                  "instructions": 0xc0}     # mem-loads needs config1
    assert pmus["armv8_pmuv3"].events == {"cpu_cycles": 0x11, "stall": 0x3c}
    assert pmus["armv8_pmuv3"].describe() == "armv8_pmuv3 lists cpu_cycles, stall"
    assert hardware_pmus(tmp_path / "absent") == []


def test_estimates_use_the_best_held_out_features_and_a_samples_rates():
    from hexo_sched.estimates import Estimator
    board = "emulated-aarch64"
    est = Estimator(model.CORPUS_DATASET, model.CORPUS_DATASET, [board])
    rows = model.load_dataset(model.CORPUS_DATASET).labelled(board)
    r2 = {f: model.evaluate(rows, board, f)["lobo_r2"] for f in model.FEATURE_SETS}
    assert r2[est.features[board]] == max(r2.values())
    slow, why = est.estimate("EP", "S")
    assert f"; {est.features[board]} features: calibration" in why
    ep = rows[(rows["benchmark"] == "EP") & (rows["npb_class"] == "S")]
    fit = model.SlowdownModel(board, est.features[board]).fit(rows)
    assert slow[board] == pytest.approx(float(np.clip(fit.predict_rows(ep)[0], *fit.range)))
    # a hardware sample has rates only: the rates model answers, and says so
    r = CalibrationSource(model.CORPUS_DATASET).rates("EP", "S")
    assert r.mix is not None and len(r.mix) == len(model.MIX_FEATURES)
    sample = CounterRates(*r.features(), source="a sample")
    slow, why = est.predict(sample)
    assert why.endswith("; rates: a sample") and slow[board] > 0
    with pytest.raises(CountersUnavailable, match="a sample: no fp_per_insn"):
        sample.inputs(model.MIX_FEATURES)


def test_a_derived_estimate_goes_to_the_board_model_it_was_timed_for():
    """A sample is timed for one board model (on the emulator, or on a board of the model):
    its slowdown is that model's estimate only, and a failed sample is one 'no estimate'
    sentence for that model."""
    from hexo_sched.estimates import Estimator
    est = Estimator(model.CORPUS_DATASET, model.CORPUS_DATASET,
                    ["emulated-aarch64", "board-vm-kvm"], {"emulated-aarch64"})
    slow, why = est.from_sample({"slowdown": 42.0, "point": 7, "board_s": 4.2,
                                 "server_s": 0.1, "source": "derived on board b0 (a timed "
                                 "sample)"}, "board-vm-kvm")
    assert slow == {"board-vm-kvm": 42.0}
    assert why == "board-vm-kvm 42x; derived on board b0 (a timed sample)"
    assert est.from_sample({"error": "the aarch64 build crashed"}, "emulated-aarch64") == \
        ({}, "emulated-aarch64: no estimate: the aarch64 build crashed")
