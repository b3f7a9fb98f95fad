"""Energy: Table 1 power models, integration over time, jobs/kJ, cost per job, RAPL reading."""

import pytest

from hexo_sched.energy import (EnergyMeter, EnergyReport, PowerModel, RaplReader, RaplUnavailable,
                               table1_models)


def test_table1_interpolation():
    m = table1_models()
    assert m["xeon-e5-2637"].watts(0) == 60.0
    assert m["xeon-e5-2637"].watts(3) == pytest.approx(83 + 2 * 41 / 3)   # 110.33 W
    assert m["potato"].watts(3) == pytest.approx(2.1 + 2 * 0.8 / 3)       # 2.633 W
    assert m["xeon-e5-2637"].watts(12) == 127.0
    with pytest.raises(ValueError):
        m["potato"].watts(-1)
    with pytest.raises(ValueError):
        PowerModel("bad", ((1, 2.0),), "test")


def test_meter_integrates_piecewise_constant_power():
    pm = PowerModel("toy", ((0, 10.0), (2, 30.0)), "test")
    meter = EnergyMeter({"a": pm, "b": pm})
    meter.set_busy("a", 2, 10.0)      # idle 0-10 s: 100 J
    meter.set_busy("a", 1, 20.0)      # 2 busy 10-20 s: 300 J
    joules = meter.close(30.0)        # 1 busy 20-30 s: 200 J
    assert joules == {"a": pytest.approx(600.0), "b": pytest.approx(300.0)}
    with pytest.raises(ValueError):
        meter.set_busy("a", 0, 29.0)


def test_report_arithmetic():
    r = EnergyReport(energy_j=3.6e6, jobs_completed=10, hardware_usd=3000.0, usd_per_kwh=0.2,
                     amortize_years=3.0, seconds=3600.0)
    assert r.jobs_per_kj == pytest.approx(10 / 3600)
    assert r.energy_usd_per_job == pytest.approx(0.02)
    capital = 3000 / (3 * 365.25 * 24)
    assert r.cost_usd_per_job == pytest.approx(0.02 + capital / 10)
    none = EnergyReport(1.0, 0, 1.0, 0.1, 1.0, 1.0)
    assert none.energy_usd_per_job is None and none.cost_usd_per_job is None


def test_paper_energy_gain_follows_from_table1():
    # HEXO §5.2: {EP} +25% throughput with one Potato gives +22% jobs/kJ at 3 busy cores
    m = table1_models()
    x, p = m["xeon-e5-2637"].watts(3), m["potato"].watts(3)
    assert 100 * (1.25 * x / (x + p) - 1) == pytest.approx(22.0, abs=0.2)
    assert 100 * (1.667 * x / (x + 3 * p) - 1) == pytest.approx(55.5, abs=0.5)


def fake_rapl(root, value, wrap=1000):
    d = root / "intel-rapl:0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "energy_uj").write_text(str(value))
    (d / "max_energy_range_uj").write_text(str(wrap))


def test_rapl_reader_handles_wraparound(tmp_path):
    fake_rapl(tmp_path, 900)
    r = RaplReader(tmp_path)
    fake_rapl(tmp_path, 950)
    assert r.joules() == pytest.approx(50e-6)
    fake_rapl(tmp_path, 20)      # wrapped at 1000
    assert r.joules() == pytest.approx(120e-6)


def test_rapl_absence_is_explicit(tmp_path):
    with pytest.raises(RaplUnavailable, match="no RAPL"):
        RaplReader(tmp_path / "missing")
    with pytest.raises(RaplUnavailable, match="no readable"):
        RaplReader(tmp_path)
