"""Frontier aggregation over the points table: mean/std over seeds, text tables, cost comparison, plots.

Input is a points frame as `ResultsStore.read("points")` or `pandas.read_parquet("<store>/points")` gives it
(the latter returns `sweep` and `method` as categoricals). Accuracies are fractions in the frame and percent
in tables and plots.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from orchestrator.analysis.cost_units import COST_COLUMNS, DEFAULT_COST, WORK_PARTS, check_cost
from orchestrator.analysis.text_tables import percent, records, render

DENSE = "dense"
ACCURACY = "selected_test_accuracy"  # what tables, plots and comparisons report: chosen by validation, never by test
# Table headers of each unit's cost columns; seconds keep the headers they always had.
_COST_HEADERS = {"seconds": ("search s", "marginal s", "standalone s"),
                 "epochs": ("search ep", "marginal ep", "standalone ep"),
                 "flops": ("search FLOPs", "marginal FLOPs", "standalone FLOPs")}

# (frontier column, points column) pairs averaged over seeds.
_MEANS = (
    ("sparsity", "sparsity"),
    ("selected_test_accuracy_mean", ACCURACY),
    ("test_accuracy_mean", "test_accuracy"),
    ("val_accuracy_mean", "val_accuracy"),
    ("standalone_seconds_mean", "standalone_seconds"),
    ("marginal_seconds_mean", "marginal_seconds"),
    ("search_seconds_mean", "search_seconds"),
    ("dense_test_accuracy_mean", "dense_test_accuracy"),
)
FRONTIER_COLUMNS = ["sweep", "method", "target_sparsity", "n", "sparsity", "selected_test_accuracy_mean",
                    "selected_test_accuracy_std", "selected_test_accuracy_ci_low", "selected_test_accuracy_ci_high",
                    "test_accuracy_mean", "val_accuracy_mean", "standalone_seconds_mean", "marginal_seconds_mean",
                    "search_seconds_mean", "dense_test_accuracy_mean"]
# The accuracy columns: fractions here, percent (named ..._pct) in csv and json as in the tables.
FRONTIER_PERCENT = ["selected_test_accuracy_mean", "selected_test_accuracy_std", "selected_test_accuracy_ci_low",
                    "selected_test_accuracy_ci_high", "test_accuracy_mean", "val_accuracy_mean",
                    "dense_test_accuracy_mean"]
_NUMERIC = ["attempt", "target_sparsity", "sparsity", "test_accuracy", "val_accuracy", "selected_epoch", ACCURACY,
            "standalone_seconds", "marginal_seconds", "search_seconds", "dense_test_accuracy",
            "train_epochs", "search_epochs", "standalone_epochs", "train_flops", "search_flops", "standalone_flops"]


def frontier_columns(cost: str = DEFAULT_COST) -> list[str]:
    """The frontier's columns with costs in `cost`; a work unit's table keeps the standalone seconds beside."""
    if check_cost(cost) == "seconds":
        return list(FRONTIER_COLUMNS)
    names = COST_COLUMNS[cost]
    return FRONTIER_COLUMNS[:-4] + [f"{names[k]}_mean" for k in ("standalone", "marginal", "search")] + [
        "standalone_seconds_mean", "dense_test_accuracy_mean"]


def finished(points: pd.DataFrame, all_levels: bool = True) -> pd.DataFrame:
    """The ok rows of the current plans, one per stage (its latest ok attempt), with plain str/float columns.

    A stage that was run again after succeeding has two ok attempts; only the newer one describes the code
    that produced the result. A failed later attempt does not hide an earlier success. Rows marked
    `superseded` (their stage is no longer in the sweep's plan: see orchestrator.store.plan_manifests) are left out.
    """
    df = points.copy()
    for col in ("sweep", "method"):
        # Categoricals (pandas.read_parquet on hive partitions) would make groupby emit every combination.
        df[col] = df[col].astype(str) if col in df else ""
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else math.nan
    for unit, (train, search) in WORK_PARTS.items():
        df[f"marginal_{unit}"] = df[train] + df[search]  # null where either was not counted
    df = df[df["status"].astype(str) == "ok"]
    if "superseded" in df:
        df = df[~df["superseded"].astype("boolean").fillna(False).astype(bool)]
    if not all_levels:
        # Rows written before `requested` existed (or left empty) count as requested.
        df = df[df["requested"].astype("boolean").fillna(True).astype(bool)]
    df = df.sort_values("attempt", kind="stable")
    df = df.drop_duplicates(["sweep", "stage_key"], keep="last")
    return df.reset_index(drop=True)


FAILED = ("failed", "diverged", "skipped")


def never_finished(points: pd.DataFrame, all_levels: bool = True) -> pd.DataFrame:
    """The stages of the current plans that have no ok attempt and whose latest attempt failed, diverged or
    was skipped (a parent failed): one row each, its latest attempt; with `finished`'s columns and filters.
    A comparison counts these seeds instead of losing them (orchestrator/analysis/compare.py)."""
    df = points.copy()
    for col in ("sweep", "method"):
        df[col] = df[col].astype(str) if col in df else ""
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else math.nan
    if "superseded" in df:
        df = df[~df["superseded"].astype("boolean").fillna(False).astype(bool)]
    if not all_levels:
        df = df[df["requested"].astype("boolean").fillna(True).astype(bool)]
    ok = set(zip(df.loc[df["status"].astype(str) == "ok", "sweep"], df.loc[df["status"].astype(str) == "ok",
                                                                          "stage_key"]))
    df = df[df["status"].astype(str).isin(FAILED)]
    df = df[pd.Series([key not in ok for key in zip(df["sweep"], df["stage_key"])], index=df.index, dtype=bool)]
    df = df.sort_values("attempt", kind="stable").drop_duplicates(["sweep", "stage_key"], keep="last")
    return df.reset_index(drop=True)


def _mean_of_all(values: pd.Series) -> float:
    """The mean, or NaN when any value is missing: a mean over the seeds that happen to have a count would
    pass for the mean over n (rows stored before the counts existed read as null, never as 0)."""
    return float(values.mean()) if len(values) and values.notna().all() else math.nan


def frontier(points: pd.DataFrame, all_levels: bool = False, cost: str = DEFAULT_COST) -> pd.DataFrame:
    """One row per (sweep, method, target_sparsity): seed count, mean measured sparsity, the validation-selected
    test accuracy's mean, std (ddof=1) and 95 % t interval over seeds (clipped to [0, 1]; NaN for a single seed),
    the final test and validation accuracy means, and mean costs in `cost` (seconds, epochs or flops; a work
    unit's means are NaN where a seed has no count, and the standalone seconds come beside them). Dense
    baselines come first."""
    from orchestrator.analysis.stats import mean_interval

    columns = frontier_columns(cost)
    df = finished(points, all_levels=all_levels)
    if df.empty:
        return pd.DataFrame(columns=columns)
    groups = df.groupby(["sweep", "method", "target_sparsity"], sort=False, dropna=False)
    work = {f"{col}_mean": (col, _mean_of_all) for col in COST_COLUMNS[cost].values()} if cost != "seconds" else {}
    out = groups.agg(n=(ACCURACY, "count"), selected_test_accuracy_std=(ACCURACY, lambda s: s.std(ddof=1)),
                     **{name: (col, "mean") for name, col in _MEANS}, **work).reset_index()
    bounds = groups[ACCURACY].apply(lambda s: mean_interval(s.to_numpy(dtype=float))).reset_index(drop=True)
    # An accuracy lies in [0, 1]: clipping the t interval there never lowers its coverage.
    out["selected_test_accuracy_ci_low"] = [max(0.0, b[0]) if b[0] == b[0] else b[0] for b in bounds]
    out["selected_test_accuracy_ci_high"] = [min(1.0, b[1]) if b[1] == b[1] else b[1] for b in bounds]
    out["_not_dense"] = out["method"] != DENSE
    out = out.sort_values(["sweep", "_not_dense", "method", "target_sparsity", "sparsity"], kind="stable")
    return out[columns].reset_index(drop=True)


def _mean_std(mean: float, std: float) -> str:
    return f"{percent(mean)} ± {percent(std)}" if not pd.isna(mean) else "—"


def _ci(low: float, high: float) -> str:
    return "—" if pd.isna(low) or pd.isna(high) else f"[{percent(low)}, {percent(high)}]"


def _seconds(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.1f}"


def cost_text(value: float, cost: str) -> str:
    """A cost as tables show it: seconds to 0.1, epochs to 0.01, FLOPs to 4 significant digits; — if missing."""
    if pd.isna(value):
        return "—"
    return {"seconds": f"{value:.1f}", "epochs": f"{value:.2f}", "flops": f"{value:.4g}"}[check_cost(cost)]


FRONTIER_HEADER = ["method", "target", "sparsity", "n", "acc %", "95 % CI", "final acc %", "val acc %",
                   "dense acc %", "search s", "marginal s", "standalone s"]


def frontier_header(cost: str = DEFAULT_COST) -> list[str]:
    """The frontier table's header with costs in `cost` (and, for a work unit, the standalone seconds last)."""
    if check_cost(cost) == "seconds":
        return list(FRONTIER_HEADER)
    return FRONTIER_HEADER[:-3] + list(_COST_HEADERS[cost]) + ["standalone s"]


def frontier_cells(r, cost: str = DEFAULT_COST) -> list[str]:
    """One frontier row as the table shows it (also the numbers `report` prints, so both always agree)."""
    head = [str(r.method), f"{r.target_sparsity:.4f}", f"{r.sparsity:.4f}", str(int(r.n)),
            _mean_std(r.selected_test_accuracy_mean, r.selected_test_accuracy_std),
            _ci(r.selected_test_accuracy_ci_low, r.selected_test_accuracy_ci_high), percent(r.test_accuracy_mean),
            percent(r.val_accuracy_mean), percent(r.dense_test_accuracy_mean)]
    names = COST_COLUMNS[check_cost(cost)]
    costs = [cost_text(getattr(r, f"{names[k]}_mean"), cost) for k in ("search", "marginal", "standalone")]
    return head + costs + ([] if cost == "seconds" else [_seconds(r.standalone_seconds_mean)])


def format_frontier(frame: pd.DataFrame, markdown: bool = False, cost: str = DEFAULT_COST) -> str:
    """A fixed-width text table of a `frontier` frame, or a markdown table with `markdown=True`.

    `acc %` is the test accuracy at the evaluation with the best validation accuracy, mean ± std over seeds,
    then its 95 % t interval; `final acc %` the test accuracy at the end of training; `val acc %` the best
    validation accuracy."""
    if frame.empty:
        return "no finished points"
    multi_sweep = frame["sweep"].astype(str).nunique() > 1
    header = (["sweep"] if multi_sweep else []) + frontier_header(cost)
    rows = [([str(r.sweep)] if multi_sweep else []) + frontier_cells(r, cost) for r in frame.itertuples(index=False)]
    title = [] if multi_sweep else [f"sweep: {frame['sweep'].iloc[0]}"]
    return render(header, rows, left={0, 1} if multi_sweep else {0}, markdown=markdown, title=title)


def export_frontier(frame: pd.DataFrame, fmt: str, cost: str = DEFAULT_COST) -> str:
    """A `frontier` frame (made with the same `cost`) as text: "table" or "markdown" (format_frontier), or its
    columns as "csv" or "json" (a list of records; accuracies in percent as in the table, their names ending in
    `_pct`; missing values empty in csv and null in json)."""
    if fmt in ("table", "markdown"):
        return format_frontier(frame, markdown=fmt == "markdown", cost=cost)
    return records(frame, frontier_columns(cost), fmt, percent=FRONTIER_PERCENT)


def write_text(path: str | Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename, so a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600 whatever the umask; a report is meant to be read as an ordinary file is.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


PANELS = ("density", "cost")


_AXIS_UNITS = {"seconds": "seconds", "epochs": "training and search epochs", "flops": "FLOPs"}


def plot_frontier(frame: pd.DataFrame, path: str | Path, panels: tuple[str, ...] = PANELS, cost: str = DEFAULT_COST):
    """Write a PNG of the frontier (a `frontier` frame made with the same `cost`): accuracy vs fraction of weights
    remaining ("density"), and accuracy vs standalone cost in `cost` on a log axis with each method's points
    joined in order of sparsity, the cost-accuracy frontier ("cost"). Accuracies are the validation-selected test accuracy, mean over seeds, with its 95 %
    interval as a band (density) or bars (cost).

    Returns the matplotlib Figure (for inspection; it is not shown anywhere)."""
    # Figure + Agg canvas directly: no pyplot, so no global backend switch and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if frame.empty:
        raise ValueError("no finished points to plot")
    check_cost(cost)
    unknown = set(panels) - set(PANELS)
    if unknown or not panels:
        raise ValueError(f"unknown panel(s) {sorted(unknown)}; known: {', '.join(PANELS)}")
    df = frame.copy()
    df["sweep"], df["method"] = df["sweep"].astype(str), df["method"].astype(str)
    sweeps = sorted(df["sweep"].unique())
    fig = Figure(figsize=(7.5 * len(panels) + 3.5, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0]))
    series = [(key, g.sort_values("sparsity")) for key, g in df.groupby(["sweep", "method"], sort=True)]
    for i, ((sweep, method), g) in enumerate(series):
        style = {"color": _color(i), "label": f"{sweep}/{method}" if len(sweeps) > 1 else method}
        if "density" in axes:
            _draw_density(axes["density"], method, g, style)
        if "cost" in axes:
            _draw_cost(axes["cost"], method, g, style, f"{COST_COLUMNS[cost]['standalone']}_mean")
    if "density" in axes:
        ax = axes["density"]
        _density_axis(ax.xaxis, ax, requested_densities(df))
        ax.set(xlabel="fraction of weights remaining (log)", ylabel="test accuracy (%), validation-selected",
               title="accuracy vs density (mean, 95 % CI over seeds)")
        ax.grid(True, which="both", alpha=0.3)
    if "cost" in axes:
        from matplotlib.ticker import LogFormatter

        ax = axes["cost"]
        if ax.has_data():
            ax.set_xscale("log")
            _plain_log_labels(ax.xaxis, LogFormatter)
        ax.set(xlabel=f"standalone cost per point ({_AXIS_UNITS[cost]}, log)",
               ylabel="test accuracy (%), validation-selected",
               title="cost-accuracy frontier (points joined by sparsity)")
        ax.grid(True, which="both", alpha=0.3)
    # One legend for every panel, beside them: with many methods a legend inside covers the curves.
    handles, labels = next(iter(axes.values())).get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", title="method")
    fig.suptitle("sweep: " + ", ".join(sweeps))
    fig.savefig(str(path), dpi=110)
    return fig


def _color(i: int):
    from matplotlib import colormaps

    # 20 distinct colours: a sweep of every method has more than the default cycle's 10. tab20's even entries
    # are that cycle; its odd ones, the light twins, come after.
    i %= 20
    return colormaps["tab20"](2 * i if i < 10 else 2 * (i - 10) + 1)


def _band(g: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    acc = 100 * g["selected_test_accuracy_mean"].astype(float)
    low = 100 * g["selected_test_accuracy_ci_low"].astype(float)
    high = 100 * g["selected_test_accuracy_ci_high"].astype(float)
    return acc, low.fillna(acc), high.fillna(acc)  # a single seed has no interval: a band of zero width


def _draw_density(ax, method: str, g: pd.DataFrame, style: dict) -> None:
    acc, low, high = _band(g)
    if method == DENSE:
        # Weighted by seed count so a dense row split over targets still averages over seeds.
        mean = 100 * (g["selected_test_accuracy_mean"] * g["n"]).sum() / g["n"].sum()
        ax.axhline(mean, linestyle="--", linewidth=1.2, color=style["color"], label=f"{style['label']} ({mean:.1f}%)")
        return
    remaining = 1.0 - g["sparsity"].astype(float)
    ax.plot(remaining, acc, marker="o", **style)
    ax.fill_between(remaining, low, high, color=style["color"], alpha=0.2, linewidth=0)


def _draw_cost(ax, method: str, g: pd.DataFrame, style: dict, column: str) -> None:
    acc, low, high = _band(g)
    cost = g[column].astype(float)
    keep = cost > 0  # a log axis cannot show missing or zero cost
    if keep.any():
        ax.errorbar(cost[keep], acc[keep], yerr=[(acc - low)[keep], (high - acc)[keep]],
                    marker="s" if method == DENSE else "o", linestyle="none" if method == DENSE else "-",
                    capsize=3, **style)


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


MACHINE_KEYS = ("host", "cpu_model", "logical_cores", "gpu_model", "torch_threads")
MACHINE_HEADER = ["host", "CPU", "logical cores", "GPU", "torch threads", "stages", "load average"]


def machines(stages: pd.DataFrame) -> pd.DataFrame:
    """One row per machine that stage attempts ran on (MACHINE_KEYS, from the commit log's columns): how many
    attempts, and the lowest and highest 1-minute load average seen at their starts and ends. Attempts that
    recorded no machine (stored before it was recorded) are one row whose CPU model is null."""
    columns = [*MACHINE_KEYS, "stages", "load_low", "load_high"]
    df = stages.copy()
    for col in (*MACHINE_KEYS, "load_start", "load_end"):
        if col not in df:
            df[col] = None
    if df.empty:
        return pd.DataFrame(columns=columns)
    df["_load_low"] = pd.concat([pd.to_numeric(df["load_start"]), pd.to_numeric(df["load_end"])], axis=1).min(axis=1)
    df["_load_high"] = pd.concat([pd.to_numeric(df["load_start"]), pd.to_numeric(df["load_end"])], axis=1).max(axis=1)
    keys = list(MACHINE_KEYS)
    out = df.groupby(keys, dropna=False, sort=True).agg(stages=("host", "size"), load_low=("_load_low", "min"),
                                                        load_high=("_load_high", "max")).reset_index()
    return out[columns]


def machine_cells(frame: pd.DataFrame) -> list[list[str]]:
    """The rows of a `machines` frame as tables show them (MACHINE_HEADER)."""
    def text(value) -> str:
        return "—" if value is None or pd.isna(value) else str(value)

    rows = []
    for r in frame.itertuples(index=False):
        if pd.isna(r.cpu_model):
            load = "not recorded"
        elif pd.isna(r.load_low):
            load = "—"
        else:
            load = f"{r.load_low:.2f}–{r.load_high:.2f}"
        cores = text(r.logical_cores if pd.isna(r.logical_cores) else int(r.logical_cores))
        threads = text(r.torch_threads if pd.isna(r.torch_threads) else int(r.torch_threads))
        rows.append([text(r.host), text(r.cpu_model) if pd.notna(r.cpu_model) else "not recorded", cores,
                     "none" if pd.notna(r.cpu_model) and pd.isna(r.gpu_model) else text(r.gpu_model), threads,
                     str(int(r.stages)), load])
    return rows
