"""Runs a plan on Ray: a pool of trial actors, a ready queue, retries, progress, failure isolation.

Stage outputs travel to dependants as Ray object references (no shared disk needed
between nodes); they are also persisted by the actor under <store>/artifacts so a
later submit resumes from them. The driver writes every results row, the stage row
last, so a stage counts as done only once everything it produced is durable.
"""
from __future__ import annotations

import heapq
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import ray
from ray.exceptions import ActorDiedError, RayActorError
from tqdm import tqdm

from orchestrator import artifacts
from orchestrator.plan import Plan, Stage
from orchestrator.spec import SweepSpec
from orchestrator.store import ResultsStore
from orchestrator.versions import versions_json

ARTIFACT = "artifact:"  # marks an input that the actor loads from the store instead of the object store


def _now() -> datetime:
    return datetime.now(timezone.utc)


class TrialActorBody:
    """A long-lived trial process: imports torch once and keeps datasets on its device between stages."""

    def __init__(self, num_cpus: float, gpu_fraction: float, store_location: str):
        import torch

        torch.set_num_threads(max(1, int(num_cpus)))
        self.device = "cpu"
        if gpu_fraction > 0 and torch.cuda.is_available():
            self.device = "cuda"
            # Fractional GPUs pack several trials on one card: keep each within its share.
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_fraction))
        self.store_location = store_location
        self.datasets: dict[str, object] = {}
        self.host = socket.gethostname()

    def _dataset(self, cfg: dict):
        from workers.data import load_dataset

        name = json.dumps(cfg, sort_keys=True)
        if name not in self.datasets:
            self.datasets[name] = load_dataset(cfg["name"], cfg.get("root"), **cfg.get("options", {})).to(self.device)
        return self.datasets[name]

    def run(self, payload: dict, roles: list[str], *parent_outputs):
        """Returns (meta, outputs); a stage exception becomes a failure meta, so the actor lives on."""
        from workers.stages import run_stage

        started = _now()
        meta = {"host": self.host, "device": self.device, "started_at": started}
        try:
            inputs = {}
            for role, out in zip(roles, parent_outputs):
                if isinstance(out, str) and out.startswith(ARTIFACT):
                    out = artifacts.load(self.store_location, out[len(ARTIFACT):])
                inputs[role] = out
            data = self._dataset(payload["config"]["dataset"])
            result = run_stage(payload, inputs, data)
            artifacts.save(self.store_location, payload["key"], result.outputs)
        except Exception as err:  # noqa: BLE001 - any stage error becomes a failure row
            meta.update(status="failed", error_type=type(err).__name__, error=str(err)[:2000],
                        finished_at=_now(), seconds=(_now() - started).total_seconds())
            return meta, None
        meta.update(status="ok", finished_at=_now(), seconds=result.seconds, point=result.point,
                    curve=result.curve, search_seconds=result.search_seconds,
                    retrain_seconds=result.retrain_seconds, info=result.info)
        return meta, result.outputs


TrialActor = ray.remote(TrialActorBody)


@dataclass
class RunSummary:
    planned: int
    skipped_done: int
    ran: int = 0
    failed: int = 0
    skipped_after_failure: int = 0
    seconds: float = 0.0
    dashboard_url: str | None = None
    failures: list[str] = field(default_factory=list)


def connect(address: str | None) -> str | None:
    """Join a cluster (address or RAY_ADDRESS) or start a local one with the dashboard; returns its URL."""
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, log_to_driver=False)
    else:
        ctx = ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    return _dashboard_url(ctx)


def _dashboard_url(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    if url and not url.startswith("http"):
        url = "http://" + url
    return url


class ResourceError(ValueError):
    """The cluster cannot place even one trial actor; the message names the spec field."""


def check_resources(spec: SweepSpec, available: dict) -> None:
    """Fail fast instead of waiting forever for an actor no node can host."""
    res = spec.resources
    for field_name, need, kind in (("cpus_per_trial", res.cpus_per_trial, "CPU"),
                                   ("gpus_per_trial", res.gpus_per_trial, "GPU")):
        if need > available.get(kind, 0):
            raise ResourceError(f"resources.{field_name}: a trial needs {need:g} {kind}, "
                                f"the cluster has {available.get(kind, 0):g}")


class _Runner:
    def __init__(self, plan: Plan, spec: SweepSpec, store: ResultsStore, progress: bool):
        self.plan, self.spec, self.store = plan, spec, store
        self.res = spec.resources
        stages = store.read("stages", plan.sweep)
        self.attempts = stages.groupby("stage_key")["attempt"].max().astype(int).to_dict()
        ok = stages[stages["status"] == "ok"]
        self.done = set(ok["stage_key"]) & set(plan.stages)
        self.seconds = {k: float(v) for k, v in zip(ok["stage_key"], ok["seconds"]) if k in plan.stages}
        points = store.read("points", plan.sweep)
        ok = points[(points["status"] == "ok") & (points["method"] == "dense")]
        self.dense_accuracy = dict(zip(ok["stage_key"], ok["test_accuracy"].astype(float)))
        self.todo = [k for k in plan.stages if k not in self.done]
        self.progress = progress
        self.versions = versions_json()
        self.actors: list = []

    def _new_actor(self):
        options = TrialActor.options(name=f"trial-{len(self.actors) + 1}-{os.getpid()}", max_restarts=0,
                                     num_cpus=self.res.cpus_per_trial, num_gpus=self.res.gpus_per_trial)
        self.actors.append(options.remote(self.res.cpus_per_trial, self.res.gpus_per_trial, self.store.location))
        return self.actors[-1]

    def run(self) -> RunSummary:
        plan = self.plan
        summary = RunSummary(planned=len(plan.stages), skipped_done=len(self.done))
        if not self.todo:
            return summary
        t0 = time.perf_counter()
        children = plan.children()
        priority = plan.remaining_path()
        waiting = {k: sum(1 for p in set(plan.stages[k].parents.values()) if p not in self.done) for k in self.todo}
        outputs: dict[str, object] = {k: ARTIFACT + k for k in self.done}
        ready = [(-priority[k], i, k) for i, k in enumerate(self.todo) if waiting[k] == 0]
        heapq.heapify(ready)
        n_actors = min(self.res.max_concurrent, len(self.todo))
        idle = [self._new_actor() for _ in range(n_actors)]
        inflight: dict = {}
        retries: dict[str, int] = {}
        dead: set[str] = set()
        bar = tqdm(total=len(self.todo), desc=f"sweep {plan.sweep}", unit="stage", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True)

        def dispatch() -> None:
            while ready and idle:
                _, _, key = heapq.heappop(ready)
                actor = idle.pop()
                stage = plan.stages[key]
                parents = [outputs[stage.parents[r]] for r in stage.inputs]
                meta_ref, out_ref = actor.run.options(num_returns=2, name=stage.label).remote(
                    stage.payload(plan.config), list(stage.inputs), *parents)
                inflight[meta_ref] = (key, actor, out_ref)

        try:
            while ready or inflight:
                dispatch()
                done_refs, _ = ray.wait(list(inflight), num_returns=1)
                key, actor, out_ref = inflight.pop(done_refs[0])
                try:
                    meta = ray.get(done_refs[0])
                except (RayActorError, ActorDiedError) as err:
                    actor = self._new_actor()
                    retries[key] = retries.get(key, 0) + 1
                    if retries[key] <= self.res.max_retries:
                        heapq.heappush(ready, (-priority[key], -retries[key], key))
                        idle.append(actor)
                        continue
                    meta = {"status": "failed", "error_type": type(err).__name__,
                            "error": f"trial actor died {retries[key]} times: {str(err).splitlines()[0]}",
                            "started_at": _now(), "finished_at": _now(), "seconds": 0.0, "host": None, "device": None}
                idle.append(actor)
                if meta["status"] == "ok":
                    summary.ran += 1
                    self.done.add(key)
                    outputs[key] = out_ref
                    for child in children[key]:
                        if child in waiting and child not in dead:
                            waiting[child] -= 1
                            if waiting[child] == 0:
                                heapq.heappush(ready, (-priority[child], 0, child))
                # Hand out new work before writing the store, so trial actors never wait on the driver's I/O.
                dispatch()
                self._record(key, meta)
                bar.update(1)
                bar.set_postfix_str(plan.stages[key].label, refresh=False)
                if meta["status"] != "ok":
                    summary.failed += 1
                    summary.failures.append(f"{plan.stages[key].label}: {meta['error_type']}: {meta['error']}")
                    for d in self._descendants(key, children):
                        if d not in dead and d not in self.done:
                            dead.add(d)
                            self._record(d, {"status": "skipped", "error_type": "ParentFailed",
                                             "error": f"parent {plan.stages[key].label} failed",
                                             "started_at": _now(), "finished_at": _now(), "seconds": 0.0,
                                             "host": None, "device": None})
                            summary.skipped_after_failure += 1
                            bar.update(1)
        finally:
            bar.close()
            # Also on Ctrl-C: free the cluster's CPUs/GPUs now, not when the handles are collected.
            for actor in self.actors:
                ray.kill(actor)
        summary.seconds = time.perf_counter() - t0
        return summary

    @staticmethod
    def _descendants(key: str, children: dict[str, list[str]]) -> set[str]:
        out, todo = set(), list(children[key])
        while todo:
            k = todo.pop()
            if k not in out:
                out.add(k)
                todo.extend(children[k])
        return out

    def _record(self, key: str, meta: dict) -> None:
        stage: Stage = self.plan.stages[key]
        self.attempts[key] = attempt = self.attempts.get(key, 0) + 1
        common = {k: meta.get(k) for k in ("host", "device", "status", "error_type", "error", "started_at", "finished_at")}
        if meta["status"] == "ok":
            self.seconds[key] = float(meta["seconds"])
        stage_row = {**common, "kind": stage.kind, "label": stage.label, "seed": stage.seed,
                     "parents": json.dumps(stage.parents, sort_keys=True), "seconds": meta.get("seconds")}
        points = []
        if stage.produces_point and meta["status"] != "skipped":
            point = dict(meta.get("point") or {"method": stage.meta["method"],
                                                 "target_sparsity": stage.params.get("target_sparsity", 0.0)})
            if stage.kind == "dense" and meta["status"] == "ok":
                self.dense_accuracy[key] = point["test_accuracy"]
            ancestors = self.plan.ancestors_for_cost(key)
            standalone = None
            if meta["status"] == "ok" and all(a in self.seconds for a in ancestors):
                standalone = self.seconds[key] + sum(self.seconds[a] for a in ancestors)
            point.update(common)
            point.update(
                point_key=_point_key(self.plan.sweep, stage), seed=stage.seed, level=stage.meta.get("level"),
                requested=stage.meta.get("requested", True), criterion=stage.params.get("criterion"),
                objective=stage.params.get("objective"),
                model=self.spec.model.name, dataset=self.spec.dataset.name,
                dense_test_accuracy=self.dense_accuracy.get(stage.parents.get("dense", key)),
                marginal_seconds=meta.get("seconds") if meta["status"] == "ok" else None,
                standalone_seconds=standalone, gpu_fraction=self.res.gpus_per_trial, versions=self.versions)
            points.append(point)
        self.store.write_stage(self.plan.sweep, key, attempt, stage_row, points,
                               [{**r, "seed": stage.seed} for r in meta.get("curve") or []])


def _point_key(sweep: str, stage: Stage) -> str:
    """Names the (method, sparsity, seed) point independently of code version and recipe details."""
    import hashlib
    ident = json.dumps([sweep, stage.meta.get("method"), stage.params.get("target_sparsity", 0.0), stage.seed])
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def run_plan(plan: Plan, spec: SweepSpec, store: ResultsStore, address: str | None = None,
             progress: bool = True, echo=print, preflight=None) -> RunSummary:
    """Run every stage of `plan` whose key is not already in `store`. Starts Ray only if there is work.

    `preflight()` runs only when there is work, before Ray starts or anything is written
    (the CLI checks the data root there).
    """
    runner = _Runner(plan, spec, store, progress)
    if not runner.todo:
        return RunSummary(planned=len(plan.stages), skipped_done=len(runner.done))
    if preflight is not None:
        preflight()
    url = connect(address)
    if url:
        echo(f"Ray dashboard: {url}  (token authentication: the token is in ~/.ray/auth_token)")
    check_resources(spec, ray.cluster_resources())
    store.check_writable()
    summary = runner.run()
    summary.dashboard_url = url
    return summary
