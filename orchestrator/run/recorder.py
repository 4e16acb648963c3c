"""Turns a finished stage attempt into its committed rows: the stage row, its result row, its curve, its log.

Costs live here: `marginal_seconds` is what this attempt took, `standalone_seconds` adds the ok seconds of
every ancestor on the stage's cost path (warm-up, the LTR chain, ...), as the papers count them;
`standalone_epochs` and `standalone_flops` sum the same stages' counted work (train + search; a tuned method's
tune stage, the sum of its trials' work, included as its seconds are), and are null when any of them has no
count (a store written before the counts, or a tune stage written before its trials counted theirs).
"""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone

from orchestrator.spec.plan import Plan, Stage
from orchestrator.store.health import StoreState
from orchestrator.spec.sweep_spec import SweepSpec
from orchestrator.store.schemas import WORK_COLUMNS, WORK_SUMMARY
from orchestrator.store.results_store import ResultsStore
from orchestrator.run.versions import versions_json
from orchestrator.spec import plugin_set

_COMMON = ("host", "device", "status", "error_type", "error", "started_at", "finished_at", "peak_rss_mb",
           "cuda_peak_mb", "cpu_model", "logical_cores", "gpu_model", "torch_threads", "load_start", "load_end")



def now() -> datetime:
    return datetime.now(timezone.utc)


def point_key(sweep: str, stage: Stage) -> str:
    """Names the (method, sparsity, seed) point independently of code version and recipe details."""
    ident = json.dumps([sweep, stage.meta.get("method"), stage.params.get("target_sparsity", 0.0), stage.seed])
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


class Recorder:
    def __init__(self, plan: Plan, spec: SweepSpec, store: ResultsStore, state: StoreState,
                 gpu_fraction: dict[str, float]):
        self.plan, self.spec, self.store = plan, spec, store
        self.attempts = dict(state.attempts)
        self.seconds = {k: v for k, v in state.ok_seconds.items() if k in plan.stages}
        self.work = {k: v for k, v in state.ok_work.items() if k in plan.stages}
        self.dense_accuracy = dict(state.dense_accuracy)
        self.gpu_fraction = gpu_fraction
        self.versions = versions_json()
        # Stages already done that run again only to restore a missing artifact: their rows exist already.
        self.restoring = set(state.ok_seconds) & set(plan.stages)

    def record(self, key: str, meta: dict) -> int:
        """Commit one attempt of stage `key`; returns its attempt number."""
        stage = self.plan.stages[key]
        self.attempts[key] = attempt = self.attempts.get(key, 0) + 1
        ok = meta["status"] == "ok"
        common = {k: meta.get(k) for k in _COMMON}
        work = {c: (meta.get("work") or {}).get(c) for c in WORK_COLUMNS} if ok else dict.fromkeys(WORK_COLUMNS)
        if ok:
            self.seconds[key] = float(meta["seconds"])
            self.work[key] = {c: work[c] for c in WORK_SUMMARY}
        method, target = stage.meta.get("method"), stage.params.get("target_sparsity")
        stage_row = {**common, "kind": stage.kind, "label": stage.label, "seed": stage.seed, "method": method,
                     "target_sparsity": target, "parents": json.dumps(stage.parents, sort_keys=True),
                     "seconds": meta.get("seconds"), **work}
        points, curve_rows = [], meta.get("curve") or []
        if key in self.restoring and ok:
            # A second ok row for the same point would count it twice; the first one already says it all.
            curve_rows, stage_row["error"] = [], "re-run to restore its missing artifact"
        elif stage.produces_point:
            # Failed, diverged and skipped attempts get a point row too (status says which): a comparison
            # counts a seed whose run never finished instead of losing it (orchestrator/analysis/compare.py).
            if stage.kind == "dense" and ok:
                self.dense_accuracy[key] = meta["point"]["selected_test_accuracy"]
            points.append(self.point_row(key, meta, {**common, **work}))
        curve = [{**r, "seed": stage.seed, "method": method, "target_sparsity": target, "label": stage.label}
                 for r in curve_rows]
        trials = [{**t, "method": method} for t in meta.get("trials") or []]
        self.store.commit(self.plan.sweep, key, attempt, stage_row, points, curve, log=meta.get("log"), trials=trials)
        return attempt

    def point_row(self, key: str, meta: dict, common: dict) -> dict:
        """The result row of one attempt, built here alone: what the stage measured (from the worker), what
        the plan says it is, what it cost, and where and with what it ran."""
        stage = self.plan.stages[key]
        ok = meta["status"] == "ok"
        measured = dict(meta.get("point") or {}) if ok else {}
        measurements = measured.pop("measurements", None)
        settings = stage.params.get("settings") or {}
        tuned = measured.pop("tuned", None)
        if tuned:  # the values the tuned stage ran with, not the untuned ones it was planned with
            settings = {**settings, **tuned}
        standalone = standalone_epochs = standalone_flops = None
        if ok:
            ancestors = self.plan.ancestors_for_cost(key)
            if all(a in self.seconds for a in ancestors):
                standalone = self.seconds[key] + sum(self.seconds[a] for a in ancestors)
            paid = [self.work.get(k) for k in (key, *sorted(ancestors))]
            if all(w is not None and None not in w.values() for w in paid):
                # fsum: exactly rounded whatever the order, so a rerun stores the same number to the last bit.
                standalone_epochs = math.fsum(w[c] for w in paid for c in ("train_epochs", "search_epochs"))
                standalone_flops = sum(w["train_flops"] + w["search_flops"] for w in paid)
        return {
            **measured, **common,
            "method": stage.meta.get("method"), "target_sparsity": stage.params.get("target_sparsity", 0.0),
            "point_key": point_key(self.plan.sweep, stage), "seed": stage.seed, "level": stage.meta.get("level"),
            "requested": stage.meta.get("requested", True), "criterion": settings.get("criterion"),
            "objective": settings.get("objective"), "model": self.spec.model.name, "dataset": self.spec.dataset.name,
            "dense_test_accuracy": self.dense_accuracy.get(stage.parents.get("dense", key)),
            "marginal_seconds": meta.get("seconds") if ok else None, "standalone_seconds": standalone,
            "standalone_epochs": standalone_epochs, "standalone_flops": standalone_flops,
            "gpu_fraction": self.gpu_fraction.get(key, 0.0), "versions": self._versions(stage),
            "settings": json.dumps(settings, sort_keys=True) if settings else None,
            "measurements": json.dumps(measurements, sort_keys=True) if measurements else None,
        }

    def _versions(self, stage: Stage) -> str:
        """The versions the row was produced with, and the plugins (with their identities) where it used any."""
        used = plugin_set.used_text(self.spec.plugin_manifest(), self.spec.model.name, self.spec.dataset.name,
                                    stage.params)
        return self.versions if used is None else json.dumps({**json.loads(self.versions), "plugins": used},
                                                             sort_keys=True)

    def skipped(self, key: str, cause_key: str, cause_status: str) -> None:
        cause = self.plan.stages[cause_key].label
        t = now()
        self.record(key, {"status": "skipped", "error_type": f"parent_{cause_status}",
                          "error": f"parent {cause} {cause_status}", "started_at": t, "finished_at": t,
                          "seconds": 0.0})
