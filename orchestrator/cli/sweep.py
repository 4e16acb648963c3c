"""`orchestrate validate`, `plan` and `submit`: checking a spec and running what its store lacks."""
from __future__ import annotations

import contextlib
import json
import sys
from collections import Counter
from typing import Callable

import click

from orchestrator.cli.common import (BAD_INPUT, CLUSTER_DID_NOT_START, INTERRUPTED, SWEEP_BUSY, fail, plan_of,
                                     spec_from, store_at)
from orchestrator.spec.sweep_spec import SweepSpec, describe, describe_registries
from orchestrator.store.results_store import ResultsStore
from orchestrator.store.files import StoreError
from orchestrator.store.layout import layout_dir, table_dir


def check_inputs(spec: SweepSpec) -> None:
    """Load the dataset and build the model once, so bad data or options fail on one line before Ray starts."""
    start_input_check(spec)()


def start_input_check(spec: SweepSpec) -> Callable[[], None]:
    """Start `check_inputs` and return what waits for its verdict, so the caller can plan meanwhile.

    In a child process unless this one has torch already: the driver stays torch-free (docs/architecture.md).
    """
    import subprocess

    from workers import preflight

    from orchestrator.spec import plugin_set

    config = {"dataset": spec.dataset.model_dump(), "model": spec.model.model_dump(),
              "plugins": plugin_set.payload(spec.plugin_manifest())}
    if "torch" in sys.modules:
        def check_here() -> None:
            message = preflight.problem(config["dataset"], config["model"], config["plugins"])
            if message:
                fail(message)
        return check_here
    child = subprocess.Popen([sys.executable, "-m", "workers.preflight", json.dumps(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait() -> None:
        _, stderr = child.communicate()
        if child.returncode == BAD_INPUT:
            fail(stderr.strip().splitlines()[-1])
        if child.returncode != 0:
            raise click.ClickException(f"checking the dataset and model failed:\n{stderr[-2000:]}")
    return wait


def _check_store_location(location: str) -> None:
    """Without writing: a local store must be a directory we can write, or be creatable."""
    import os

    if "://" in location:
        return  # object storage: only a write can tell; submit probes it before any work starts
    path = os.path.abspath(location)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        fail(f"store {location}: {path} is a file, expected a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"store {location}: {path} is not writable")


def _summary_lines(spec: SweepSpec, plan) -> list[str]:
    kinds = Counter(s.kind for s in plan.stages.values())
    points = plan.points()
    work = sum(s.work for s in plan.stages.values())
    return [
        f"sweep {spec.name}: {spec.model.name} on {spec.dataset.name}, {len(spec.methods)} method(s), "
        f"{len(spec.target_sparsities())} sparsities, {len(spec.seeds)} seed(s)",
        f"  stages: {len(plan.stages)} ({', '.join(f'{k} {n}' for k, n in kinds.items())})",
        f"  result points: {len(points)}",
        f"  estimated work: {work:.0f} training epochs; {spec.resources.max_concurrent} trial(s) at once, "
        f"{spec.resources.cpus_per_trial:g} CPU / {spec.resources.gpus_per_trial:g} GPU each",
        "  recipe: " + ", ".join(f"{k} {v}" for k, v in spec.training.model_dump().items()),
        f"  model: {spec.model.name} " + (", ".join(f"{k} {v}" for k, v in spec.model.options.items()) or "(defaults)"),
        "  methods: " + "; ".join(_method_line(m) for m in spec.methods),
    ] + _plugin_lines(spec) + _until_decided_lines(spec)


def _plugin_lines(spec: SweepSpec) -> list[str]:
    """Which plugin files the sweep imports, and what each registers with its identity."""
    from orchestrator.spec import plugin_set

    manifest = spec.plugin_manifest()
    if not manifest:
        return []
    lines = [f"  {plugin_set.files_line(manifest)}"]
    for thing in manifest["things"].values():
        lines.append(f"    {thing['what']} {thing['name']} from {thing['module']}: {thing['identity'][:19]}")
    return lines


def _until_decided_lines(spec: SweepSpec) -> list[str]:
    block = spec.until_decided
    if block is None:
        return []
    from orchestrator.run.until_decided import comparisons

    family = comparisons(spec)
    return [f"  until decided (submit --until-decided): {len(family)} comparison(s) of "
            f"{', '.join(block.methods)} against {block.reference}, looks at {', '.join(map(str, block.looks))} "
            f"seeds, family-wise alpha {block.alpha:g}"]


def _estimate(plan, spec: SweepSpec, store, done: set[str] | None = None) -> str:
    from orchestrator.run.estimate import estimate_line

    return "  " + estimate_line(plan, store, spec.resources.max_concurrent, done)


def _validate_estimate(spec: SweepSpec, plan, skip_data: bool) -> str:
    """validate's estimate line. For a file dataset the stored stages are known only by keys that hash the
    data's content, so without reading the data it cannot tell what is stored already."""
    from workers.data.registry import get_dataset_descriptor

    if get_dataset_descriptor(spec.dataset.name).files is not None:
        if skip_data:
            return "  estimated time: none (--skip-data: what is stored already is known from the data's content)"
        if "content" not in plan.config["dataset"]:  # validate_spec could not fingerprint the files
            plan = plan_of(spec)
    try:
        return _estimate(plan, spec, ResultsStore(spec.store))
    except StoreError as err:  # validate checks a spec; an unreachable store only costs the estimate
        return f"  estimated time: none ({err})"


def _method_line(m) -> str:
    return m.label() + (f" (sanity checks {', '.join(m.sanity_checks)})" if m.sanity_checks else "")


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--explain", is_flag=True, help="Also print every spec field with its description.")
@click.option("--skip-data", is_flag=True, help="Do not load the dataset (e.g. where the data root is elsewhere).")
def validate(spec_path: str, explain: bool, skip_data: bool) -> None:
    """Check a spec, its store location, data and model without a cluster, and print what it would run."""
    spec, plan = validate_spec(spec_path, check_data=not skip_data)
    for line in _summary_lines(spec, plan):
        click.echo(line)
    click.echo(_validate_estimate(spec, plan, skip_data))
    if explain:
        click.echo(describe())
        click.echo(describe_registries())


def validate_spec(spec_path: str, check_data: bool = True):
    """What `validate` checks, as (spec, plan); a problem exits 2 on one line. The data and model are checked in
    a child process while this one plans. benchmarks/scale.py times this function: the figure it prints is
    `validate`'s. With `check_data`, a file dataset's plan has the keys its results are stored under (the
    files' fingerprint hashed in), so the estimate need not plan a second time."""
    from orchestrator.spec.plan import build_plan
    from workers.data.files import DataError, fingerprint

    spec = spec_from(spec_path)
    _check_store_location(spec.store)
    wait = start_input_check(spec) if check_data else None
    try:
        content = None
        if check_data:
            with contextlib.suppress(DataError):  # the child's check names what is wrong with the data
                content = fingerprint(spec.dataset.name, spec.dataset.root)
        plan = build_plan(spec, content)
    finally:
        if wait is not None:
            wait()  # a bad data root is the error to report, even if planning failed too
    return spec, plan


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--store", "store_location", help="Results store (overrides the spec's).")
@click.option("--stage", "stage_key", help="Print this stage's worker payload as JSON (for `python -m workers`).")
def plan(spec_path: str, store_location: str | None, stage_key: str | None) -> None:
    """List the stages of a spec: which are already stored and which would run."""
    spec = spec_from(spec_path)
    p = plan_of(spec)
    if stage_key:
        matches = [k for k in p.stages if k.startswith(stage_key)]
        if len(matches) != 1:
            fail(f"--stage: {stage_key!r} matches {len(matches)} stages")
        click.echo(json.dumps(p.stages[matches[0]].payload(p.config), indent=2))
        return
    store = store_at(store_location or spec.store)
    done = store.done_keys(spec.name)
    for line in _summary_lines(spec, p):
        click.echo(line)
    todo = 0
    for s in p.stages.values():
        state = "stored" if s.key in done else "to run"
        todo += s.key not in done
        click.echo(f"  {s.key[:12]}  {state:6}  {s.kind:9} {s.label}")
    click.echo(f"{todo} stage(s) to run, {len(p.stages) - todo} already in {store.location}")
    click.echo(_estimate(p, spec, store, done))


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--store", "store_location", help="Results store (overrides the spec's).")
@click.option("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a private local cluster with the dashboard).")
@click.option("--progress/--no-progress", default=True,
              help="A progress bar on a terminal; with --no-progress (or no terminal) one line per finished stage.")
@click.option("--dashboard/--no-dashboard", default=True, help="Start the Ray dashboard with a private cluster.")
@click.option("--metrics", is_flag=True,
              help="A private cluster exports Ray's and the sweep's metrics for Prometheus, on 127.0.0.1 without "
                   "a token (docs/watching.md).")
@click.option("--take-over", is_flag=True, help="Take the sweep's lease from another driver (only if it is gone).")
@click.option("--retry-diverged", is_flag=True, help="Run stages that diverged in an earlier submit again.")
@click.option("--detach", is_flag=True,
              help="With --address http://HEAD:8265: run the driver on the cluster as a Ray job, print its id, return.")
@click.option("--until-decided", is_flag=True,
              help="Add seeds look by look until every comparison of the spec's until_decided section is decided.")
def submit(spec_path: str, store_location: str | None, address: str | None, progress: bool, dashboard: bool,
           metrics: bool, take_over: bool, retry_diverged: bool, detach: bool, until_decided: bool) -> None:
    """Run every stage of a sweep that is not in the store yet (so submitting again resumes)."""
    if until_decided:
        if detach:
            fail("submit: --until-decided runs its looks from this driver; it cannot --detach")
        return _submit_until_decided(spec_path, store_location, address, progress, dashboard, take_over,
                                     retry_diverged, metrics)
    if detach:
        from orchestrator.cli.jobs import submit_detached

        return submit_detached(spec_path, store_location, address, take_over, retry_diverged)
    from orchestrator.store.lease import Lease

    spec = spec_from(spec_path)
    store = store_at(store_location or spec.store)
    interrupted = "interrupted: finished stages are stored; submit again to resume"
    with _run_errors(interrupted):  # first: a busy sweep is refused before the data check, the plan or Ray
        Lease(store, spec.name).check(take_over)
    from orchestrator.run.driver import run_plan
    from orchestrator.run.scheduler import LeaseLost

    with _run_errors(interrupted, LeaseLost):
        summary = run_plan(plan_of(spec), spec, store, address=address, progress=progress, echo=click.echo,
                           preflight=lambda: check_inputs(spec), take_over=take_over, retry_diverged=retry_diverged,
                           dashboard=dashboard, metrics=metrics)
    click.echo(f"{summary.ran} stage(s) ran, {summary.skipped_done} already stored, {summary.failed} failed, "
               f"{summary.diverged} diverged, {summary.skipped_after_failure} skipped after a failure "
               f"({summary.seconds:.1f} s)")
    if summary.not_retried:
        click.echo(f"{summary.not_retried} stage(s) not run: they diverged in an earlier submit, or depend on one "
                   f"that did (--retry-diverged runs them)")
    for f in summary.failures:
        click.echo(f"  {f}", err=True)
    click.echo(f"results: {table_dir(store.location, 'points')}  (orchestrate results --store {store.location})")
    if summary.failed or summary.diverged:
        sys.exit(1)


@contextlib.contextmanager
def _run_errors(interrupted: str, *failures: type[Exception]):
    """A run's failures as one line on stderr and the exit code the README gives each: 2 a cluster that cannot
    take the sweep, 3 a busy sweep, 4 a cluster that did not start, 1 a store error or one of `failures`,
    130 Ctrl-C (saying `interrupted`)."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(interrupted, err=True)
        sys.exit(INTERRUPTED)
    except Exception as err:
        from orchestrator.store.lease import LeaseHeld

        if isinstance(err, LeaseHeld):
            code = SWEEP_BUSY
        elif isinstance(err, (StoreError, *failures)):
            code = 1
        else:  # only now: orchestrator.deploy.cluster imports Ray, which a refused submit never needs
            from orchestrator.deploy.cluster import ClusterError, ClusterStartError

            if isinstance(err, ClusterError):
                fail(str(err))
            if not isinstance(err, ClusterStartError):
                raise
            code = CLUSTER_DID_NOT_START
        click.echo(str(err), err=True)
        sys.exit(code)


def _submit_until_decided(spec_path, store_location, address, progress, dashboard, take_over, retry_diverged,
                          metrics=False):
    """`submit --until-decided`: the looks of orchestrator/run/until_decided.py, each run like a plain submit."""
    from orchestrator.analysis.decision_log import DecisionLogError, format_decisions
    from orchestrator.run.driver import metrics_line, run_plan, shapes_by_source
    from orchestrator.run.scheduler import KeptActors, LeaseLost
    from orchestrator.run.until_decided import NotDecidable, run

    spec = spec_from(spec_path)
    if spec.until_decided is None:
        fail(f"{spec_path}: until_decided: --until-decided needs this section (reference, methods, looks, alpha)")
    store = store_at(store_location or spec.store)
    started = []
    kept = KeptActors()  # one look's trial actors run the next look's stages: torch and the data stay loaded

    def run_look(look_plan):
        import os

        import ray

        from orchestrator.deploy import cluster

        if not started:  # the first look with work: check the data, then one private cluster for every look
            check_inputs(spec)
            private = not (address or os.environ.get("RAY_ADDRESS") or ray.is_initialized())
            if private:
                cluster.check_resources(shapes_by_source(spec), cluster.local_resources())
                url, _ = cluster.connect(None, dashboard=dashboard, metrics=metrics)
                if url:
                    click.echo(f"Ray dashboard: {url}  (token authentication: the token is in ~/.ray/auth_token)")
            if metrics:
                click.echo(metrics_line(private))
            started.append(private)
        return run_plan(look_plan, spec, store, address=address, progress=progress, echo=click.echo,
                        take_over=take_over, retry_diverged=retry_diverged, dashboard=dashboard, kept=kept)
    try:
        with _run_errors("interrupted: finished stages and looks are stored; submit --until-decided again to "
                         "resume", LeaseLost, NotDecidable, DecisionLogError):
            outcome = run(spec, store, run_look, echo=click.echo)
    finally:
        if started:
            kept.close()
        if started and started[0]:  # the private cluster this submit started
            import ray

            ray.shutdown()
    click.echo(format_decisions(outcome.log))
    click.echo(f"{outcome.stages_ran} stage(s) ran in this submit ({outcome.seconds:.1f} s); "
               f"decision log: {layout_dir(store.location, 'decision log', sweep=spec.name)}")
    if outcome.diverged:  # as a plain submit: the decisions count them, the exit code says they happened
        click.echo(f"{outcome.diverged} stage(s) diverged in this submit (counted per until_decided.failures: "
                   f"{spec.until_decided.failures})", err=True)
        sys.exit(1)


COMMANDS = (validate, plan, submit)
