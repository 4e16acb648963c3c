"""Frontier aggregation over the points table: mean/std over seeds, text tables, cost comparison, plots.

Input is a points frame as `ResultsStore.read("points")` or `pandas.read_parquet("<store>/points")` gives it
(the latter returns `sweep` and `method` as categoricals). Accuracies are fractions in the frame and percent
in tables and plots.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

DENSE = "dense"

# (frontier column, points column) pairs averaged over seeds.
_MEANS = (
    ("sparsity", "sparsity"),
    ("test_accuracy_mean", "test_accuracy"),
    ("best_test_accuracy_mean", "best_test_accuracy"),
    ("standalone_seconds_mean", "standalone_seconds"),
    ("marginal_seconds_mean", "marginal_seconds"),
    ("search_seconds_mean", "search_seconds"),
    ("dense_test_accuracy_mean", "dense_test_accuracy"),
)
FRONTIER_COLUMNS = ["sweep", "method", "target_sparsity", "n", "sparsity", "test_accuracy_mean",
                    "test_accuracy_std", "best_test_accuracy_mean", "standalone_seconds_mean",
                    "marginal_seconds_mean", "search_seconds_mean", "dense_test_accuracy_mean"]
_NUMERIC = ["attempt", "target_sparsity", "sparsity", "test_accuracy", "best_test_accuracy",
            "standalone_seconds", "marginal_seconds", "search_seconds", "dense_test_accuracy"]


def finished(points: pd.DataFrame, all_levels: bool = True) -> pd.DataFrame:
    """The ok rows, one per stage (its latest ok attempt), with plain str/float columns.

    A stage that was run again after succeeding has two ok attempts; only the newer one describes the code
    that produced the result. A failed later attempt does not hide an earlier success.
    """
    df = points.copy()
    for col in ("sweep", "method"):
        # Categoricals (pandas.read_parquet on hive partitions) would make groupby emit every combination.
        df[col] = df[col].astype(str) if col in df else ""
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else math.nan
    df = df[df["status"].astype(str) == "ok"]
    if not all_levels:
        # Rows written before `requested` existed (or left empty) count as requested.
        df = df[df["requested"].astype("boolean").fillna(True).astype(bool)]
    df = df.sort_values("attempt", kind="stable")
    df = df.drop_duplicates(["sweep", "stage_key"], keep="last")
    return df.reset_index(drop=True)


def frontier(points: pd.DataFrame, all_levels: bool = False) -> pd.DataFrame:
    """One row per (sweep, method, target_sparsity): seed count, mean measured sparsity, accuracy mean and
    std (ddof=1, so NaN for a single seed), and mean costs in seconds. Dense baselines come first."""
    df = finished(points, all_levels=all_levels)
    if df.empty:
        return pd.DataFrame(columns=FRONTIER_COLUMNS)
    groups = df.groupby(["sweep", "method", "target_sparsity"], sort=False, dropna=False)
    out = groups.agg(n=("test_accuracy", "size"),
                     test_accuracy_std=("test_accuracy", lambda s: s.std(ddof=1)),
                     **{name: (col, "mean") for name, col in _MEANS}).reset_index()
    out["_not_dense"] = out["method"] != DENSE
    out = out.sort_values(["sweep", "_not_dense", "method", "target_sparsity", "sparsity"], kind="stable")
    return out[FRONTIER_COLUMNS].reset_index(drop=True)


def _percent(mean: float, std: float | None = None) -> str:
    if pd.isna(mean):
        return "—"
    text = f"{100 * mean:.1f}"
    if std is not None:
        text += " ± " + ("—" if pd.isna(std) else f"{100 * std:.1f}")
    return text


def _seconds(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.1f}"


def format_frontier(frame: pd.DataFrame, markdown: bool = False) -> str:
    """A fixed-width text table of a `frontier` frame, or a markdown table with `markdown=True`."""
    if frame.empty:
        return "no finished points"
    multi_sweep = frame["sweep"].astype(str).nunique() > 1
    header = (["sweep"] if multi_sweep else []) + [
        "method", "target", "sparsity", "n", "test acc %", "best acc %", "dense acc %",
        "search s", "marginal s", "standalone s"]
    rows = []
    for r in frame.itertuples(index=False):
        rows.append(([str(r.sweep)] if multi_sweep else []) + [
            str(r.method), f"{r.target_sparsity:.4f}", f"{r.sparsity:.4f}", str(int(r.n)),
            _percent(r.test_accuracy_mean, r.test_accuracy_std), _percent(r.best_test_accuracy_mean),
            _percent(r.dense_test_accuracy_mean), _seconds(r.search_seconds_mean),
            _seconds(r.marginal_seconds_mean), _seconds(r.standalone_seconds_mean)])
    # Markdown needs at least one '-' besides the alignment colon in every separator cell.
    widths = [max(3, *(len(row[i]) for row in [header, *rows])) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned so decimal points line up.
    text_cols = 2 if multi_sweep else 1

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if i < text_cols else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    if markdown:
        rule = "| " + " | ".join(("-" * (w - 1) + ":") if i >= text_cols else "-" * w
                                 for i, w in enumerate(widths)) + " |"
    else:
        rule = "  ".join("-" * w for w in widths)
    title = [] if multi_sweep or markdown else [f"sweep: {frame['sweep'].iloc[0]}"]
    return "\n".join(title + [line(header), rule] + [line(r) for r in rows])


def export_frontier(frame: pd.DataFrame, fmt: str) -> str:
    """A `frontier` frame as text: "table" or "markdown" (format_frontier), or its columns as "csv" or
    "json" (a list of records; accuracies as fractions, missing values empty in csv and null in json)."""
    if fmt in ("table", "markdown"):
        return format_frontier(frame, markdown=fmt == "markdown")
    plain = frame[FRONTIER_COLUMNS].copy() if not frame.empty else pd.DataFrame(columns=FRONTIER_COLUMNS)
    for col in ("sweep", "method"):
        plain[col] = plain[col].astype(str)
    if fmt == "csv":
        return plain.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        records = [{k: _json_value(v) for k, v in row.items()} for row in plain.to_dict(orient="records")]
        return json.dumps(records, indent=2)
    raise ValueError(f"unknown format {fmt!r}; known: table, markdown, csv, json")


def _json_value(v):
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, float)) or hasattr(v, "item"):
        v = v.item() if hasattr(v, "item") else v
        return None if isinstance(v, float) and math.isnan(v) else v
    return str(v)


def write_text(path: str | Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename, so a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cost_summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per (sweep, method): finished points, how many of them were requested, and total marginal seconds.

    Intermediate LTR levels are counted: the sweep paid for them. Stages that produce no point (warmup)
    are not in the points table and so not in these totals.
    """
    df = finished(points, all_levels=True)
    columns = ["sweep", "method", "points", "requested_points", "marginal_seconds"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    df["_requested"] = df["requested"].astype("boolean").fillna(True).astype(int)
    out = df.groupby(["sweep", "method"], sort=True).agg(
        points=("stage_key", "size"), requested_points=("_requested", "sum"),
        marginal_seconds=("marginal_seconds", "sum")).reset_index()
    return out[columns]


def _row(frame: pd.DataFrame, method: str, sparsity: float) -> pd.Series:
    methods = frame["method"].astype(str)
    if not (methods == method).any() and not frame.empty:
        from orchestrator.suggest import suggest

        raise KeyError(f"no method {method!r} in the frontier"
                       + suggest(method, methods.unique(), list_known=True))
    rows = frame[methods == method]
    if not rows.empty:
        gap = (rows["target_sparsity"].astype(float) - sparsity).abs()
        rows = rows[gap <= 1e-6]
    if rows.empty:
        have = sorted(frame.loc[frame["method"].astype(str) == method, "target_sparsity"].astype(float))
        raise KeyError(f"no finished {method!r} point at target sparsity {sparsity:g} "
                       f"(it has: {', '.join(f'{s:g}' for s in have) or 'none'})")
    if len(rows) > 1:
        raise ValueError(f"{method!r} at sparsity {sparsity:g} appears in several sweep(s) "
                         f"{sorted(rows['sweep'].astype(str))}; pass a frontier of one sweep")
    return rows.iloc[0]


def compare(frame: pd.DataFrame, method_a: str, method_b: str, sparsity: float) -> dict:
    """Accuracy and standalone cost of two methods at one target sparsity; cost_ratio = a / b."""
    a, b = _row(frame, method_a, sparsity), _row(frame, method_b, sparsity)
    cost_a, cost_b = float(a["standalone_seconds_mean"]), float(b["standalone_seconds_mean"])
    ratio = cost_a / cost_b if cost_b > 0 and not math.isnan(cost_a) else math.nan
    return {"target_sparsity": float(a["target_sparsity"]), "method_a": method_a, "method_b": method_b,
            "accuracy_a": float(a["test_accuracy_mean"]), "accuracy_b": float(b["test_accuracy_mean"]),
            "accuracy_std_a": float(a["test_accuracy_std"]), "accuracy_std_b": float(b["test_accuracy_std"]),
            "n_a": int(a["n"]), "n_b": int(b["n"]),
            "standalone_seconds_a": cost_a, "standalone_seconds_b": cost_b, "cost_ratio": ratio}


def plot_frontier(frame: pd.DataFrame, path: str | Path):
    """Write a two-panel PNG: accuracy vs fraction of weights remaining, and accuracy vs standalone cost.

    Returns the matplotlib Figure (for inspection; it is not shown anywhere)."""
    # Figure + Agg canvas directly: no pyplot, so no global backend switch and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    if frame.empty:
        raise ValueError("no finished points to plot")
    df = frame.copy()
    df["sweep"], df["method"] = df["sweep"].astype(str), df["method"].astype(str)
    sweeps = sorted(df["sweep"].unique())
    multi = len(sweeps) > 1

    fig = Figure(figsize=(14.5, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    palette = [f"C{i}" for i in range(10)]

    series = [(key, g.sort_values("sparsity")) for key, g in df.groupby(["sweep", "method"], sort=True)]
    for i, ((sweep, method), g) in enumerate(series):
        label = f"{sweep}/{method}" if multi else method
        color = palette[i % len(palette)]
        acc = 100 * g["test_accuracy_mean"].astype(float)
        std = 100 * g["test_accuracy_std"].astype(float).fillna(0.0)
        if method == DENSE:
            # Weighted by seed count so a dense row split over targets still averages over seeds.
            mean = 100 * (g["test_accuracy_mean"] * g["n"]).sum() / g["n"].sum()
            left.axhline(mean, color=color, linestyle="--", linewidth=1.2, label=f"{label} ({mean:.1f}%)")
        else:
            remaining = 1.0 - g["sparsity"].astype(float)
            left.plot(remaining, acc, marker="o", color=color, label=label)
            left.fill_between(remaining, acc - std, acc + std, color=color, alpha=0.2, linewidth=0)
        cost = g["standalone_seconds_mean"].astype(float)
        keep = cost > 0  # a log axis cannot show missing or zero cost
        if keep.any():
            right.errorbar(cost[keep], acc[keep], yerr=std[keep], marker="s" if method == DENSE else "o",
                           linestyle="none" if method == DENSE else "-", color=color, capsize=3, label=label)

    _density_axis(left.xaxis, left, requested_densities(df))
    left.set_xlabel("fraction of weights remaining (log)")
    left.set_ylabel("test accuracy (%)")
    left.set_title("accuracy vs density (mean ± std over seeds)")
    left.grid(True, which="both", alpha=0.3)
    if right.has_data():
        right.set_xscale("log")
        _plain_log_labels(right.xaxis, LogFormatter)
    # One legend for both panels, beside them: with many methods a legend inside covers the curves.
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", title="method")
    right.set_xlabel("standalone cost per point (seconds, log)")
    right.set_ylabel("test accuracy (%)")
    right.set_title("accuracy vs cost")
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle("sweep: " + ", ".join(sweeps))
    fig.savefig(str(path), dpi=110)
    return fig


def requested_densities(frame: pd.DataFrame) -> list[float]:
    """Fractions of weights remaining that the sweep asked for (1 - target sparsity), largest first."""
    targets = frame.loc[frame["method"].astype(str) != DENSE, "target_sparsity"].astype(float)
    return sorted({round(1.0 - t, 9) for t in targets if 0.0 < 1.0 - t <= 1.0}, reverse=True)


def percent_label(density: float) -> str:
    """50%, 1%, 51.2%, 0.738%: three significant digits, no trailing zeros."""
    return f"{100 * density:.3g}%"


def density_ticks(densities: list[float], min_gap: float = 0.12) -> list[float]:
    """The densities that get a label: from the largest down, each at least `min_gap` of the axis's log span
    from the previous one, and the smallest always, so labels never overlap or repeat."""
    if len(densities) <= 1:
        return list(densities)
    ordered = sorted(densities, reverse=True)
    span = math.log10(ordered[0]) - math.log10(ordered[-1])
    gap = min_gap * span
    kept, labels = [ordered[0]], {percent_label(ordered[0])}
    for d in ordered[1:]:
        if math.log10(kept[-1]) - math.log10(d) >= gap and percent_label(d) not in labels:
            kept.append(d)
            labels.add(percent_label(d))
    smallest = ordered[-1]
    if kept[-1] != smallest and percent_label(smallest) != percent_label(kept[-1]):
        if len(kept) == 1:
            kept.append(smallest)
        else:
            kept[-1] = smallest  # farther from the one before than the label it replaces
    return kept


def _density_axis(axis, ax, densities: list[float]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if not densities:
        return
    ax.set_xscale("log")
    labeled = density_ticks(densities)
    axis.set_major_locator(FixedLocator(labeled))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: percent_label(x)))
    axis.set_minor_locator(FixedLocator([d for d in densities if d not in labeled]))
    axis.set_minor_formatter(NullFormatter())
    # Sparser to the right, as in the pruning literature; a margin so end markers are not cut.
    ax.set_xlim(min(1.0, densities[0] * 1.3), densities[-1] / 1.3)


def _plain_log_labels(axis, formatter) -> None:
    # "0.3" and "20" read better than 3x10^-1; the formatter still thins minor labels on wide ranges.
    axis.set_major_formatter(formatter(labelOnlyBase=False))
    axis.set_minor_formatter(formatter(labelOnlyBase=False))
