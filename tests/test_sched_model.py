"""Slowdown model: datasets with provenance, leave-one-benchmark-out metrics, shipped datasets."""

import numpy as np
import pandas as pd
import pytest

from hexo_sched import model
from hexo_sched.model import (FEATURES, DatasetError, InsufficientData, SlowdownModel, evaluate,
                              load_dataset, lobo)

HEADER = "# synthetic: slowdown = 2 + 1e-9*ips + 5e-8*refs + 3e-6*misses\n"


def synthetic(noise=0.0, seed=0, benchmarks=6, per=3):
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(benchmarks):
        for k in range(per):
            ips, refs, misses = rng.uniform(1e9, 4e9), rng.uniform(1e6, 5e7), rng.uniform(1e4, 2e6)
            s = 2 + 1e-9 * ips + 5e-8 * refs + 3e-6 * misses + rng.normal(0, noise)
            rows.append({"benchmark": f"B{b}", "npb_class": "SWA"[k], "board": "toy",
                         "slowdown": s, "slowdown_source": "formula",
                         "instructions_per_s": ips, "llc_references_per_s": refs,
                         "llc_misses_per_s": misses, "counters_source": "random"})
    return pd.DataFrame(rows, columns=model.COLUMNS)


def write(tmp_path, df, header=HEADER):
    p = tmp_path / "d.csv"
    p.write_text(header + df.to_csv(index=False))
    return p


def test_exact_linear_relation_gives_perfect_lobo(tmp_path):
    ds = load_dataset(write(tmp_path, synthetic()))
    m = evaluate(ds.labelled("toy"), "toy", "raw")
    assert m["train_r2"] == pytest.approx(1.0, abs=1e-9)
    assert m["lobo_r2"] == pytest.approx(1.0, abs=1e-9)
    assert m["lobo_mape_pct"] == pytest.approx(0.0, abs=1e-6)
    fit = SlowdownModel("toy", "raw").fit(ds.labelled())
    np.testing.assert_allclose(fit.reg.coef_, [1e-9, 5e-8, 3e-6], rtol=1e-6)


def test_lobo_holds_out_whole_benchmarks():
    df = synthetic(noise=0.3, seed=1)
    held = lobo(df, "toy", "raw")
    for b in df["benchmark"].unique():
        train = df[df["benchmark"] != b]
        x = np.c_[np.ones(len(train)), train[FEATURES].to_numpy()]
        coef, *_ = np.linalg.lstsq(x, train["slowdown"].to_numpy(), rcond=None)
        test = df[df["benchmark"] == b]
        expect = np.c_[np.ones(len(test)), test[FEATURES].to_numpy()] @ coef
        np.testing.assert_allclose(held.loc[test.index, "predicted"], expect, rtol=1e-6)
    m = evaluate(df, "toy", "raw")
    y, p = df["slowdown"].to_numpy(), held["predicted"].to_numpy()
    assert m["lobo_mape_pct"] == pytest.approx(100 * np.mean(np.abs((y - p) / y)))
    assert m["lobo_r2"] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))
    assert m["lobo_r2"] < m["train_r2"]


def test_too_little_data_is_refused_with_a_reason():
    df = synthetic(benchmarks=2)
    with pytest.raises(InsufficientData, match="at least 3"):
        lobo(df, "toy")
    with pytest.raises(InsufficientData, match="needs at least 4"):
        SlowdownModel("toy").fit(df.head(3))


def test_predictions_are_held_in_the_training_range():
    df = synthetic()
    m = SlowdownModel("toy", "raw").fit(df)
    est, clipped = m.predict([1e12, 0, 0])
    assert clipped and est == pytest.approx(df["slowdown"].max())
    row = df.iloc[0]
    est, clipped = m.predict(row[FEATURES].to_list())
    assert not clipped and est == pytest.approx(row["slowdown"])


def test_dataset_without_provenance_or_sources_is_rejected(tmp_path):
    with pytest.raises(DatasetError, match="provenance"):
        load_dataset(write(tmp_path, synthetic(), header=""))
    df = synthetic()
    df.loc[2, "slowdown_source"] = None
    with pytest.raises(DatasetError, match="without a source"):
        load_dataset(write(tmp_path, df))


@pytest.mark.parametrize("path", [model.DEFAULT_DATASET, model.EMULATED_DATASET])
def test_shipped_datasets_load_with_provenance(path):
    ds = load_dataset(path)
    text = " ".join(ds.provenance)
    assert "cachegrind" in text and "no hardware performance counters" in text
    counted = ds.frame.dropna(subset=FEATURES)
    assert len(counted) and (counted[FEATURES] > 0).all().all()
    assert counted["counters_source"].str.contains("cachegrind").all()


def test_default_dataset_states_the_paper_slowdowns():
    ds = load_dataset(model.DEFAULT_DATASET)
    assert "HEXO paper" in ds.provenance[0]
    lab = ds.frame.dropna(subset=["slowdown"]).set_index("benchmark")
    assert lab.loc["EP", "slowdown"] == 3.0 and lab.loc["CG", "slowdown"] == 30.0
    assert lab["slowdown_source"].str.startswith("HEXO").all()
    r = model.report(model.DEFAULT_DATASET)["boards"]["potato"]
    assert "leave-one-benchmark-out needs at least 3" in r["not_computed"]


def test_emulated_board_dataset_metrics_are_computed():
    r = model.report(model.EMULATED_DATASET)["boards"]["emulated-aarch64"]
    assert r["benchmarks"] == ["CG", "EP", "IS"]
    assert len(r["lobo_predictions"]) == r["rows"]
    assert np.isfinite([r["train_r2"], r["lobo_r2"], r["lobo_mape_pct"]]).all()
    assert r["lobo_mape_clipped_pct"] <= r["lobo_mape_pct"]


def test_lobo_plot_is_written(tmp_path):
    rep = model.report(write(tmp_path, synthetic(noise=0.3)))
    out = tmp_path / "lobo.png"
    model.plot_lobo(rep, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InsufficientData, match="no board"):
        model.plot_lobo({"dataset": "x", "boards": {}}, out)


def test_corpus_dataset_covers_12_benchmarks_and_normalising_helps():
    ds = load_dataset(model.CORPUS_DATASET)
    rows = ds.labelled("emulated-aarch64")
    assert rows["benchmark"].nunique() >= 12
    assert rows["slowdown_source"].str.startswith("measured").all()
    raw = evaluate(rows, "emulated-aarch64", "raw")
    scaled = evaluate(rows, "emulated-aarch64")
    # per-instruction, log-scaled rates predict held-out benchmarks better than raw rates
    assert scaled["lobo_r2"] > raw["lobo_r2"] and scaled["lobo_mape_pct"] < raw["lobo_mape_pct"]
