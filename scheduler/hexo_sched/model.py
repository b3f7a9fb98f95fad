"""Slowdown model: linear regression from a job's counters on the server to its slowdown on a
board model (HEXO §3.4: instructions/s, LLC references/s, LLC misses/s; r = 0.95, R² = 0.90
on NPB for the Potato, a training fit), or from its instruction mix (insn_mix; FEATURE_SETS).

A slowdown is board time over server time. The server's part is measured, not predicted: the
job runs there, and its rate (instructions/s) is sampled. So the "emulation-cost" model
predicts only the board's time per instruction, as a non-negative sum of costs per
instruction class (COST_FEATURES), and multiplies it by the rate: slowdown = rate × Σ cost ×
events per instruction. Its coefficients are the cost of each kind of event on the board.

Datasets are CSV files whose `#` header lines state where every column comes from; loading one
without them fails. A training fit says little with a handful of benchmarks, so `evaluate`
reports leave-one-benchmark-out (LOBO) R² and mean absolute percentage error: each benchmark is
predicted by a model that never saw it, which is the daemon's situation with a new image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.metrics import mean_absolute_percentage_error, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hexo.resources import package_path

from .errors import SchedError
from .insn_mix import A64_COUNTS

FEATURES = ["instructions_per_s", "llc_references_per_s", "llc_misses_per_s"]
COLUMNS = ["benchmark", "npb_class", "board", "slowdown", "slowdown_source", *FEATURES,
           "counters_source"]
#: The instruction mix per instruction (insn_mix; optional columns of a dataset) and the
#: insn_mix count each one divides by the instruction count.
MIX_COUNTS = ["fp", "divsqrt", "loads", "stores", "branches", "mispredicts", "l1_misses",
              "ll_misses", "fp_lanes", "convert", "simd_accesses", "indirect_branches",
              "tlb_misses"]
X86_MIX_FEATURES = [f"{c}_per_insn" for c in MIX_COUNTS]
#: The aarch64 build's instruction mix per x86-64 instruction (insn_mix.aarch64_counts):
#: what an emulated aarch64 board executes for each instruction the server runs.
A64_FEATURES = [f"aarch64_{c}_per_insn" for c in A64_COUNTS]
MIX_FEATURES = [*X86_MIX_FEATURES, *A64_FEATURES]
DATA_DIR = package_path("hexo_sched", "data")
DEFAULT_DATASET = DATA_DIR / "potato_npb.csv"
EMULATED_DATASET = DATA_DIR / "emulated_aarch64_npb.csv"
CORPUS_DATASET = DATA_DIR / "emulated_aarch64_corpus.csv"
BOARD_VM_DATASET = DATA_DIR / "board_vm_kvm.csv"


class DatasetError(SchedError, ValueError):
    pass


class InsufficientData(SchedError, ValueError):
    """Too few labelled rows or benchmarks for what was asked; the message says how many."""


@dataclass
class Dataset:
    frame: pd.DataFrame
    provenance: list[str]
    path: Path | None = None

    def labelled(self, board: str | None = None) -> pd.DataFrame:
        """Rows with a slowdown and all three rates (for `board` when given)."""
        df = self.frame
        if board is not None:
            df = df[df["board"] == board]
        return df.dropna(subset=["slowdown", *FEATURES])

    @property
    def boards(self) -> list[str]:
        return sorted(self.frame["board"].dropna().unique())


def load_dataset(path: str | os.PathLike) -> Dataset:
    path = Path(path)
    with open(path) as f:
        provenance = []
        for line in f:
            if not line.startswith("#"):
                break
            provenance.append(line[1:].strip())
    if not provenance:
        raise DatasetError(f"{path}: no provenance ('#' header lines saying where the data "
                           "comes from)")
    frame = pd.read_csv(path, comment="#")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}")
    unsourced = frame[frame["slowdown"].notna() & frame["slowdown_source"].isna()]
    unsourced = pd.concat([unsourced, frame[frame["instructions_per_s"].notna()
                                            & frame["counters_source"].isna()]])
    if not unsourced.empty:
        raise DatasetError(f"{path}: values without a source in rows "
                           f"{sorted(set(unsourced.index))}")
    return Dataset(frame, provenance, path)


def per_instruction_log(x: np.ndarray) -> np.ndarray:
    """(log10 instructions/s, log10 LLC references per instruction, log10 LLC misses per
    instruction): what a program does per instruction does not depend on how fast the machine
    ran it, and the rates span orders of magnitude."""
    ips, refs, misses = x[:, 0], x[:, 1], x[:, 2]
    return np.c_[np.log10(ips), np.log10(refs / ips + 1e-9), np.log10(misses / ips + 1e-9)]


#: What an instruction costs an emulated board (QEMU's TCG, which unicorn is), beyond the
#: constant every translated instruction costs: loads and stores go through the software TLB,
#: a 16-byte SIMD access through it twice; an FP instruction calls a softfloat helper that
#: computes each lane; divisions and square roots are slower still, and conversions between
#: FP and integer formats have no fast path on the host's FPU; a branch ends a
#: translation block and an indirect one looks the next block up; a TLB refill walks the
#: guest's page table in software; a host cache miss stalls the emulator.
COST_FEATURES = ("loads_per_insn", "stores_per_insn", "simd_accesses_per_insn", "fp_per_insn",
                 "fp_lanes_per_insn", "divsqrt_per_insn", "convert_per_insn", "branches_per_insn",
                 "indirect_branches_per_insn", "tlb_misses_per_insn", "ll_misses_per_insn")

#: The same costs paid per event of the aarch64 build (per x86-64 instruction the server ran):
#: its instructions in place of the constant, its accesses, FP work and branches; the memory
#: behaviour (software-TLB refills, cache misses) is the data's, the same on both ISAs.
A64_COST_FEATURES = (*A64_FEATURES, "tlb_misses_per_insn", "ll_misses_per_insn")

#: Below this many events per instruction the mix counts an event as absent (log10 floor).
MIX_FLOOR = 1e-6


@dataclass(frozen=True)
class FeatureSet:
    """What a model is fitted on: dataset columns, how they become regression inputs, and
    what it fits: "slowdown", "log" (log slowdown: errors then are relative, as slowdowns are
    ratios, and the fit is ridge-regularised, its strength chosen by cross-validation on the
    training rows only: more inputs than the three rates, few benchmarks) or "cost" (board
    time per instruction, slowdown / instructions_per_s, the first column: non-negative
    costs, fitted for relative error)."""
    columns: tuple[str, ...]
    transform: Callable[[np.ndarray], np.ndarray]
    target: str


FEATURE_SETS = {
    # this project's: the instruction mix (insn_mix), log-scaled
    "mix": FeatureSet(tuple(X86_MIX_FEATURES), lambda x: np.log10(np.maximum(x, MIX_FLOOR)),
                      "log"),
    # this project's: the board's cost per instruction class (COST_FEATURES) times the rate
    "emulation-cost": FeatureSet(("instructions_per_s", *COST_FEATURES),
                                 lambda x: np.c_[np.ones(len(x)), x[:, 1:]], "cost"),
    # this project's: the board's cost per event class of the aarch64 build it runs
    # (A64_COST_FEATURES) times the server's rate
    "aarch64-cost": FeatureSet(("instructions_per_s", *A64_COST_FEATURES),
                               lambda x: x[:, 1:], "cost"),
    # HEXO's three rates, normalised per instruction and log-scaled
    "per-instruction-log": FeatureSet(tuple(FEATURES), per_instruction_log, "slowdown"),
    # HEXO's model as published
    "raw": FeatureSet(tuple(FEATURES), lambda x: x, "slowdown"),
}

#: Board time per instruction in the "cost" target's unit (nanoseconds), for readable costs.
NS = 1e9


class SlowdownModel:
    """slowdown ≈ w · f(features) + b for one board model, with the features and f of one of
    FEATURE_SETS (HEXO's model is "raw").

    A linear model extrapolates without bound, so predictions are held inside the range of
    slowdowns it was trained on; `predict` says when it did so."""

    def __init__(self, board: str, features: str = "per-instruction-log"):
        self.board = board
        self.features = FEATURE_SETS[features]
        target = self.features.target
        self.reg = (make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 25)))
                    if target == "log" else
                    LinearRegression(positive=True, fit_intercept=False) if target == "cost"
                    else LinearRegression())
        self.range: tuple[float, float] | None = None

    def _columns(self, rows: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features.columns if c not in rows.columns]
        if missing:
            raise InsufficientData(f"the dataset has no {', '.join(missing)} column(s)")
        return rows[list(self.features.columns)].to_numpy(float)

    def fit(self, rows: pd.DataFrame) -> SlowdownModel:
        """Fitted on the rows that have a slowdown and every input (a row the calibration
        could not measure one of them for is left out)."""
        self._columns(rows)
        rows = rows.dropna(subset=["slowdown", *self.features.columns])
        n = len(self.features.columns)
        if len(rows) < n + 1:
            raise InsufficientData(f"{len(rows)} labelled rows for board {self.board}; a "
                                   f"linear model on {n} inputs needs at least {n + 1}")
        y, x = rows["slowdown"].to_numpy(float), self._columns(rows)
        target = self.features.target
        if target == "cost":
            cost = NS * y / x[:, 0]
            self.reg.fit(self.features.transform(x), cost, sample_weight=cost ** -2.0)
        else:
            self.reg.fit(self.features.transform(x), np.log(y) if target == "log" else y)
        self.range = (float(y.min()), float(y.max()))
        return self

    def predict_rows(self, rows: pd.DataFrame) -> np.ndarray:
        return self._output(self._columns(rows))

    def _output(self, x: np.ndarray) -> np.ndarray:
        y = self.reg.predict(self.features.transform(x))
        target = self.features.target
        return np.exp(y) if target == "log" else y * x[:, 0] / NS if target == "cost" else y

    def costs_ns(self) -> dict[str, float]:
        """A "cost" model's coefficients: board nanoseconds per event of each class (per
        x86-64 instruction for the constant)."""
        if self.features.target != "cost" or self.range is None:
            raise ValueError("only a fitted emulation-cost model has costs per event")
        names = [c.removesuffix("_per_insn") for c in self.features.columns[1:]]
        if len(self.reg.coef_) > len(names):      # the transform added a constant
            names.insert(0, "instruction")
        return dict(zip(names, map(float, self.reg.coef_)))

    def predict(self, features) -> tuple[float, bool]:
        """(estimated slowdown, whether it was clipped to the training range)."""
        if self.range is None:
            raise RuntimeError("model not fitted")
        x = features.inputs(self.features.columns) if hasattr(features, "inputs") \
            else list(features)
        raw = float(self._output(np.asarray([x], float))[0])
        lo, hi = self.range
        est = min(max(raw, lo), hi)
        return est, est != raw


def labelled(rows: pd.DataFrame, features: str) -> pd.DataFrame:
    """The rows that have a slowdown and every input of a feature set."""
    cols = [c for c in FEATURE_SETS[features].columns if c in rows.columns]
    return rows.dropna(subset=["slowdown", *cols])


def lobo(rows: pd.DataFrame, board: str, features: str = "per-instruction-log") -> pd.DataFrame:
    """Held-out prediction for every row: the model is trained without the row's benchmark
    (`predicted`; `predicted_clipped` is held in that model's training range, as `predict`)."""
    rows = labelled(rows, features)
    benches = sorted(rows["benchmark"].unique())
    if len(benches) < 3:
        raise InsufficientData(f"{len(benches)} labelled benchmark(s) for board {board} "
                               f"({', '.join(benches) or 'none'}); leave-one-benchmark-out "
                               "needs at least 3")
    out = rows.copy()
    for b in benches:
        train, test = rows[rows["benchmark"] != b], rows["benchmark"] == b
        m = SlowdownModel(board, features).fit(train)
        out.loc[test, "predicted"] = m.predict_rows(rows[test])
        out.loc[test, "predicted_clipped"] = out.loc[test, "predicted"].clip(*m.range)
    return out


def lobo_bias(rows: pd.DataFrame, board: str,
              features: str = "per-instruction-log") -> dict[str, float]:
    """Per benchmark, held-out predicted / measured slowdown (geometric mean over its rows,
    predictions held in the training range as `predict` does): the model's error on a program
    it has not seen."""
    held = lobo(rows, board, features)
    ratio = np.log(held["predicted_clipped"] / held["slowdown"])
    return {b: float(np.exp(r.mean())) for b, r in ratio.groupby(held["benchmark"])}


def evaluate(rows: pd.DataFrame, board: str, features: str = "per-instruction-log") -> dict:
    """Training fit (R², r, as HEXO reports) and LOBO R² and MAPE, raw and clipped; LOBO R² of
    the board's time per instruction (slowdown / instructions_per_s: what is left to predict
    once the server's rate is measured); an emulation-cost model's costs per event."""
    held = lobo(rows, board, features)
    rows = labelled(rows, features)
    y = rows["slowdown"].to_numpy(float)
    fit = SlowdownModel(board, features).fit(rows)
    train_pred = fit.predict_rows(rows)
    ips = rows["instructions_per_s"].to_numpy(float)
    out = {"board": board, "rows": len(rows), "features": features,
           "benchmarks": sorted(rows["benchmark"].unique()),
           "train_r2": float(r2_score(y, train_pred)),
           "train_r": float(np.corrcoef(y, train_pred)[0, 1]),
           "lobo_r2": float(r2_score(y, held["predicted"])),
           "lobo_mape_pct": 100.0 * float(mean_absolute_percentage_error(y, held["predicted"])),
           "lobo_r2_clipped": float(r2_score(y, held["predicted_clipped"])),
           "lobo_mape_clipped_pct": 100.0 * float(
               mean_absolute_percentage_error(y, held["predicted_clipped"])),
           "lobo_r2_ns_per_insn": float(r2_score(NS * y / ips, NS * held["predicted"] / ips)),
           "lobo_predictions": [
               {"benchmark": r.benchmark, "npb_class": r.npb_class, "slowdown": r.slowdown,
                "predicted": float(r.predicted)} for r in held.itertuples()]}
    if fit.features.target == "cost":
        out["costs_ns"] = fit.costs_ns()
    return out


def best_features(rows: pd.DataFrame, board: str) -> str:
    """The feature set whose leave-one-benchmark-out R² is highest on these rows (among those
    the rows have columns and enough data for; the three rates per instruction otherwise)."""
    scores = {}
    for f in FEATURE_SETS:
        try:
            held = lobo(rows, board, f)
        except InsufficientData:
            continue
        scores[f] = r2_score(held["slowdown"], held["predicted"])
    return max(scores, key=scores.get) if scores else "per-instruction-log"


def _held_out_metrics(rows: pd.DataFrame, board: str, features: str) -> dict:
    try:
        m = evaluate(rows, board, features)
    except InsufficientData as e:
        return {"not_computed": str(e)}
    return {k: m[k] for k in ("lobo_r2", "lobo_mape_pct", "lobo_r2_ns_per_insn")}


def report(path: str | os.PathLike = DEFAULT_DATASET) -> dict:
    """Metrics per board in a dataset, or why they cannot be computed."""
    ds = load_dataset(path)
    out = {"dataset": Path(path).name, "provenance": ds.provenance, "rows": len(ds.frame),
           "boards": {}}
    for board in ds.boards:
        rows = ds.labelled(board)
        features = best_features(rows, board)
        try:
            m = out["boards"][board] = evaluate(rows, board, features)
            m["other_features"] = {f: _held_out_metrics(rows, board, f)
                                   for f in FEATURE_SETS if f != features}
        except InsufficientData as e:
            out["boards"][board] = {"board": board, "rows": len(rows),
                                    "benchmarks": sorted(rows["benchmark"].unique()),
                                    "not_computed": str(e)}
    return out


def plot_lobo(rep: dict, path) -> None:
    """Held-out predicted vs measured slowdown, one panel per board of a `report` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boards = [m for m in rep["boards"].values() if "lobo_predictions" in m]
    if not boards:
        raise InsufficientData(f"{rep['dataset']}: no board with leave-one-benchmark-out "
                               "predictions to plot")
    fig, axes = plt.subplots(1, len(boards), figsize=(5.5 * len(boards), 5), squeeze=False)
    for ax, m in zip(axes[0], boards):
        pts = m["lobo_predictions"]
        xs, ys = [p["slowdown"] for p in pts], [p["predicted"] for p in pts]
        ax.scatter(xs, ys)
        for p in pts:
            ax.annotate(f"{p['benchmark']}.{p['npb_class']}", (p["slowdown"], p["predicted"]),
                        fontsize=7)
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.5)
        ax.set_xlabel("measured slowdown")
        ax.set_ylabel("predicted, benchmark held out")
        ax.set_title(f"{m['board']}: LOBO R² {m['lobo_r2']:.2g}, MAPE {m['lobo_mape_pct']:.0f}%",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
