"""Runs a plan on Ray: checks what the store really holds, takes the sweep's lease, runs what is missing.

The pieces: `store.health` (what is done, what needs repair), `store.lease` (one driver per sweep),
`deploy.cluster` (a private Ray unless an address is given), `scheduler` (ready queue, actor pools, retries)
and `recorder` (one atomic commit per stage attempt, written off the loop's thread by `commit_thread`). Stage
outputs travel to dependants as Ray object references (or stay in the trial actor that holds them) and are
also persisted under <store>/artifacts by the actor, so a later submit resumes from them.
"""
from __future__ import annotations

import os
import sys
import time

import ray

from orchestrator.deploy import cluster
from orchestrator.store import health, plan_manifests
from orchestrator.store.lease import Lease
from orchestrator.spec.plan import Plan
from orchestrator.run import plugin_code
from orchestrator.run.recorder import Recorder
from orchestrator.run.scheduler import HangPolicy, KeptActors, RunSummary, Scheduler, Shape, descendants
from orchestrator.spec.sweep_spec import SweepSpec
from orchestrator.store.results_store import ResultsStore
from orchestrator.run.trial_actor import TrialActorBody
from orchestrator.tuning.search import TuneActorBody

TrialActor = ray.remote(TrialActorBody)
TuneActor = ray.remote(TuneActorBody)
# A sweep this many uncompacted commits deep is merged at the end of submit: reads then open a few files.
AUTO_COMPACT_FILES = 2000


def stage_shapes(plan: Plan, spec: SweepSpec) -> dict[str, Shape]:
    """Each stage's actor shape: its method's resources, else the spec's (shared stages use the spec's)."""
    by_method = {m.label(): spec.resources.shape(m.resources) for m in spec.methods}
    default = spec.resources.shape()
    return {k: by_method.get(str(s.meta.get("method", "")).split("+")[0], default) for k, s in plan.stages.items()}


def shapes_by_source(spec: SweepSpec) -> dict[str, Shape]:
    out = {"resources": spec.resources.shape()}
    for i, m in enumerate(spec.methods):
        if m.resources is not None:
            out[f"methods[{i}].resources"] = spec.resources.shape(m.resources)
    return out


def tune_actor_factory(spec: SweepSpec, store_location: str, runtime_env: dict | None = None):
    """Makes the actor of one tune stage: it holds no CPU or GPU itself (its Tune trials, each with the method's
    trial resources, do the work), so it can never keep its own trials from starting."""
    from orchestrator.spec.sweep_spec import spec_dict as as_dict

    spec_dict = as_dict(spec)

    def make(stage, shape: Shape):
        cpus, gpus, _ = shape
        # Its Tune trials inherit its runtime env, and with it the spec's plugin code.
        extra = {"runtime_env": runtime_env} if runtime_env else {}
        return TuneActor.options(name=f"tune-{stage.key[:8]}-{os.getpid()}", num_cpus=0, num_gpus=0,
                                 max_concurrency=2, max_restarts=0, **extra).remote(1, 0, store_location, spec_dict,
                                                                           (cpus, gpus))
    return make


def _todo(plan: Plan, state: health.StoreState, retry_diverged: bool) -> tuple[list[str], set[str]]:
    """Stages to run, and those held back because a stage they depend on diverged earlier."""
    blocked: set[str] = set()
    if not retry_diverged:
        children = plan.children()
        for key in state.diverged & set(plan.stages):
            blocked |= {key} | descendants(key, children)
    todo = [k for k in plan.stages if k not in state.done and k not in blocked]
    return todo, blocked


def _prepare(spec: SweepSpec, preflight, joining: bool, address: str | None, dashboard: bool, metrics: bool):
    """Before any stage runs: the input check, and the resources the stages need against what the cluster
    has. Joins a cluster we did not start (what it has is only known from inside it); a private one is
    checked against this machine, then started. Returns (dashboard url, whether we started Ray)."""
    if preflight is not None:
        preflight()
    if joining:
        url, started = cluster.connect(address, dashboard=dashboard, metrics=metrics)
        cluster.check_resources(shapes_by_source(spec), ray.cluster_resources())
        return url, started
    cluster.check_resources(shapes_by_source(spec), cluster.local_resources())
    # Started before anything is written: a submit whose cluster does not start leaves the store as it was.
    return cluster.connect(None, dashboard=dashboard, metrics=metrics)


def metrics_line(started: bool) -> str:
    """Where `submit --metrics` finds the sweep's metrics: the node's Prometheus endpoint."""
    if not started:
        return ("--metrics: this cluster was not started by this submit; it exports metrics (the sweep's "
                "included) as it was started")
    return (f"Ray metrics (Prometheus): {cluster.metrics_url()}  (loopback only, no token: any user of this "
            f"machine can read them; docs/watching.md)")


def run_plan(plan: Plan, spec: SweepSpec, store: ResultsStore, address: str | None = None,
             progress: bool = True, echo=print, preflight=None, take_over: bool = False,
             retry_diverged: bool = False, dashboard: bool = True, metrics: bool = False,
             kept: KeptActors | None = None) -> RunSummary:
    """Run every stage of `plan` that the store does not hold yet. Starts Ray only if there is work.

    `preflight()` runs only when there is work, before Ray starts or anything is written (the CLI checks
    the data root there). `kept`: trial actors to start with, and where the idle ones go when the run ends
    (a caller that runs several plans on a cluster it keeps; it kills them when done).
    """
    Lease(store, plan.sweep).check(take_over)  # a busy sweep is refused before anything slow (acquire settles it)
    state = health.inspect(store, plan, plan.sweep)
    todo, blocked = _todo(plan, state, retry_diverged)
    summary = RunSummary(planned=len(plan.stages), skipped_done=len(state.done), not_retried=len(blocked))
    if not todo and not state.needs_repair:
        plan_manifests.record(store, plan)  # the plan may have lost stages: their rows are superseded now
        return summary
    joining = bool(address or os.environ.get("RAY_ADDRESS")) or ray.is_initialized()
    url, started, prepared = None, False, bool(todo)
    if todo:
        url, started = _prepare(spec, preflight, joining, address, dashboard, metrics)
    lease = Lease(store, plan.sweep)
    try:
        store.check_writable()
        lease.acquire(take_over=take_over)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    try:
        if state.needs_repair:
            # Repair acts only on what it sees under the lease: before it, another driver may have written or
            # repaired anything (the look above only decided whether there is work).
            state = health.inspect(store, plan, plan.sweep)
            if state.needs_repair:
                health.repair(store, state, echo)
                state = health.inspect(store, plan, plan.sweep)
            todo, blocked = _todo(plan, state, retry_diverged)
            summary = RunSummary(planned=len(plan.stages), skipped_done=len(state.done), not_retried=len(blocked))
        plan_manifests.record(store, plan)
        if not todo:
            return summary
        if not prepared:  # work that only the look under the lease found: check inputs and resources now
            url, started = _prepare(spec, preflight, joining, address, dashboard, metrics)
        stored = len(state.done & set(plan.stages))
        if stored:
            echo(f"resuming: {stored} of {len(plan.stages)} stages already stored, {len(todo)} to run"
                 + (f", {len(blocked)} held back (diverged before; --retry-diverged runs them)" if blocked else ""))
        shapes = stage_shapes(plan, spec)
        runtime_env = plugin_code.runtime_env(spec.plugin_manifest())
        summary.dashboard_url = url
        if url:
            echo(f"Ray dashboard: {url}  (token authentication: the token is in ~/.ray/auth_token)")
        if metrics:
            echo(metrics_line(started))
        from orchestrator.run.progress import Progress
        from orchestrator.run.sweep_metrics import SweepMetrics

        reporter = Progress(plan.sweep, [(plan.stages[k].kind, plan.stages[k].work) for k in todo],
                            tty=sys.stderr.isatty(), echo=echo, bar=progress, parallel=spec.resources.max_concurrent,
                            metrics=SweepMetrics(plan.sweep))
        recorder = Recorder(plan, spec, store, state, {k: s[1] for k, s in shapes.items()})
        scheduler = Scheduler(plan, todo, state.done, shapes, TrialActor, store.location, recorder,
                              spec.resources.max_concurrent, spec.resources.max_retries, reporter, lease,
                              HangPolicy(spec.resources.hang_floor_s, spec.resources.hang_factor),
                              tune_actor=tune_actor_factory(spec, store.location, runtime_env),
                              runtime_env=runtime_env, kept=kept)
        t0 = time.perf_counter()
        try:
            scheduler.run(summary)
        finally:
            reporter.close()
        summary.seconds = time.perf_counter() - t0
        if store.count_small_files("stages", plan.sweep) >= AUTO_COMPACT_FILES:
            t1 = time.perf_counter()
            merged = store.compact(plan.sweep)
            echo(f"compacted {sum(n for n, _ in merged.values())} small result files "
                 f"({time.perf_counter() - t1:.1f} s)")
        return summary
    finally:
        lease.release()
        if started:
            ray.shutdown()
