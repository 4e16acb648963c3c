"""Paired comparison of two methods of a sweep, target sparsity by target sparsity, as a frame and as text.

Every method of a seed shares the initial weights, rewind weights and data order, so the seeds of A and B
are paired: the statistics (orchestrator.analysis.stats.paired_difference) work on the per-seed differences B - A,
on the integer counts of correct examples where the store has them (`test_on` says "counts" or "floats").
A seed only one side has at a sparsity cannot be paired; it is left out and counted (unpaired_a,
unpaired_b). Pairs are formed within a sweep: two sweeps may use the same seed numbers for different
settings.

FAILURES COUNT: a seed whose run failed, diverged or was skipped after a failed parent (a whole LTR chain
after a diverged level) is by default counted at chance accuracy, 1 / num_classes, the accuracy of a model
that learned nothing, so that a method that breaks on hard seeds is not compared on its easy ones alone
(failures="chance"); failures="exclude" leaves those seeds out. failed_a / failed_b count them either way.
A run that finished but collapsed counts with the accuracy it measured.

MULTIPLICITY: the rows of one frame are one family. Every row carries its raw p-value, its Holm-adjusted
p-value (p_holm) and its Benjamini-Hochberg q-value (q_bh); the verdict follows the `adjust` chosen (Holm by
default), so a table of twelve verdicts has at most a 5 % chance of containing any false one.

The cost column is the paired ratio of standalone costs, B / A, in seconds (the default) or in the work the
workers counted (`cost`: epochs or flops, orchestrator/analysis/cost_units.py COSTS; a rerun reproduces these exactly),
summarised as the geometric mean of the
per-seed ratios, exp(mean(log(b_i / a_i))), with a t interval on the log scale. Chosen over the mean of the
ratios because it is symmetric (comparing B with A gives exactly the reciprocal of comparing A with B, which
the arithmetic mean of ratios does not), and over the ratio of the means because it keeps the pairing (a
seed that is slow for both methods does not weigh more) and so has an interval. It is taken over the seeds
of the accuracy difference that finished on both sides; of those, seeds with a missing or non-positive cost
are left out of it (cost_pairs counts the rest).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from orchestrator.analysis.cost_units import COST_COLUMNS, COSTS, DEFAULT_COST
from orchestrator.analysis.frontier import DENSE, finished, never_finished
from orchestrator.analysis.stats import (A_BETTER, ADJUSTMENTS, B_BETTER, DEFAULT_ADJUST, DEFAULT_MIN_EFFECT_POINTS, FAILURES,
                                NO_DIFFERENCE, POWER_SEARCH_LIMIT, TOO_FEW, PairedResult, adjust,
                                counts_with_failures, mean_interval, paired_difference, power_level,
                                smallest_rejecting_n)
from orchestrator.analysis.text_tables import records, render

DEFAULT_METRIC = "selected_test_accuracy"
# The count of correct examples and the example count behind each accuracy column.
COUNTS = {"selected_test_accuracy": ("selected_test_correct", "test_examples"),
          "test_accuracy": ("test_correct", "test_examples"), "val_accuracy": ("val_correct", "val_examples")}

_RESULT_FIELDS = [f.name for f in dataclasses.fields(PairedResult)]
COMPARE_COLUMNS = (["sweep", "method_a", "method_b", "target_sparsity", "metric", "unpaired_a", "unpaired_b",
                    "failed_a", "failed_b", "failures", "mean_a", "mean_b"]
                   + _RESULT_FIELDS
                   + ["adjust", "family_size", "p_holm", "q_bh",
                      "cost_ratio", "cost_ratio_low", "cost_ratio_high", "cost_pairs", "cost_unit"])
# Accuracies and their differences: fractions here, percent (named ..._pct) in csv and json as in the tables.
COMPARE_PERCENT = ["mean_a", "mean_b", "mean_diff", "sd_diff", "ci_low", "ci_high", "t_low", "t_high", "min_effect"]
_REQUIRED = ("status", "stage_key", "method", "target_sparsity", "seed")
_TARGET_DIGITS = 9  # targets equal to 9 decimals are the same requested sparsity


class CompareError(ValueError):
    """Bad input for a comparison; the message is one line, fit for the CLI to print."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How a comparison is judged: the level, the multiplicity adjustment its verdicts follow, the effect (in
    the metric's units, a fraction for accuracies) the power figures plan for, and what a failed seed counts as."""

    alpha: float = 0.05
    adjust: str = DEFAULT_ADJUST
    min_effect: float | None = DEFAULT_MIN_EFFECT_POINTS / 100
    failures: str = "chance"
    cost: str = DEFAULT_COST  # the unit of the cost ratio

    def check(self) -> None:
        if self.cost not in COSTS:
            raise CompareError(f"cost must be one of {', '.join(COSTS)}, got {self.cost!r}")
        if not 0.0 < self.alpha < 1.0:
            raise CompareError(f"alpha must be between 0 and 1, got {self.alpha!r}")
        if self.adjust not in ADJUSTMENTS:
            raise CompareError(f"adjust must be one of {', '.join(ADJUSTMENTS)}, got {self.adjust!r}")
        if self.failures not in FAILURES:
            raise CompareError(f"failures must be one of {', '.join(FAILURES)}, got {self.failures!r}")
        if self.min_effect is not None and not (math.isfinite(self.min_effect) and self.min_effect > 0):
            raise CompareError(f"min-effect must be a positive number of points, got {100 * self.min_effect!r}")


def compare_methods(points: pd.DataFrame, a: str, b: str, metric: str = DEFAULT_METRIC, alpha: float = 0.05,
                    *, all_levels: bool = False, adjust: str = DEFAULT_ADJUST,
                    min_effect: float | None = DEFAULT_MIN_EFFECT_POINTS / 100,
                    failures: str = "chance", cost: str = DEFAULT_COST) -> pd.DataFrame:
    """One row per (sweep, target sparsity) where methods `a` and `b` both have results on shared seeds:
    COMPARE_COLUMNS, with mean_a/mean_b the means of `metric` over the paired seeds (so mean_b - mean_a
    is mean_diff), the PairedResult fields, the family's adjusted p-values and the cost ratio B / A in `cost`.
    The rows are one family for `adjust`.

    `points` may be raw (finished rows: each stage's latest ok attempt; failed ones per `failures`);
    `all_levels=False` leaves out intermediate LTR levels, as the frontier does. Raises CompareError.
    """
    options = Options(alpha, adjust, min_effect, failures, cost)
    df, failed = _prepared(points, metric, all_levels, options)
    return _judged([_pairs(df, failed, str(a), str(b), metric, options)], options)


def compare_all(points: pd.DataFrame, reference: str, metric: str = DEFAULT_METRIC, alpha: float = 0.05,
                *, all_levels: bool = False, adjust: str = DEFAULT_ADJUST,
                min_effect: float | None = DEFAULT_MIN_EFFECT_POINTS / 100,
                failures: str = "chance", cost: str = DEFAULT_COST) -> pd.DataFrame:
    """Every method other than `reference` and the dense baseline, each as B against `reference` as A, in
    one frame, one family. A method that shares no seed and sparsity with the reference is left out of the
    rows and listed in `frame.attrs["skipped"]` (method -> reason); CompareError when no method can be
    compared."""
    options = Options(alpha, adjust, min_effect, failures, cost)
    df, failed = _prepared(points, metric, all_levels, options)
    reference = str(reference)
    _check_method(df, reference)
    others = [m for m in sorted(df["method"].unique()) if m not in (reference, DENSE)]
    if not others:
        raise CompareError(f"no method besides {reference!r} and {DENSE!r} to compare with {reference!r}")
    groups, skipped = [], {}
    for method in others:
        try:
            groups.append(_pairs(df, failed, reference, method, metric, options))
        except CompareError as err:
            skipped[method] = str(err)
    if not groups:
        raise CompareError(f"no method can be compared with {reference!r}: " + "; ".join(skipped.values()))
    out = _judged(groups, options)
    out.attrs["skipped"] = skipped
    return out


@dataclasses.dataclass(frozen=True)
class PairedCounts:
    """What `compare` tests for one (sweep, target sparsity) of A and B, seed by seed: seeds (paired, in order),
    count_a/count_b (correct examples, a failed seed at chance, all out of `unit`; None when the test would run
    on floats, `why` says why), left_out (failed seeds not counted: failures="exclude"), failed_a/failed_b."""

    sweep: str
    target: float
    seeds: list[int]
    count_a: list[int] | None
    count_b: list[int] | None
    unit: int | None
    left_out: frozenset[int]
    failed_a: int
    failed_b: int
    why: str


def paired_counts(points: pd.DataFrame, a: str, b: str, metric: str = DEFAULT_METRIC,
                  failures: str = "chance") -> list[PairedCounts]:
    """The counts `compare_methods` tests, one entry per (sweep, target sparsity) it would have a row for: the
    same pairing, the same failed seeds at chance (or left out), the same counts (`submit --until-decided`
    decides on these). Raises CompareError as `compare_methods` does."""
    options = Options(failures=failures)
    df, failed = _prepared(points, metric, False, options)
    out = []
    for g in _pairs(df, failed, str(a), str(b), metric, options):
        notes = "; ".join(g.notes)
        # failures="chance" leaves failed seeds out only when chance accuracy is unknown: say so
        unknown = notes if failures == "chance" and g.left_out else ""
        if not g.seeds:  # every shared seed failed and was left out: nothing to count
            out.append(PairedCounts(g.head["sweep"], g.head["target_sparsity"], [], [], [], None,
                                    frozenset(g.left_out), g.head["failed_a"], g.head["failed_b"], unknown))
            continue
        if g.counts is None or not np.all(np.isfinite(g.a) & np.isfinite(g.b)):
            why = notes if g.counts is None else f"a missing {metric} value"
            out.append(PairedCounts(g.head["sweep"], g.head["target_sparsity"], g.seeds, None, None, None,
                                    frozenset(g.left_out), g.head["failed_a"], g.head["failed_b"], why))
            continue
        count_a, count_b, unit = g.counts
        out.append(PairedCounts(g.head["sweep"], g.head["target_sparsity"], g.seeds, list(count_a), list(count_b),
                                unit, frozenset(g.left_out), g.head["failed_a"], g.head["failed_b"], unknown))
    return out


def _prepared(points: pd.DataFrame, metric: str, all_levels: bool,
              options: Options) -> tuple[pd.DataFrame, pd.DataFrame]:
    options.check()
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
    failed = never_finished(points, all_levels=all_levels)
    for frame in (df, failed):
        frame["_target"] = frame["target_sparsity"].round(_TARGET_DIGITS)
    return df, failed


def _accuracy_columns(df: pd.DataFrame) -> str:
    names = [c for c in df.columns if str(c).endswith("accuracy")
             and pd.to_numeric(df[c], errors="coerce").notna().any()]
    return ", ".join(names) or "none"


def _check_method(df: pd.DataFrame, method: str) -> None:
    methods = df["method"].unique()
    if method not in methods:
        from orchestrator.spec.suggest import suggest

        raise CompareError(f"no method {method!r} in the finished points"
                           + suggest(method, sorted(methods), list_known=True))


@dataclasses.dataclass
class _Group:
    """One (sweep, target) of a pair of methods, paired by seed, before the statistics."""

    head: dict
    a: np.ndarray
    b: np.ndarray
    counts: tuple | None
    cost: tuple
    notes: list[str]
    seeds: list[int]           # the seeds of a, b and counts, in order
    left_out: set[int]         # failed seeds left out (failures="exclude", or chance accuracy unknown)


def _pairs(df: pd.DataFrame, failed: pd.DataFrame, a: str, b: str, metric: str, options: Options) -> list[_Group]:
    if a == b:
        raise CompareError(f"compare two different methods, got {a!r} twice")
    _check_method(df, a)
    _check_method(df, b)
    for method in (a, b):
        if df.loc[df["method"] == method, metric].isna().all():
            raise CompareError(f"metric column {metric!r} has no values for method {method!r}; "
                               f"accuracy columns with values: {_accuracy_columns(df[df['method'] == method])}")
    groups = []
    both = df[df["method"].isin((a, b))]
    down = failed[failed["method"].isin((a, b))]
    for (sweep, target), group in both.groupby(["sweep", "_target"], sort=True):
        lost = down[(down["sweep"] == sweep) & (down["_target"] == target)]
        side_a, side_b = _by_seed(group, a, sweep, target), _by_seed(group, b, sweep, target)
        fail_a, fail_b = _failed_seeds(lost, a, side_a), _failed_seeds(lost, b, side_b)
        seeds_a, seeds_b = set(side_a.index) | fail_a, set(side_b.index) | fail_b
        shared = sorted(seeds_a & seeds_b)
        # A side with no finished seed here still counts when it failed on shared seeds: a method that breaks
        # on every seed at a sparsity is compared at chance there, not dropped from the table.
        if (side_a.empty and side_b.empty) or not shared:
            continue
        chance = _chance(group)
        notes = []
        count_fail = options.failures == "chance"
        if count_fail and chance is None and any(s in fail_a or s in fail_b for s in shared):
            notes.append("failed seeds left out: the store does not record num_classes, so chance accuracy is "
                         "unknown")
            count_fail = False
        left_out = set() if count_fail else {s for s in shared if s in fail_a or s in fail_b}
        shared = [s for s in shared if s not in left_out]
        failed_a, failed_b = sum(s in fail_a for s in seeds_a & seeds_b), sum(s in fail_b for s in seeds_a & seeds_b)
        va, vb = _values(side_a, shared, metric, chance), _values(side_b, shared, metric, chance)
        counts, why = _counts(side_a, side_b, shared, metric, chance)
        if why:
            notes.append(why)
        at_chance = _at_chance(va, chance, fail_a, shared) + _at_chance(vb, chance, fail_b, shared)
        if at_chance:
            notes.append(f"{at_chance} seed value(s) at chance (failed or collapsed): the differences are "
                         f"bimodal, and at n={len(shared)} the interval's coverage is unreliable")
        ok = [s for s in shared if s in side_a.index and s in side_b.index]
        keep = [s for s in ok if pd.notna(side_a.loc[s, metric]) and pd.notna(side_b.loc[s, metric])]
        column = COST_COLUMNS[options.cost]["standalone"]
        cost = _cost_ratio(side_a.loc[keep, column], side_b.loc[keep, column], 1.0 - options.alpha)
        head = {"sweep": sweep, "method_a": a, "method_b": b, "target_sparsity": float(target), "metric": metric,
                "unpaired_a": len(seeds_a - seeds_b), "unpaired_b": len(seeds_b - seeds_a),
                "failed_a": failed_a, "failed_b": failed_b, "failures": options.failures,
                "mean_a": _mean(va[np.isfinite(va) & np.isfinite(vb)]),
                "mean_b": _mean(vb[np.isfinite(va) & np.isfinite(vb)])}
        groups.append(_Group(head, va, vb, counts, cost, notes, shared, left_out))
    if not groups:
        raise CompareError(_nothing_shared(both, a, b))
    return groups


def _failed_seeds(lost: pd.DataFrame, method: str, finished_side: pd.DataFrame) -> set[int]:
    seeds = pd.to_numeric(lost.loc[lost["method"] == method, "seed"], errors="coerce").dropna().astype(int)
    return set(seeds) - set(finished_side.index)


def _chance(group: pd.DataFrame) -> int | None:
    classes = pd.to_numeric(group.get("num_classes", pd.Series(dtype=float)), errors="coerce").dropna()
    return int(classes.iloc[0]) if len(classes) and classes.nunique() == 1 and classes.iloc[0] > 0 else None


def _values(side: pd.DataFrame, seeds: list[int], metric: str, chance: int | None) -> np.ndarray:
    return np.array([side.loc[s, metric] if s in side.index else 1.0 / chance for s in seeds], dtype=float)


def _counts(side_a: pd.DataFrame, side_b: pd.DataFrame, seeds: list[int], metric: str,
            chance: int | None) -> tuple[tuple | None, str]:
    """(count_a, count_b, unit) with every value = count / unit, or (None, why the test runs on floats).

    A stored count is used as it is; a row without one (a store older than the counts) gets
    round(accuracy · examples) only where that reproduces the float accuracy exactly. A failed seed is at
    chance (stats.counts_with_failures)."""
    if metric not in COUNTS or not seeds:
        return None, ""
    correct_col, examples_col = COUNTS[metric]
    examples, pairs = set(), []
    for side in (side_a, side_b):
        for s in seeds:
            if s not in side.index:
                pairs.append(None)  # a failed seed: at chance
                continue
            row = side.loc[s]
            n_examples = _int_or_none(row.get(examples_col))
            correct = _int_or_none(row.get(correct_col))
            value = float(row[metric])
            if math.isnan(value):
                pairs.append(0)  # the pair is dropped (paired_difference), its count never read
                continue
            if n_examples is None:
                return None, "test on float accuracies: the store records no example counts"
            if correct is None:
                guess = round(value * n_examples)
                if guess / n_examples != value:
                    return None, "test on float accuracies: they are not whole counts of the examples"
                correct = guess
            examples.add(n_examples)
            pairs.append(correct)
    if len(examples) != 1:
        return None, "test on float accuracies: the two sides have different example counts"
    n_examples = examples.pop()
    failed = [c is None for c in pairs]
    if any(failed) and chance is None:
        return None, "test on float accuracies: chance accuracy unknown"
    scaled, unit = counts_with_failures([c or 0 for c in pairs], failed, n_examples, chance or 1)
    scaled = [int(c) for c in scaled]
    return (scaled[:len(seeds)], scaled[len(seeds):], unit), ""


def _int_or_none(value) -> int | None:
    if value is None or pd.isna(value):
        return None
    return int(value)


def _at_chance(values: np.ndarray, chance: int | None, failed: set[int], seeds: list[int]) -> int:
    """Seeds counted at chance (failed) or whose accuracy is nearer chance than the side's median (collapsed),
    when the median is well above chance."""
    count = sum(1 for s in seeds if s in failed)
    if chance is None or values.size == 0:
        return count
    level, median = 1.0 / chance, float(np.nanmedian(values))
    if median > 2 * level:
        count += sum(1 for s, v in zip(seeds, values) if s not in failed and v < (level + median) / 2)
    return count


def _judged(families: list[list[_Group]], options: Options) -> pd.DataFrame:
    """The statistics of every group, then the family's adjustment: the verdicts follow options.adjust."""
    groups = [g for family in families for g in family]
    family = sum(1 for g in groups if np.sum(np.isfinite(g.a) & np.isfinite(g.b)) >= 2)
    level = power_level(options.alpha, family, options.adjust)
    rows = []
    for g in groups:
        result = paired_difference(g.a, g.b, alpha=options.alpha, counts=g.counts, min_effect=options.min_effect,
                                   power_alpha=level)
        fields = dataclasses.asdict(result)
        fields["note"] = "; ".join([n for n in (result.note, *g.notes) if n])
        cost, cost_low, cost_high, cost_pairs = g.cost
        rows.append({**g.head, **fields, "cost_ratio": cost, "cost_ratio_low": cost_low,
                     "cost_ratio_high": cost_high, "cost_pairs": cost_pairs, "cost_unit": options.cost})
    out = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    p = out["p_value"].to_numpy(dtype=float)
    out["p_holm"], out["q_bh"] = adjust(p, "holm"), adjust(p, "bh")
    out["adjust"], out["family_size"] = options.adjust, family
    out["verdict"] = _verdicts(out, options, family)
    if options.adjust != "none":
        name = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[options.adjust]
        for i, r in enumerate(out.itertuples(index=False)):
            excludes = r.ci_low > 0 or r.ci_high < 0
            if excludes and r.verdict in (NO_DIFFERENCE, TOO_FEW):
                out.at[i, "note"] = "; ".join(filter(None, [r.note, f"the interval (one comparison alone) excludes "
                                                            f"0, the {name}-adjusted test of the family does not"]))
    # Whole seed counts or None, not floats with NaN (csv would print "6.0"); object keeps them as given.
    for col in ("seeds_for_power", "seeds_for_power_low", "seeds_for_power_high"):
        out[col] = pd.Series([r[col] for r in rows], dtype=object)
    return out


def adjusted_p(frame: pd.DataFrame) -> pd.Series:
    """The p-value each row's verdict follows: p_holm, q_bh or p_value, by the frame's `adjust`."""
    method = str(frame["adjust"].iloc[0]) if len(frame) else DEFAULT_ADJUST
    return frame[{"holm": "p_holm", "bh": "q_bh", "none": "p_value"}[method]]


def _verdicts(out: pd.DataFrame, options: Options, family: int) -> list[str]:
    # Holm's smallest adjusted p is family x the smallest p of the family: below alpha, nothing can pass.
    hopeless = options.adjust == "holm" and family * out["min_p"].min(skipna=True) >= options.alpha
    verdicts = []
    for r, p in zip(out.itertuples(index=False), adjusted_p(out)):
        if pd.isna(p) or r.verdict == TOO_FEW or (hopeless and r.verdict != NO_DIFFERENCE):
            verdicts.append(TOO_FEW)
        elif p < options.alpha:
            verdicts.append(B_BETTER if r.mean_diff > 0 else A_BETTER)
        else:
            verdicts.append(NO_DIFFERENCE)
    return verdicts


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
    records; accuracies and differences in percent in the columns named ..._pct, missing values empty in csv
    and null in json)."""
    if fmt in ("table", "markdown"):
        return _table(frame, markdown=fmt == "markdown")
    return records(frame, COMPARE_COLUMNS, fmt, percent=COMPARE_PERCENT)


def _in_points(value: float, sign: bool = False) -> str:
    if pd.isna(value):
        return "—"
    if math.isinf(value):
        return "+∞" if value > 0 else "-∞"
    return f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def _interval(low: float, high: float, cell) -> str:
    return "—" if pd.isna(low) or pd.isna(high) else f"[{cell(low)}, {cell(high)}]"


def _p(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3g}"


def _verdict(r, marks: dict[str, int]) -> str:
    text = {A_BETTER: f"{r.method_a} better", B_BETTER: f"{r.method_b} better"}.get(r.verdict, r.verdict)
    return f"{text} [{marks[r.note]}]" if r.note else text


def _cost(r) -> str:
    if pd.isna(r.cost_ratio):
        return "—"
    ratio = f"{r.cost_ratio:.2f}"
    if pd.isna(r.cost_ratio_low):
        return ratio
    return ratio + " " + _interval(r.cost_ratio_low, r.cost_ratio_high, "{:.2f}".format)


def cost_header(frame: pd.DataFrame) -> str:
    """The cost column's header: `cost B/A` in seconds (as it always was), else its unit named."""
    units = set(frame["cost_unit"].dropna().astype(str)) if "cost_unit" in frame else set()
    unit = units.pop() if len(units) == 1 else DEFAULT_COST
    return "cost B/A" if unit == "seconds" else f"cost B/A ({unit})"


def _seeds_needed(r) -> str:
    point, low, high = r.seeds_for_power, r.seeds_for_power_low, r.seeds_for_power_high
    if point is None or pd.isna(point):
        return "—"
    cell = lambda v: ">" + str(POWER_SEARCH_LIMIT) if v is None or pd.isna(v) else str(int(v))  # noqa: E731
    return cell(point) if low == high == point else f"{cell(point)} ({cell(low)}–{cell(high)})"


def _level_label(frame: pd.DataFrame) -> str:
    alphas = set(frame["alpha"].astype(float))
    return f"{100 * (1 - alphas.pop()):g} % CI" if len(alphas) == 1 else "CI"


def _note_marks(frame: pd.DataFrame) -> dict[str, int]:
    marks: dict[str, int] = {}
    for note in frame["note"]:
        if note and note not in marks:
            marks[note] = len(marks) + 1
    return marks


def comparison_cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]], set[int]]:
    """(header, rows, left-aligned columns) of a comparison as every text form shows it (table, markdown, the
    report's HTML), so they always agree. A row's note is a numbered mark in its verdict (`comparison_footer`)."""
    multi_sweep = frame["sweep"].astype(str).nunique() > 1
    text_cols = ["sweep", "A", "B"] if multi_sweep else ["A", "B"]
    header = text_cols + ["target", "n", "failed", "unpaired", "A %", "B %", "B−A", _level_label(frame), "p",
                          "p Holm", "q BH", "verdict", cost_header(frame), "seeds 80 %"]
    marks = _note_marks(frame)
    rows = []
    for r in frame.itertuples(index=False):
        rows.append(([str(r.sweep)] if multi_sweep else []) + [
            str(r.method_a), str(r.method_b), f"{r.target_sparsity:.4f}", str(int(r.n)),
            f"{int(r.failed_a)}/{int(r.failed_b)}", str(int(r.unpaired_a) + int(r.unpaired_b)), _in_points(r.mean_a),
            _in_points(r.mean_b), _in_points(r.mean_diff, sign=True),
            _interval(r.ci_low, r.ci_high, lambda v: _in_points(v, sign=True)), _p(r.p_value), _p(r.p_holm),
            _p(r.q_bh), _verdict(r, marks), _cost(r), _seeds_needed(r)])
    # The verdict is prose: left-aligned like the names; the numbers right-aligned so their points line up.
    left = set(range(len(text_cols))) | {header.index("verdict")}
    return header, rows, left


LEGEND = ("B−A in accuracy points; CI: the interval that inverts the sign-flip test (p < alpha exactly when it "
          "excludes 0); p: exact paired sign-flip test on correct-example counts; failed: seeds that failed, "
          "diverged or were skipped, A/B; cost: geometric mean of per-seed standalone-cost ratios B/A")


def family_line(frame: pd.DataFrame) -> str:
    """How the verdicts of this frame were reached, in one line: the adjustment, the family, the smallest n at
    which it can reject anything, how failures count and what the power column plans for."""
    if frame.empty:
        return ""
    method, family = str(frame["adjust"].iloc[0]), int(frame["family_size"].iloc[0])
    alpha = float(frame["alpha"].iloc[0])
    name = {"holm": "Holm-adjusted p (p Holm)", "bh": "Benjamini-Hochberg q (q BH)", "none": "unadjusted p"}[method]
    floor = smallest_rejecting_n(alpha, family, method)
    failures = ("failed seeds count at chance accuracy" if frame["failures"].iloc[0] == "chance"
                else "failed seeds left out")
    effects = sorted({float(v) for v in frame["min_effect"] if pd.notna(v)})
    power = (f"seeds 80 %: for 80 % power at a difference of {', '.join(f'{100 * e:g}' for e in effects)} points "
             f"(level {power_level(alpha, family, method):.3g}), from the sd of the differences (its 95 % range)"
             ) if effects else "seeds 80 %: no --min-effect given"
    who = {"holm": "Holm", "bh": "BH", "none": "the unadjusted test"}[method]
    return (f"verdicts: {name} < {alpha:g} over a family of {family} comparison(s), the rows of this table "
            f"with a p; {who} can reject from n = {floor} seeds; {failures}; {power}")


def comparison_footer(frame: pd.DataFrame) -> list[str]:
    """The numbered notes the verdicts point to, then the methods that could not be compared."""
    return [f"[{i}] {note}" for note, i in _note_marks(frame).items()] + skipped_lines(frame)


def _table(frame: pd.DataFrame, markdown: bool) -> str:
    if frame.empty:
        return "no comparison"
    header, rows, left = comparison_cells(frame)
    sweep = "" if frame["sweep"].astype(str).nunique() > 1 else f"sweep: {frame['sweep'].iloc[0]}; "
    title = [f"{sweep}metric: {', '.join(sorted(set(frame['metric'].astype(str))))}; {LEGEND}", family_line(frame)]
    # Markdown has no title (a heading there is the caller's): the family line leads its footer instead.
    footer = ([family_line(frame)] if markdown else []) + comparison_footer(frame)
    return render(header, rows, left=left, markdown=markdown, title=title, footer=footer)


def skipped_lines(frame: pd.DataFrame) -> list[str]:
    return [f"not compared: {m} ({why})" for m, why in frame.attrs.get("skipped", {}).items()]


# ---- the change of a comparison between two settings ---------------------------------------------------

CHANGE_COLUMNS = ["sweep", "target_sparsity", "before_a", "before_b", "after_a", "after_b", "n", "diff_before",
                  "diff_after", "change", "p_value", "test_on", "min_p", "adjust", "family_size", "p_holm", "q_bh",
                  "changed"]


def compare_changes(points: pd.DataFrame, pairs: list[tuple[tuple[str, str], tuple[str, str]]],
                    metric: str = DEFAULT_METRIC, alpha: float = 0.05, adjust_by: str = DEFAULT_ADJUST,
                    all_levels: bool = False) -> pd.DataFrame:
    """Did the comparison of B with A change between two settings (e.g. untuned and tuned)? For each
    ((a, b), (a2, b2)) of `pairs` and each (sweep, target sparsity) where all four methods finished on shared
    seeds: the per-seed change of the difference, (b2 - a2) - (b - a), and the exact sign-flip test of it
    (on correct-example counts where all four have them with one example count), the family being every row.
    A flip is a change the adjusted test detects (`changed`), not two verdicts on either side of a threshold.
    Seeds that failed on any of the four are left out. CHANGE_COLUMNS."""
    from orchestrator.analysis.stats import exact_sign_flip_pvalue, sign_flip_pvalues

    Options(alpha, adjust_by, None, "exclude").check()
    df = finished(points, all_levels=all_levels)
    df["_target"] = df["target_sparsity"].round(_TARGET_DIGITS)
    if metric not in df:
        raise CompareError(f"no metric column {metric!r} in the points")
    correct_col, examples_col = COUNTS.get(metric, (None, None))
    rows = []
    for (a, b), (a2, b2) in pairs:
        for (sweep, target), group in df[df["method"].isin((a, b, a2, b2))].groupby(["sweep", "_target"], sort=True):
            sides = {m: _by_seed(group, m, sweep, target) for m in (a, b, a2, b2)}
            if any(side.empty for side in sides.values()):
                continue
            seeds = sorted(set.intersection(*(set(side.index[side[metric].notna()]) for side in sides.values())))
            if len(seeds) < 2:
                continue
            value = {m: side.loc[seeds, metric].to_numpy(dtype=float) for m, side in sides.items()}
            change = (value[b2] - value[a2]) - (value[b] - value[a])
            counted = correct_col in group and examples_col in group and all(
                side.loc[seeds, correct_col].notna().all() for side in sides.values())
            examples = set(group.loc[group["seed"].isin(seeds), examples_col]) if counted else set()
            if counted and len(examples) == 1:
                count = {m: [int(v) for v in side.loc[seeds, correct_col]] for m, side in sides.items()}
                p = exact_sign_flip_pvalue([(y2 - x2) - (y - x) for x, y, x2, y2 in
                                            zip(count[a], count[b], count[a2], count[b2])])
                test_on = "counts"
            else:
                p, test_on = float(sign_flip_pvalues(change)[0]), "floats"
            nonzero = int(np.count_nonzero(np.abs(change) > 1e-12))
            rows.append({"sweep": sweep, "target_sparsity": float(target), "before_a": a, "before_b": b,
                         "after_a": a2, "after_b": b2, "n": len(seeds),
                         "diff_before": float(np.mean(value[b] - value[a])),
                         "diff_after": float(np.mean(value[b2] - value[a2])), "change": float(change.mean()),
                         "p_value": p, "test_on": test_on, "min_p": 2.0 / 2 ** nonzero if nonzero else 1.0})
    out = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    p = out["p_value"].to_numpy(dtype=float)
    out["p_holm"], out["q_bh"] = adjust(p, "holm"), adjust(p, "bh")
    out["adjust"], out["family_size"] = adjust_by, len(out)
    out["changed"] = adjusted_p(out) < alpha if len(out) else pd.Series(dtype=bool)
    return out
