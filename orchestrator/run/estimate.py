"""A wall-clock estimate before a sweep runs (`validate`, `plan`), from what its finished stages took.

Each stage to run is priced at the median seconds of the sweep's own finished (ok) stages of the same kind and
method, else of the same kind whatever the method; only the sweep's own stages, because another sweep in the
store may train another model on other data. Stage-seconds become wall-clock time through the parallelism
(`resources.max_concurrent`, at most the stages to run), but never less than the longest chain of stages
that must run one after another (an LTR chain is sequential whatever the parallelism). With a stage kind
nothing finished has timed, there is no estimate, and the line says which kinds are missing.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from orchestrator.spec.plan import Plan
from orchestrator.run.progress import duration
from orchestrator.store.files import StoreError
from orchestrator.store.results_store import ResultsStore


@dataclass(frozen=True)
class Estimate:
    seconds: float        # wall-clock
    stage_seconds: float  # summed over the stages to run
    chain_seconds: float  # the longest chain of dependent stages to run
    parallel: int
    timed_from: int       # finished stages the prices come from


def stage_timings(store: ResultsStore, sweep: str) -> dict[tuple[str, str], list[float]]:
    """(kind, method) -> seconds of every ok attempt of the sweep (method "" for stages of no method)."""
    if sweep not in store.sweeps():
        return {}
    log = store.committed(sweep, ["stage_key", "kind", "method", "status", "seconds"]).table.to_pylist()
    out: dict[tuple[str, str], list[float]] = {}
    for row in log:
        if row["status"] == "ok" and row["seconds"] is not None:
            out.setdefault((row["kind"], row["method"] or ""), []).append(float(row["seconds"]))
    return out


def estimate(plan: Plan, todo: list[str], timings: dict[tuple[str, str], list[float]],
             parallel: int) -> Estimate | list[str]:
    """The estimate for running `todo`, or the stage kinds that no finished stage prices (sorted)."""
    by_kind: dict[str, list[float]] = {}
    for (kind, _), seconds in timings.items():
        by_kind.setdefault(kind, []).extend(seconds)
    price: dict[str, float] = {}
    missing = set()
    for key in todo:
        stage = plan.stages[key]
        seconds = timings.get((stage.kind, stage.meta.get("method") or "")) or by_kind.get(stage.kind)
        if seconds:
            price[key] = statistics.median(seconds)
        else:
            missing.add(stage.kind)
    if missing:
        return sorted(missing)
    chain: dict[str, float] = {}
    for key in plan.stages:  # topological order: every parent's chain is known before its child's
        if key in price:
            parents = [chain.get(p, 0.0) for p in set(plan.stages[key].parents.values())]
            chain[key] = price[key] + max(parents, default=0.0)
    total = sum(price.values())
    parallel = max(1, min(parallel, len(todo)))
    longest = max(chain.values(), default=0.0)
    return Estimate(max(total / parallel, longest), total, longest, parallel, sum(map(len, timings.values())))


def estimate_line(plan: Plan, store: ResultsStore, parallel: int, done: set[str] | None = None) -> str:
    """One line for `validate` and `plan`: the estimate for the stages the store lacks, or why there is none."""
    try:
        timings = stage_timings(store, plan.sweep)
        if done is None:
            done = store.done_keys(plan.sweep) if timings else set()
    except StoreError as err:
        return f"estimated time: none ({err})"
    todo = [k for k in plan.stages if k not in done]
    if not todo:
        return "estimated time: nothing to run (every stage is stored)"
    if not timings:
        return (f"estimated time: none yet: {store.location} holds no finished stage of sweep {plan.sweep} to "
                f"time (after a first submit, plan and validate estimate what is left)")
    found = estimate(plan, todo, timings, parallel)
    if isinstance(found, list):
        return (f"estimated time: none yet: no finished {', '.join(found)} stage of sweep {plan.sweep} in "
                f"{store.location} to time those stages by")
    return (f"estimated time: about {duration(found.seconds)} for {len(todo)} stage(s), {found.parallel} at once "
            f"(median seconds of the {found.timed_from} finished stages of this sweep by kind and method: "
            f"{duration(found.stage_seconds)} of stage time; the longest chain of dependent stages "
            f"{duration(found.chain_seconds)})")
