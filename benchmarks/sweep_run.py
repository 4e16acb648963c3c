"""What every benchmark does first: run a spec (resumable) and read the points of its current plan."""
from __future__ import annotations

import time

from orchestrator.store import plan_manifests
from orchestrator.run.driver import run_plan
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import load_spec
from orchestrator.store.results_store import ResultsStore


def run_spec(spec_path: str, store_location: str | None = None):
    """(spec, store, plan, points): the sweep run to completion, its points with superseded rows marked."""
    spec = load_spec(spec_path)
    store = ResultsStore(store_location or spec.store)
    plan = build_plan(spec)
    t0 = time.perf_counter()
    summary = run_plan(plan, spec, store)
    print(f"{summary.ran} stages ran in {time.perf_counter() - t0:.0f} s ({summary.skipped_done} were stored, "
          f"{summary.failed} failed)\n")
    points = plan_manifests.mark_superseded(store.read("points", spec.name), {spec.name: set(plan.stages)})
    return spec, store, plan, points
