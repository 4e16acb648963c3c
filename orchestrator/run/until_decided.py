"""`submit --until-decided`: run a sweep look by look, adding seeds until every comparison is decided.

Look k runs the first n_k seeds of the spec (only the stages not stored yet), then analyses every undecided
comparison (orchestrator/analysis/sequential.py) on the correct-test-example counts of those seeds and writes the look's
decision log (orchestrator/analysis/decision_log.py). A decided comparison is frozen; a method whose comparisons are all
decided gets no further seeds (the reference always does, while anything is undecided). The run stops when
every comparison is decided or the last look (the seed budget) is analysed.

Deterministic and resumable: what a look runs and decides depends only on the spec and on the stored results
of its seeds, never on when the driver ran. A driver killed during a look leaves finished stages stored and
no log for that look; submitting again skips the stored stages and looks, re-checks each stored look against
the stored results (a mismatch stops the run: the data under a decision changed), and continues.

Failures count, as in `compare` (the seeds are paired by compare.paired_counts): a seed whose run diverged, or
was skipped after a divergence, counts at chance accuracy (until_decided.failures: chance, the default) or is
left out (exclude: a zero difference, which has no sign to flip). A stage that failed with an error is a
fault, not a result: a resubmit runs it again, so deciding on it could not stay frozen; the look is not
decided and the run stops with exit 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from orchestrator.analysis import decision_log as dlog
from orchestrator.analysis import sequential
from orchestrator.spec.plan import Plan, build_plan
from orchestrator.spec.sweep_spec import SweepSpec
from orchestrator.store.results_store import ResultsStore

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
            "family": len(family), "failures": block.failures, "correction": "bonferroni",
            "spending": "obrien-fleming (lan-demets)",
            "statistic": "sum of paired differences of correct test examples (selected_test_accuracy)",
            "seeds": list(spec.seeds)}


def n_test_examples(spec: SweepSpec) -> int:
    """How many test examples the sweep's accuracies are fractions of, from the dataset's descriptor: for rows
    written without `test_examples` (the count columns are read first)."""
    return spec.dataset.test_size()


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


@dataclass(frozen=True)
class Differences:
    """The paired differences a look decides on: diffs (comparisons x seeds, int64) of correct test examples,
    B minus A, each row out of units[i] examples (the test-set size; scaled where a failed seed's chance count
    is not a whole number of examples: stats.counts_with_failures); failed_a/failed_b: seeds that failed,
    diverged or were skipped on each side (at chance, or left out as a zero difference: until_decided.failures)."""
    diffs: np.ndarray
    units: np.ndarray
    failed_a: np.ndarray
    failed_b: np.ndarray


def paired_differences(points, plan: Plan, spec: SweepSpec, family: list[Comparison], n: int) -> Differences:
    """The first n seeds of the spec, from this plan's stages, paired as `compare` pairs them
    (compare.paired_counts: the same counts, the same failed seeds at chance or left out). A seed left out
    (failures: exclude) is a zero difference: it has no sign to flip, so the test is the one without it.
    Raises NotDecidable naming what is missing."""
    import pandas as pd

    from orchestrator.analysis.compare import CompareError, paired_counts

    seeds = list(spec.seeds[:n])
    rows = points[points["stage_key"].astype(str).isin(set(plan.stages))]
    rows = rows[pd.to_numeric(rows["seed"], errors="coerce").isin(seeds)]
    rows = _with_test_examples(rows, spec)
    policy = spec.until_decided.failures
    pairs: dict[tuple[str, str], dict[float, object]] = {}
    out = np.zeros((len(family), n), dtype=np.int64)
    units, failed_a, failed_b = (np.zeros(len(family), dtype=np.int64) for _ in range(3))
    missing = []
    for i, c in enumerate(family):
        if (c.method_a, c.method_b) not in pairs:
            try:
                found = paired_counts(rows, c.method_a, c.method_b, failures=policy) if len(rows) else []
            except CompareError as err:
                raise NotDecidable(f"{c.method_b} vs {c.method_a}: {err}") from None
            pairs[c.method_a, c.method_b] = {round(p.target, _TARGET_DIGITS): p for p in found}
        got = pairs[c.method_a, c.method_b].get(c.target)
        if got is None:
            missing.append(f"{c.method_b} vs {c.method_a} at {c.target:g}: no seed")
            continue
        if got.count_a is None or got.why:
            raise NotDecidable(f"{c.method_b} vs {c.method_a} at {c.target:g}: {got.why}")
        count_a, count_b = got.count_a, got.count_b
        index = {s: j for j, s in enumerate(got.seeds)}
        for j, seed in enumerate(seeds):
            if seed in index:
                out[i, j] = count_b[index[seed]] - count_a[index[seed]]
            elif seed not in got.left_out:  # left out: a zero difference
                missing.append(f"{c.method_b} vs {c.method_a} at {c.target:g} seed {seed}")
        # no unit when every seed was left out (all differences zero): the dataset's test-set size
        units[i], failed_a[i], failed_b[i] = got.unit or n_test_examples(spec), got.failed_a, got.failed_b
    if missing:
        raise NotDecidable(f"{len(missing)} result(s) missing, so the look cannot be decided: "
                           + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    return Differences(out, units, failed_a, failed_b)


def _with_test_examples(rows, spec: SweepSpec):
    """Rows that finished without `test_examples` (written before the count columns) get the dataset's."""
    import pandas as pd

    have = rows["test_examples"] if "test_examples" in rows.columns else pd.Series(np.nan, index=rows.index)
    if have[rows["status"].astype(str) == "ok"].notna().all():
        return rows
    return rows.assign(test_examples=have.fillna(n_test_examples(spec)))


def analyse(pairs: Differences, family: list[Comparison], looks: list[int], k: int, spec: SweepSpec) -> list[dict]:
    """The records of look k (0-based) for the comparisons in `family` (undecided before it), their rows of
    differences holding the first looks[k] seeds."""
    from orchestrator.analysis.stats import t_bounds

    block = spec.until_decided
    level = block.alpha / len(comparisons(spec))
    diffs = pairs.diffs
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
        acc_diff = diffs[i] / pairs.units[i]
        mean = float(acc_diff.mean())
        low, high = (t_bounds(mean, float(acc_diff.std(ddof=1)), acc_diff.size, 1.0 - level)
                     if acc_diff.size >= 2 else (math.nan, math.nan))
        boundary = int(paths.boundary[i, k])
        records.append({
            "method_a": c.method_a, "method_b": c.method_b, "target_sparsity": c.target, "look": k + 1,
            "seeds": int(looks[k]),
            "status": dlog.DECIDED if crossed else (dlog.AT_BUDGET if budget else dlog.UNDECIDED),
            "verdict": sequential.verdict(s) if crossed else None, "sum_diff": s,
            "test_examples": int(pairs.units[i]), "failed_a": int(pairs.failed_a[i]),
            "failed_b": int(pairs.failed_b[i]), "mean_diff": mean, "ci_low": None if math.isnan(low) else float(low),
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
    diverged: int = 0                                   # stages that diverged in this call


def run(spec: SweepSpec, store: ResultsStore, run_look, echo=print) -> Outcome:
    """Run and decide look by look. `run_look(plan)` runs the plan's missing stages and returns its RunSummary
    (driver.run_plan with the CLI's options). A look whose stages diverged is decided with those seeds per
    until_decided.failures (at chance, or left out), as `compare` counts them; one whose stages failed with an
    error stops the run (NotDecidable)."""
    import time

    block = spec.until_decided
    looks, family, wanted = list(block.looks), comparisons(spec), design(spec)
    stored = dlog.read_looks(store, spec.name)
    # Logs written before `failures` was a design field never decided a look with a failed seed: either holds.
    if stored and {"failures": wanted["failures"], **stored[0]["design"]} != wanted:
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
            outcome.diverged += summary.diverged
            if summary.failed:
                raise NotDecidable(f"look {k + 1} ({n} seeds): {summary.failed} stage(s) failed with an error, "
                                   f"{summary.skipped_after_failure} skipped after a failure; nothing decided at "
                                   f"this look (an error is a fault, not a result: submitting again runs them "
                                   f"again, which a frozen decision could not follow)"
                                   + "".join(f"\n  {f}" for f in summary.failures[:5]))
            lost = summary.diverged + summary.skipped_after_failure + summary.not_retried
            if lost:
                echo(f"look {k + 1} ({n} seeds): {summary.diverged} stage(s) diverged, "
                     f"{summary.skipped_after_failure + summary.not_retried} not run after a divergence: "
                     + ("counted at chance accuracy" if block.failures == "chance" else "left out")
                     + f" (until_decided.failures: {block.failures})")
        points = store.read("points", spec.name)
        if points.empty:
            raise NotDecidable(f"look {k + 1}: no results stored for sweep {spec.name}")
        records = analyse(paired_differences(points, plan, spec, undecided, n), undecided, looks, k, spec)
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


def _check_stored(stored: dict, records: list[dict], store: ResultsStore, sweep: str) -> None:
    """A stored look must be what the stored results give: else a decision would change silently."""
    want = {dlog.comparison_id(r): {f: r[f] for f in _CHECKED} for r in stored["comparisons"]}
    got = {dlog.comparison_id(r): {f: r[f] for f in _CHECKED} for r in records}
    if want != got:
        changed = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise dlog.DecisionLogError(f"{dlog.look_path(store, sweep, stored['look'])}: the stored results no longer "
                                    f"give this look's decisions (e.g. {changed[0][1]} vs {changed[0][0]} at "
                                    f"{changed[0][2]:g}): the results changed after it was decided")
