"""Per-epoch learning curves over seeds: the tidy table behind `orchestrate curves`, and its panel grid PNG.

The curves are those of the stage attempts whose points the frontier reports (`frontier.finished`: the latest ok
attempt of each stage of the current plan), joined on (sweep, stage_key, attempt), so a curve and a frontier
row always describe the same runs; the method and target sparsity come from the point row. Per (method,
target sparsity, phase, epoch, metric): the seed count, the mean and the 95 % t interval over seeds (NaN for a
single seed; clipped to [0, 1] for accuracies like the frontier's, at 0 for losses). Only epochs with an
evaluation carry validation and test numbers (`training.eval_every`).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from orchestrator.analysis.frontier import DENSE, finished, percent_label

# The last two are a CTS search's (phase "search"): its objective and expected kept fraction Σσ(s)/d.
METRICS = ("val_accuracy", "test_accuracy", "val_loss", "test_loss", "train_loss", "objective",
           "expected_kept_fraction")
ACCURACIES = ("val_accuracy", "test_accuracy")
PLOTTED = ("val_accuracy", "test_accuracy", "val_loss", "test_loss")  # the PNG's rows, top to bottom
CURVE_COLUMNS = ["sweep", "method", "target_sparsity", "phase", "epoch", "metric", "n", "mean", "low", "high"]
MAX_COLUMNS = 4  # sparsities shown side by side without --sparsity: beyond this the panels get unreadable
_TITLES = {"val_accuracy": "validation accuracy %", "test_accuracy": "test accuracy %",
           "val_loss": "validation loss", "test_loss": "test loss", "train_loss": "training loss"}
_SAME = 1e-9  # target sparsities are equal within this (they come from the same float arithmetic)


class CurveError(ValueError):
    """Nothing to show, or a filter that selects nothing; the message is one line naming the option."""


def curve_rows(points: pd.DataFrame, curves: pd.DataFrame, methods=(), sparsities=(),
               all_levels: bool = False) -> pd.DataFrame:
    """The curve rows (one per stage, phase and epoch) of the frontier's stage attempts, each with the point's
    method, target sparsity and seed; with `methods` or `sparsities`, only those (and dense training). Raises
    CurveError naming a method or sparsity the sweep's points do not have."""
    from orchestrator.spec.suggest import suggest

    chosen = finished(points, all_levels=all_levels)
    if chosen.empty:
        raise CurveError("no finished points")
    chosen["target_sparsity"] = chosen["target_sparsity"].fillna(0.0)
    known = sorted(set(chosen["method"]))
    for m in methods:
        if m not in known:
            raise CurveError(f"--method {m}: no finished points of it{suggest(m, known, list_known=True)}")
    if methods:  # dense training stays: it is every panel's reference
        chosen = chosen[chosen["method"].isin(methods) | (chosen["method"] == DENSE)]
    targets = sorted(set(chosen.loc[chosen["method"] != DENSE, "target_sparsity"].astype(float)))
    for s in sparsities:
        if not any(abs(s - t) <= _SAME for t in targets):
            have = ", ".join(f"{t:g}" for t in targets) or "none"
            raise CurveError(f"--sparsity {s:g}: no finished points at this target sparsity (have {have})")
    if sparsities:
        keep = chosen["target_sparsity"].apply(lambda t: any(abs(s - t) <= _SAME for s in sparsities))
        chosen = chosen[keep | (chosen["method"] == DENSE)]
    if curves.empty:
        raise CurveError("no curves stored for these points")
    c = curves.copy()
    c["sweep"] = c["sweep"].astype(str)
    c["attempt"] = pd.to_numeric(c["attempt"])
    for col in ("epoch", "iteration", *METRICS):
        c[col] = pd.to_numeric(c[col], errors="coerce") if col in c else math.nan
    ident = chosen[["sweep", "stage_key", "attempt", "method", "target_sparsity", "seed"]].copy()
    ident["attempt"] = pd.to_numeric(ident["attempt"])
    rows = c[["sweep", "stage_key", "attempt", "phase", "epoch", "iteration", *METRICS]].merge(
        ident, on=["sweep", "stage_key", "attempt"], how="inner")
    if rows.empty:
        raise CurveError("no curves stored for these points")
    return rows


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (sweep, method, target sparsity, phase, epoch, metric): n, mean and 95 % t interval over seeds."""
    from orchestrator.analysis.stats import t_bounds

    long = rows.melt(id_vars=["sweep", "method", "target_sparsity", "phase", "epoch", "seed"],
                     value_vars=list(METRICS), var_name="metric", value_name="value").dropna(subset=["value"])
    if long.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    keys = ["sweep", "method", "target_sparsity", "phase", "epoch", "metric"]
    out = long.groupby(keys, sort=False).agg(n=("value", "count"), mean=("value", "mean"),
                                             std=("value", lambda v: v.std(ddof=1))).reset_index()
    low, high = t_bounds(out["mean"], out["std"], out["n"])
    out["low"], out["high"] = low, high
    single = out["n"] < 2
    out.loc[single, ["low", "high"]] = math.nan
    acc = out["metric"].isin(ACCURACIES)
    out.loc[acc, "low"] = out.loc[acc, "low"].clip(lower=0.0)
    out.loc[acc, "high"] = out.loc[acc, "high"].clip(upper=1.0)
    loss = out["metric"].str.endswith("_loss")  # never negative either (a search objective may be)
    out.loc[loss, "low"] = out.loc[loss, "low"].clip(lower=0.0)
    out["_not_dense"] = out["method"] != DENSE
    out["_metric"] = out["metric"].map({m: i for i, m in enumerate(METRICS)})
    out = out.sort_values(["sweep", "_not_dense", "method", "target_sparsity", "phase", "_metric", "epoch"],
                          kind="stable")
    out["n"] = out["n"].astype(int)
    return out[CURVE_COLUMNS].reset_index(drop=True)


def export_curves(table: pd.DataFrame, fmt: str) -> str:
    """The tidy table as csv or json, accuracies in percent like every table (metric names `..._pct`)."""
    from orchestrator.analysis.text_tables import records

    out = table.copy()
    acc = out["metric"].isin(ACCURACIES)
    out.loc[acc, ["mean", "low", "high"]] = out.loc[acc, ["mean", "low", "high"]] * 100.0
    out["metric"] = out["metric"].where(~acc, out["metric"] + "_pct")
    return records(out, CURVE_COLUMNS, fmt)


def shown_sparsities(table: pd.DataFrame, limit: int = MAX_COLUMNS) -> list[float]:
    """The target sparsities that get a column: all of them up to `limit`, else `limit` spread evenly over
    the sorted list, its first and last included."""
    targets = sorted(set(table.loc[table["method"] != DENSE, "target_sparsity"].astype(float)))
    if len(targets) <= limit:
        return targets
    picks = sorted({round(i * (len(targets) - 1) / (limit - 1)) for i in range(limit)})
    return [targets[i] for i in picks]


def plot_curves(table: pd.DataFrame, path: str | Path, sparsities: list[float] | None = None,
                metrics=PLOTTED):
    """Write a PNG grid of the training phase: one row per metric, one column per target sparsity, one line
    per method (the mean over seeds) with its 95 % interval as a band; dense training, when present, in every
    panel as a dashed reference. Returns the matplotlib Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = table[table["phase"] == "train"]
    columns = shown_sparsities(train) if sparsities is None else sorted(sparsities)
    metrics = [m for m in metrics if (train["metric"] == m).any()]
    if train.empty or not metrics:
        raise CurveError("no training curves with evaluations to plot")
    columns = columns or [None]  # only dense training: one column
    methods = [m for m in dict.fromkeys(train["method"]) if m != DENSE]
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    fig = Figure(figsize=(3.4 * len(columns) + 1.8, 2.5 * len(metrics) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(metrics), len(columns), squeeze=False, sharex=True, sharey="row")
    handles = {}
    for i, metric in enumerate(metrics):
        rows = train[train["metric"] == metric]
        scale = 100.0 if metric in ACCURACIES else 1.0
        for j, target in enumerate(columns):
            ax = axes[i][j]
            here = rows["method"] == DENSE  # the reference, in every panel
            if target is not None:
                here |= (rows["target_sparsity"].astype(float) - target).abs() <= _SAME
            for method, g in rows[here].groupby("method", sort=False):
                g = g.sort_values("epoch")
                style = ({"color": "black", "linestyle": "--", "linewidth": 1.0} if method == DENSE
                         else {"color": colors[method], "linewidth": 1.6})
                (line,) = ax.plot(g["epoch"], scale * g["mean"], marker="." if len(g) < 30 else None, **style)
                ax.fill_between(g["epoch"], scale * g["low"], scale * g["high"], color=style["color"],
                                alpha=0.08 if method == DENSE else 0.18, linewidth=0)
                handles.setdefault(method, line)
            if i == 0:
                ax.set_title("dense only" if target is None else
                             f"sparsity {target:g} ({percent_label(1.0 - target)} remaining)", fontsize=10)
            if j == 0:
                ax.set_ylabel(_TITLES[metric])
            if i == len(metrics) - 1:
                ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
    order = ([DENSE] if DENSE in handles else []) + [m for m in methods if m in handles]
    fig.legend([handles[m] for m in order], order, loc="outside right upper", fontsize=9,
               title="mean over seeds,\nband: 95 % interval", title_fontsize=8)
    fig.savefig(path, format="png", dpi=110)
    return fig
