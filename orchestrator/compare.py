"""Paired comparison of two methods of a sweep, target sparsity by target sparsity, as a frame and as text.

Every method of a seed shares the initial weights, rewind weights and data order, so the seeds of A and B
are paired: the statistics (orchestrator.stats.paired_difference) work on the per-seed differences B - A.
A seed only one side has at a sparsity cannot be paired; it is left out and counted (unpaired_a,
unpaired_b). Pairs are formed within a sweep: two sweeps may use the same seed numbers for different
settings.

The cost column is the paired ratio of standalone seconds, B / A, summarised as the geometric mean of the
per-seed ratios, exp(mean(log(b_i / a_i))), with a t interval on the log scale. Chosen over the mean of the
ratios because it is symmetric (comparing B with A gives exactly the reciprocal of comparing A with B, which
the arithmetic mean of ratios does not), and over the ratio of the means because it keeps the pairing (a
seed that is slow for both methods does not weigh more) and so has an interval. It is taken over the same
seeds as the accuracy difference, so that "B is better at x-times the cost" speaks of one set of runs; of
those, seeds with a missing or non-positive cost are left out of it (cost_pairs counts the rest).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from orchestrator.report import DENSE, finished
from orchestrator.stats import A_BETTER, B_BETTER, PairedResult, mean_interval, paired_difference
from orchestrator.text_tables import records, render

DEFAULT_METRIC = "selected_test_accuracy"

_RESULT_FIELDS = [f.name for f in dataclasses.fields(PairedResult)]
COMPARE_COLUMNS = (["sweep", "method_a", "method_b", "target_sparsity", "metric", "unpaired_a", "unpaired_b",
                    "mean_a", "mean_b"]
                   + _RESULT_FIELDS
                   + ["cost_ratio", "cost_ratio_low", "cost_ratio_high", "cost_pairs"])
# Accuracies and their differences: fractions here, percent (named ..._pct) in csv and json as in the tables.
COMPARE_PERCENT = ["mean_a", "mean_b", "mean_diff", "sd_diff", "ci_low", "ci_high"]
_REQUIRED = ("status", "stage_key", "method", "target_sparsity", "seed")
_TARGET_DIGITS = 9  # targets equal to 9 decimals are the same requested sparsity


class CompareError(ValueError):
    """Bad input for a comparison; the message is one line, fit for the CLI to print."""


def compare_methods(points: pd.DataFrame, a: str, b: str, metric: str = DEFAULT_METRIC, alpha: float = 0.05,
                    *, all_levels: bool = False) -> pd.DataFrame:
    """One row per (sweep, target sparsity) where methods `a` and `b` both have results on shared seeds:
    COMPARE_COLUMNS, with mean_a/mean_b the means of `metric` over the paired seeds (so mean_b - mean_a
    is mean_diff), the PairedResult fields, and the cost ratio B / A.

    `points` may be raw (it goes through report.finished, which keeps each stage's latest ok attempt);
    `all_levels=False` leaves out intermediate LTR levels, as the frontier does. Raises CompareError.
    """
    df = _prepared(points, metric, all_levels, alpha)
    return _compare(df, str(a), str(b), metric, alpha)


def compare_all(points: pd.DataFrame, reference: str, metric: str = DEFAULT_METRIC, alpha: float = 0.05,
                *, all_levels: bool = False) -> pd.DataFrame:
    """Every method other than `reference` and the dense baseline, each as B against `reference` as A, in
    one frame. A method that shares no seed and sparsity with the reference is left out of the rows and listed
    in `frame.attrs["skipped"]` (method -> reason); CompareError when no method can be compared."""
    df = _prepared(points, metric, all_levels, alpha)
    reference = str(reference)
    _check_method(df, reference)
    others = [m for m in sorted(df["method"].unique()) if m not in (reference, DENSE)]
    if not others:
        raise CompareError(f"no method besides {reference!r} and {DENSE!r} to compare with {reference!r}")
    frames, skipped = [], {}
    for method in others:
        try:
            frames.append(_compare(df, reference, method, metric, alpha))
        except CompareError as err:
            skipped[method] = str(err)
    if not frames:
        raise CompareError(f"no method can be compared with {reference!r}: " + "; ".join(skipped.values()))
    out = pd.concat(frames, ignore_index=True)
    out.attrs["skipped"] = skipped
    return out


def _prepared(points: pd.DataFrame, metric: str, all_levels: bool, alpha: float) -> pd.DataFrame:
    if not 0.0 < alpha < 1.0:
        raise CompareError(f"alpha must be between 0 and 1, got {alpha!r}")
    missing = [c for c in _REQUIRED if c not in points.columns]
    if missing:
        raise CompareError(f"the points have no column(s) {', '.join(missing)}")
    if metric not in points.columns:
        raise CompareError(f"no metric column {metric!r} in the points; "
                           f"accuracy columns with values: {_accuracy_columns(points)}")
    if "requested" not in points.columns:
        points = points.assign(requested=True)  # rows written before `requested` existed count as requested
    df = finished(points, all_levels=all_levels)
    if df.empty:
        raise CompareError("no finished points to compare")
    df[metric] = pd.to_numeric(df[metric], errors="coerce")
    if df[metric].isna().all():
        raise CompareError(f"metric column {metric!r} has no values in the finished points; "
                           f"accuracy columns with values: {_accuracy_columns(df)}")
    df["_target"] = df["target_sparsity"].round(_TARGET_DIGITS)
    return df


def _accuracy_columns(df: pd.DataFrame) -> str:
    names = [c for c in df.columns if str(c).endswith("accuracy")
             and pd.to_numeric(df[c], errors="coerce").notna().any()]
    return ", ".join(names) or "none"


def _check_method(df: pd.DataFrame, method: str) -> None:
    methods = df["method"].unique()
    if method not in methods:
        from orchestrator.suggest import suggest

        raise CompareError(f"no method {method!r} in the finished points"
                           + suggest(method, sorted(methods), list_known=True))


def _compare(df: pd.DataFrame, a: str, b: str, metric: str, alpha: float) -> pd.DataFrame:
    if a == b:
        raise CompareError(f"compare two different methods, got {a!r} twice")
    _check_method(df, a)
    _check_method(df, b)
    for method in (a, b):
        if df.loc[df["method"] == method, metric].isna().all():
            raise CompareError(f"metric column {metric!r} has no values for method {method!r}; "
                               f"accuracy columns with values: {_accuracy_columns(df[df['method'] == method])}")
    rows = []
    both = df[df["method"].isin((a, b))]
    for (sweep, target), group in both.groupby(["sweep", "_target"], sort=True):
        side_a, side_b = _by_seed(group, a, sweep, target), _by_seed(group, b, sweep, target)
        shared = side_a.index.intersection(side_b.index).sort_values()
        if side_a.empty or side_b.empty or shared.empty:
            continue
        pa, pb = side_a.loc[shared], side_b.loc[shared]
        result = paired_difference(pa[metric].to_numpy(), pb[metric].to_numpy(), alpha=alpha)
        paired = pa[metric].notna().to_numpy() & pb[metric].notna().to_numpy()
        cost, cost_low, cost_high, cost_pairs = _cost_ratio(pa["standalone_seconds"][paired],
                                                            pb["standalone_seconds"][paired], 1.0 - alpha)
        rows.append({"sweep": sweep, "method_a": a, "method_b": b, "target_sparsity": float(target),
                     "metric": metric, "unpaired_a": len(side_a) - len(shared),
                     "unpaired_b": len(side_b) - len(shared),
                     "mean_a": _mean(pa[metric].to_numpy()[paired]), "mean_b": _mean(pb[metric].to_numpy()[paired]),
                     **dataclasses.asdict(result),
                     "cost_ratio": cost, "cost_ratio_low": cost_low, "cost_ratio_high": cost_high,
                     "cost_pairs": cost_pairs})
    if not rows:
        raise CompareError(_nothing_shared(both, a, b))
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    # Whole seed counts or None, not floats with NaN (csv would print "6.0"); object keeps them as given.
    out["seeds_for_power"] = pd.Series([r["seeds_for_power"] for r in rows], dtype=object)
    return out


def _by_seed(group: pd.DataFrame, method: str, sweep: str, target: float) -> pd.DataFrame:
    side = group[group["method"] == method]
    seeds = pd.to_numeric(side["seed"], errors="coerce")
    twice = seeds[seeds.duplicated()]
    if not twice.empty:
        raise CompareError(f"{method!r} has several finished points for seed {_seeds(twice)} at target "
                           f"sparsity {target:g} of sweep {sweep!r}; pairing by seed needs one")
    return side.set_index(seeds.rename("seed_number"))


def _mean(values) -> float:
    return float(values.mean()) if len(values) else math.nan


def _cost_ratio(cost_a: pd.Series, cost_b: pd.Series, level: float) -> tuple[float, float, float, int]:
    ca = pd.to_numeric(cost_a, errors="coerce").to_numpy(dtype=float)
    cb = pd.to_numeric(cost_b, errors="coerce").to_numpy(dtype=float)
    ok = (ca > 0) & (cb > 0) & np.isfinite(ca) & np.isfinite(cb)
    logs = np.log(cb[ok] / ca[ok])
    if logs.size == 0:
        return math.nan, math.nan, math.nan, 0
    low, high = mean_interval(logs, level)
    return math.exp(logs.mean()), math.exp(low), math.exp(high), int(logs.size)


def _nothing_shared(both: pd.DataFrame, a: str, b: str) -> str:
    rows_a, rows_b = both[both["method"] == a], both[both["method"] == b]
    sweeps = set(rows_a["sweep"]) & set(rows_b["sweep"])
    if not sweeps:
        return (f"{a!r} and {b!r} are in no sweep together ({a!r}: {', '.join(sorted(set(rows_a['sweep'])))}; "
                f"{b!r}: {', '.join(sorted(set(rows_b['sweep'])))})")
    rows_a, rows_b = rows_a[rows_a["sweep"].isin(sweeps)], rows_b[rows_b["sweep"].isin(sweeps)]
    if not set(rows_a["_target"]) & set(rows_b["_target"]):
        return (f"{a!r} and {b!r} have no target sparsity in common ({a!r}: {_targets(rows_a)}; "
                f"{b!r}: {_targets(rows_b)})")
    return (f"{a!r} and {b!r} share no seed at any target sparsity ({a!r} has seeds {_seeds(rows_a['seed'])}; "
            f"{b!r} has seeds {_seeds(rows_b['seed'])})")


def _targets(rows: pd.DataFrame) -> str:
    return ", ".join(f"{t:g}" for t in sorted(set(rows["_target"])))


def _seeds(seeds) -> str:
    """'0-4, 7, 9-10' for the distinct seeds, ascending."""
    values = sorted({int(s) for s in pd.to_numeric(pd.Series(list(seeds)), errors="coerce").dropna()})
    runs: list[list[int]] = []
    for s in values:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs) or "none"


# ---- text ----------------------------------------------------------------------------------------------


def format_comparison(frame: pd.DataFrame, fmt: str = "table") -> str:
    """A `compare_methods`/`compare_all` frame as text: "table" (fixed width) or "markdown", with
    accuracies and differences in percent (points); or its COMPARE_COLUMNS as "csv" or "json" (a list of
    records; accuracies and differences in percent as in the table, their names ending in `_pct`; missing
    values empty in csv and null in json)."""
    if fmt in ("table", "markdown"):
        return _table(frame, markdown=fmt == "markdown")
    return records(frame, COMPARE_COLUMNS, fmt, percent=COMPARE_PERCENT)


def _in_points(value: float, sign: bool = False) -> str:
    if pd.isna(value):
        return "—"
    return f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def _interval(low: float, high: float, cell) -> str:
    return "—" if pd.isna(low) or pd.isna(high) else f"[{cell(low)}, {cell(high)}]"


def _verdict(r, notes: dict[str, int]) -> str:
    text = {A_BETTER: f"{r.method_a} better", B_BETTER: f"{r.method_b} better"}.get(r.verdict, r.verdict)
    return f"{text} (note {notes[r.note]})" if r.note else text


def _notes(frame: pd.DataFrame) -> dict[str, int]:
    """Each distinct caveat once, numbered in row order: the same caveat on every row is printed only once."""
    notes = [str(n) for n in frame["note"] if isinstance(n, str) and n]
    return {n: i for i, n in enumerate(dict.fromkeys(notes), start=1)}


def _cost(r) -> str:
    if pd.isna(r.cost_ratio):
        return "—"
    ratio = f"{r.cost_ratio:.2f}"
    if pd.isna(r.cost_ratio_low):
        return ratio
    return ratio + " " + _interval(r.cost_ratio_low, r.cost_ratio_high, "{:.2f}".format)


def _level_label(frame: pd.DataFrame) -> str:
    alphas = set(frame["alpha"].astype(float))
    return f"{100 * (1 - alphas.pop()):g} % CI" if len(alphas) == 1 else "CI"


def comparison_cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], set[int]]:
    """(header, rows, left-aligned columns) of a comparison as every text form shows it (table, markdown, the
    report's HTML), so they always agree."""
    multi_sweep = frame["sweep"].astype(str).nunique() > 1
    text_cols = ["sweep", "A", "B"] if multi_sweep else ["A", "B"]
    header = text_cols + ["target", "n", "unpaired", "A %", "B %", "B−A (pts)", _level_label(frame), "p", "test",
                          "verdict", "cost B/A", "seeds for 80 % power"]
    rows, notes = [], _notes(frame)
    for r in frame.itertuples(index=False):
        rows.append(([str(r.sweep)] if multi_sweep else []) + [
            str(r.method_a), str(r.method_b), f"{r.target_sparsity:.4f}", str(int(r.n)),
            str(int(r.unpaired_a) + int(r.unpaired_b)), _in_points(r.mean_a), _in_points(r.mean_b),
            _in_points(r.mean_diff, sign=True), _interval(r.ci_low, r.ci_high, lambda v: _in_points(v, sign=True)),
            "—" if pd.isna(r.p_value) else f"{r.p_value:.3g}", str(r.test), _verdict(r, notes), _cost(r),
            "—" if r.seeds_for_power is None or pd.isna(r.seeds_for_power) else str(int(r.seeds_for_power))])
    # The verdict is prose: left-aligned like the names; the numbers right-aligned so their points line up.
    left = set(range(len(text_cols))) | {header.index("test"), header.index("verdict")}
    return header, rows, left


LEGEND = ("B−A in accuracy points; CI: paired t; p: paired sign-flip permutation test; "
          "cost: geometric mean of per-seed standalone-cost ratios B/A")


def _table(frame: pd.DataFrame, markdown: bool) -> str:
    if frame.empty:
        return "no comparison"
    header, rows, left = comparison_cells(frame)
    sweep = "" if frame["sweep"].astype(str).nunique() > 1 else f"sweep: {frame['sweep'].iloc[0]}; "
    title = [f"{sweep}metric: {', '.join(sorted(set(frame['metric'].astype(str))))}; {LEGEND}"]
    return render(header, rows, left=left, markdown=markdown, title=title, footer=footer_lines(frame))


def footer_lines(frame: pd.DataFrame) -> list[str]:
    """What goes below the table: the numbered caveats its verdicts refer to, then the methods not compared."""
    return [f"note {i}: {n}" for n, i in _notes(frame).items()] + skipped_lines(frame)


def skipped_lines(frame: pd.DataFrame) -> list[str]:
    return [f"not compared: {m} ({why})" for m, why in frame.attrs.get("skipped", {}).items()]
