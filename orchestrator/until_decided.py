"""`submit --until-decided`: run a sweep look by look, adding seeds until every comparison is decided.

Look k runs the first n_k seeds of the spec (only the stages not stored yet), then analyses every undecided
comparison (orchestrator/sequential.py) on the correct-test-example counts of those seeds and writes the look's
decision log (orchestrator/decision_log.py). A decided comparison is frozen; a method whose comparisons are all
decided gets no further seeds (the reference always does, while anything is undecided). The run stops when
every comparison is decided or the last look (the seed budget) is analysed.

Deterministic and resumable: what a look runs and decides depends only on the spec and on the stored results
of its seeds, never on when the driver ran. A driver killed during a look leaves finished stages stored and
no log for that look; submitting again skips the stored stages and looks, re-checks each stored look against
the stored results (a mismatch stops the run: the data under a decision changed), and continues. A look whose
stages failed or diverged is not decided: the run stops with exit 1 and the pairs that are missing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from orchestrator import decision_log as dlog
from orchestrator import sequential
from orchestrator.plan import Plan, build_plan
from orchestrator.spec import SweepSpec
from orchestrator.store import ResultsStore

_TARGET_DIGITS = 9


class NotDecidable(RuntimeError):
    """A look cannot be analysed (pairs missing after its stages ran); one line."""


@dataclass(frozen=True)
class Comparison:
    method_a: str
    method_b: str
    target: float

    @property
    def key(self) -> tuple[str, str, float]:
        return self.method_a, self.method_b, round(self.target, _TARGET_DIGITS)


def comparisons(spec: SweepSpec) -> list[Comparison]:
    block = spec.until_decided
    targets = [round(t, _TARGET_DIGITS) for t in (block.sparsities or spec.target_sparsities())]
    return [Comparison(block.reference, m, t) for m in block.methods for t in sorted(set(targets))]


def design(spec: SweepSpec) -> dict:
    """What the decisions depend on besides the data; a stored log made under another design is not continued."""
    block = spec.until_decided
    family = comparisons(spec)
    return {"reference": block.reference, "methods": list(block.methods),
            "sparsities": sorted({c.target for c in family}), "looks": list(block.looks), "alpha": block.alpha,
            "family": len(family), "correction": "bonferroni", "spending": "obrien-fleming (lan-demets)",
            "statistic": "sum of paired differences of correct test examples (selected_test_accuracy)",
            "seeds": list(spec.seeds)}


def n_test_examples(spec: SweepSpec) -> int:
    """How many test examples the sweep's accuracies are fractions of.

    Integration note: where the points carry `selected_test_correct`/`test_examples` (issue 25's count
    columns), `correct_counts` reads those first; this is the fallback for rows written without them."""
    return spec.dataset.test_size()


def correct_counts(rows, spec: SweepSpec) -> np.ndarray:
    """The correct test examples behind each row's selected_test_accuracy, as int64: the store's count column
    when the rows have one, else the accuracy times the test-set size, which must be an integer (to 1e-6), or
    the counts would be guesses."""
    import pandas as pd

    if "selected_test_correct" in rows.columns and rows["selected_test_correct"].notna().all():
        return rows["selected_test_correct"].to_numpy(dtype=np.int64)
    acc = pd.to_numeric(rows["selected_test_accuracy"], errors="coerce").to_numpy(dtype=float)
    n = (rows["test_examples"].to_numpy(dtype=float) if "test_examples" in rows.columns
         and rows["test_examples"].notna().all() else np.full(acc.shape, float(n_test_examples(spec))))
    exact = acc * n
    counts = np.round(exact)
    bad = ~np.isfinite(exact) | (np.abs(exact - counts) > 1e-6)
    if bad.any():
        i = int(np.argmax(bad))
        raise NotDecidable(f"selected_test_accuracy {float(acc[i])!r} of {n[i]:g} test examples is not a count of "
                           f"correct examples (stage {rows['stage_key'].iloc[i]})")
    return counts.astype(np.int64)


def active_methods(spec: SweepSpec, undecided: list[Comparison]) -> list[str]:
    """The methods a look runs new seeds for: the reference, and every method with an undecided comparison."""
    wanted = {spec.until_decided.reference} | {c.method_b for c in undecided}
    return [m.label() for m in spec.methods if m.label() in wanted]


def look_plan(spec: SweepSpec, blocks: list[tuple[int, list[str]]]) -> Plan:
    """The plan of the looks so far: block j = (n_j, methods) runs seeds n_{j-1}..n_j - 1 of the spec for those
    methods. Stage keys are content hashes, so a stage shared by blocks (a tune stage) is planned once."""
    stages: dict = {}
    start, plan = 0, None
    for n, methods in blocks:
        chosen = [m for m in spec.methods if m.label() in methods]
        part = build_plan(spec.model_copy(update={"seeds": spec.seeds[start:n], "methods": chosen,
                                                  "until_decided": None}))
        for key, stage in part.stages.items():
            stages.setdefault(key, stage)
        plan, start = part, n
    return Plan(spec.name, plan.config, stages)


def paired_differences(points, plan: Plan, spec: SweepSpec, family: list[Comparison], n: int) -> np.ndarray:
    """(comparisons x n) int64: correct examples of B minus A on the first n seeds of the spec, from the finished
    rows of this plan's stages. Raises NotDecidable naming what is missing."""
    from orchestrator.report import finished

    seeds = list(spec.seeds[:n])
    df = finished(points[points["stage_key"].astype(str).isin(set(plan.stages))], all_levels=False)
    df = df.assign(_target=df["target_sparsity"].round(_TARGET_DIGITS), _seed=df["seed"].astype(np.int64))
    methods = {c.method_a for c in family} | {c.method_b for c in family}
    df = df[df["_seed"].isin(seeds) & df["method"].isin(methods)]
    df = df.assign(_count=correct_counts(df, spec)) if len(df) else df.assign(_count=np.zeros(0, np.int64))
    table = {(m, t, s): c for m, t, s, c in zip(df["method"], df["_target"], df["_seed"], df["_count"])}
    out = np.zeros((len(family), n), dtype=np.int64)
    missing = []
    for i, c in enumerate(family):
        for j, seed in enumerate(seeds):
            a, b = table.get((c.method_a, c.target, seed)), table.get((c.method_b, c.target, seed))
            if a is None or b is None:
                missing.append(f"{c.method_a if a is None else c.method_b} at {c.target:g} seed {seed}")
                continue
            out[i, j] = b - a
    if missing:
        raise NotDecidable(f"{len(missing)} result(s) missing, so the look cannot be decided: "
                           + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    return out


def analyse(diffs: np.ndarray, family: list[Comparison], looks: list[int], k: int, spec: SweepSpec,
            n_test: int) -> list[dict]:
    """The records of look k (0-based) for the comparisons in `family` (undecided before it), their rows of
    differences holding the first looks[k] seeds."""
    from orchestrator.stats import t_bounds

    block = spec.until_decided
    level = block.alpha / len(comparisons(spec))
    paths = sequential.evaluate(diffs, looks, level)
    budget = k == len(looks) - 1
    records = []
    for i, c in enumerate(family):
        if paths.crossed[i, :k].any():
            raise dlog.DecisionLogError(
                f"{c.method_b} vs {c.method_a} at {c.target:g}: the stored results cross a boundary at look "
                f"{int(paths.decided_look[i]) + 1}, but the stored log left it undecided there: the results changed")
        crossed = bool(paths.crossed[i, k])
        s = int(paths.sums[i, k])
        acc_diff = diffs[i] / n_test
        mean = float(acc_diff.mean())
        low, high = (t_bounds(mean, float(acc_diff.std(ddof=1)), acc_diff.size, 1.0 - level)
                     if acc_diff.size >= 2 else (math.nan, math.nan))
        boundary = int(paths.boundary[i, k])
        records.append({
            "method_a": c.method_a, "method_b": c.method_b, "target_sparsity": c.target, "look": k + 1,
            "seeds": int(looks[k]),
            "status": dlog.DECIDED if crossed else (dlog.AT_BUDGET if budget else dlog.UNDECIDED),
            "verdict": sequential.verdict(s) if crossed else None, "sum_diff": s, "test_examples": int(n_test),
            "mean_diff": mean, "ci_low": None if math.isnan(low) else float(low),
            "ci_high": None if math.isnan(high) else float(high),
            "boundary": None if boundary < 0 else boundary, "alpha_level": level,
            "alpha_cumulative": float(paths.alpha_cumulative[k]), "alpha_spent": float(paths.alpha_spent[i, k]),
            "p_look": float(paths.p_look[i, k]), "p_stagewise": float(paths.p_stagewise[i, k])})
    return records


_CHECKED = ("status", "verdict", "sum_diff", "boundary", "seeds")


@dataclass
class Outcome:
    looks_run: list[int] = field(default_factory=list)   # looks analysed by this call (1-based)
    log: dlog.LogState | None = None
    seconds: float = 0.0
    stages_ran: int = 0


def run(spec: SweepSpec, store: ResultsStore, run_look, echo=print) -> Outcome:
    """Run and decide look by look. `run_look(plan)` runs the plan's missing stages and returns its RunSummary
    (driver.run_plan with the CLI's options); a summary with failures stops the run (NotDecidable)."""
    import time

    block = spec.until_decided
    looks, family, wanted = list(block.looks), comparisons(spec), design(spec)
    stored = dlog.read_looks(store, spec.name)
    if stored and stored[0]["design"] != wanted:
        raise dlog.DecisionLogError(f"{dlog.look_path(store, spec.name, 1)}: the stored decisions were made under "
                                    f"another until_decided design or seeds; use a new sweep name to start over")
    idle = idle_looks(looks, block.alpha / len(family))
    if idle and not stored:
        echo(f"note: at alpha {block.alpha:g} / {len(family)} comparisons, the look(s) at "
             f"{', '.join(str(n) for n, _ in idle)} seeds cannot decide anything (the alpha spent there, "
             f"{', '.join(f'{a:.2g}' for _, a in idle)}, is below 2/2^n, the smallest exact p); they only run seeds")
    outcome, t0 = Outcome(), time.perf_counter()
    undecided, blocks = list(family), []
    for k, n in enumerate(looks):
        if not undecided:
            break
        blocks.append((n, active_methods(spec, undecided)))
        plan = look_plan(spec, blocks)
        if k >= len(stored):
            summary = run_look(plan)
            outcome.stages_ran += summary.ran
            problems = summary.failed + summary.diverged + summary.not_retried + summary.skipped_after_failure
            if problems:
                raise NotDecidable(f"look {k + 1} ({n} seeds): {summary.failed} stage(s) failed, {summary.diverged} "
                                   f"diverged, {summary.not_retried + summary.skipped_after_failure} not run after a "
                                   f"failure or divergence; nothing decided at this look"
                                   + "".join(f"\n  {f}" for f in summary.failures[:5]))
        points = store.read("points", spec.name)
        if points.empty:
            raise NotDecidable(f"look {k + 1}: no results stored for sweep {spec.name}")
        diffs = paired_differences(points, plan, spec, undecided, n)
        n_test = n_test_examples_of(points, plan, spec)
        records = analyse(diffs, undecided, looks, k, spec, n_test)
        if k < len(stored):
            _check_stored(stored[k], records, store, spec.name)
        else:
            record = {"version": dlog.LOG_VERSION, "look": k + 1, "design": wanted, "seeds_used": n,
                      "seeds": list(spec.seeds[:n]), "methods_run": blocks[-1][1], "comparisons": records,
                      "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            dlog.write_look(store, spec.name, record)
            outcome.looks_run.append(k + 1)
            stored.append(record)
            decided = [r for r in records if r["status"] == dlog.DECIDED]
            echo(f"look {k + 1} ({n} seeds): {len(decided)} of {len(records)} undecided comparison(s) decided"
                 + "".join(f"; {r['method_b']} vs {r['method_a']} at {r['target_sparsity']:g}: {r['verdict']}"
                           for r in decided))
        undecided = [c for c, r in zip(undecided, records) if r["status"] == dlog.UNDECIDED]
    outcome.log = dlog.state(stored)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def idle_looks(looks: list[int], level: float) -> list[tuple[int, float]]:
    """(seeds, cumulative alpha) of the looks at which no data can cross: 2 / 2^n > alpha(t_k)."""
    return [(n, float(a)) for n, a in zip(looks, sequential.cumulative_alpha(looks, level)) if 2.0 / 2 ** n > a]


def n_test_examples_of(points, plan: Plan, spec: SweepSpec) -> int:
    """The test-set size behind the accuracies (a column of the rows where present, else the dataset's)."""
    if "test_examples" in points.columns:
        values = points.loc[points["stage_key"].astype(str).isin(set(plan.stages)), "test_examples"].dropna()
        if len(values) and values.nunique() == 1:
            return int(values.iloc[0])
    return n_test_examples(spec)


def _check_stored(stored: dict, records: list[dict], store: ResultsStore, sweep: str) -> None:
    """A stored look must be what the stored results give: else a decision would change silently."""
    want = {dlog.comparison_id(r): {f: r[f] for f in _CHECKED} for r in stored["comparisons"]}
    got = {dlog.comparison_id(r): {f: r[f] for f in _CHECKED} for r in records}
    if want != got:
        changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise dlog.DecisionLogError(f"{dlog.look_path(store, sweep, stored['look'])}: the stored results no longer "
                                    f"give this look's decisions (e.g. {changed[0][1]} vs {changed[0][0]} at "
                                    f"{changed[0][2]:g}): the results changed after it was decided")
