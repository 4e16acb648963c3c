"""Plan manifests: which stages a sweep's current plan holds, so results show the frontier of the current spec.

A spec that changes (a sparsity added to an LTR chain, a method dropped) leaves rows in the store whose stages
are no longer planned. They are kept, never deleted, but they must not be averaged with the current ones: an
inserted LTR level gives the rest of the chain new keys, and the old chain's rows would double-count seeds.
`submit` records the plan it runs under `plans/sweep=<s>/plan-<ns>-<token>.parquet` (only when the plan
changed); the newest manifest is the current plan, and rows whose stage is not in it are `superseded`.
"""
from __future__ import annotations

import hashlib
import time
import uuid

import pyarrow.fs as pafs

from orchestrator.spec.plan import Plan
from orchestrator.store.layout import classify, layout_dir, layout_path
from orchestrator.store.results_store import ResultsStore
from orchestrator.store.schemas import PLANS, to_table

DIGEST_KEY = b"ticketsweep.plan_digest"


def digest(keys) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def _latest(store: ResultsStore, sweep: str):
    """The newest manifest of the sweep (names sort by the time they were written), or None."""
    files = [f for f in store.list_dir(layout_dir(store.root, "plan", sweep=sweep))
             if f.type == pafs.FileType.File and classify(store.rel(f.path), False)[0] == "plan"]
    return max(files, key=lambda f: f.base_name) if files else None


def record(store: ResultsStore, plan: Plan) -> bool:
    """Write the plan's manifest unless the newest one already lists exactly its stages. True if written."""
    import pyarrow.parquet as pq

    want = digest(plan.stages)
    latest = _latest(store, plan.sweep)
    if latest is not None:
        with store.fs.open_input_file(latest.path) as f:
            if (pq.read_metadata(f).metadata or {}).get(DIGEST_KEY, b"").decode() == want:
                return False
    now = time.time()
    from datetime import datetime, timezone

    planned_at = datetime.fromtimestamp(now, timezone.utc)
    rows = [{"stage_key": k, "kind": s.kind, "method": s.meta.get("method"),
             "target_sparsity": s.params.get("target_sparsity"), "seed": s.seed,
             "requested": s.meta.get("requested", True), "planned_at": planned_at} for k, s in plan.stages.items()]
    table = to_table(rows, PLANS).replace_schema_metadata({DIGEST_KEY: want})
    path = layout_path(store.root, "plan", sweep=plan.sweep, attempt=f"{time.time_ns():020d}",
                       token=uuid.uuid4().hex[:8])
    store.put_table(path, table, small=False)
    return True


def current_keys(store: ResultsStore, sweep: str) -> set[str] | None:
    """The stage keys of the sweep's newest recorded plan; None if no plan was ever recorded."""
    import pyarrow.parquet as pq

    latest = _latest(store, sweep)
    if latest is None:
        return None
    with store.fs.open_input_file(latest.path) as f:
        return set(pq.read_table(f, columns=["stage_key"]).column("stage_key").to_pylist())


def mark_superseded(points, keys_by_sweep: dict[str, set[str] | None]):
    """`points` with a boolean `superseded` column: the row's stage is not in its sweep's current plan (False
    for a sweep with no recorded plan)."""
    out = points.copy()
    superseded = [False] * len(out)
    sweeps, stage_keys = out["sweep"].astype(str).tolist(), out["stage_key"].astype(str).tolist()
    for i, (sweep, key) in enumerate(zip(sweeps, stage_keys)):
        keys = keys_by_sweep.get(sweep)
        superseded[i] = keys is not None and key not in keys
    out["superseded"] = superseded
    return out
