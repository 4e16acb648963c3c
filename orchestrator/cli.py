"""`orchestrate`: validate, plan, submit, status, results, plot.

Bad input (spec, store, data root) prints one line per problem and exits 2 without
writing anything.
"""
from __future__ import annotations

import json
import sys
from collections import Counter

import click

from orchestrator.spec import SpecError, SweepSpec, describe, load_spec
from orchestrator.store import ResultsStore, StoreError

BAD_INPUT = 2
SWEEP_BUSY = 3  # another driver holds the sweep's lease


def _fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(BAD_INPUT)


def _spec(path: str) -> SweepSpec:
    try:
        return load_spec(path)
    except SpecError as err:
        _fail(str(err))


def _store(location: str) -> ResultsStore:
    try:
        return ResultsStore(location)
    except StoreError as err:
        _fail(str(err))


def _plan(spec: SweepSpec):
    from orchestrator.plan import build_plan

    return build_plan(spec)


def _check_inputs(spec: SweepSpec) -> None:
    """Load the dataset and build the model once, so bad data or options fail on one line before Ray starts.

    In a child process unless this one has torch already: the driver stays torch-free (~180 MB less RSS).
    """
    import subprocess

    from workers import preflight

    config = {"dataset": spec.dataset.model_dump(), "model": spec.model.model_dump()}
    if "torch" in sys.modules:
        message = preflight.problem(config["dataset"], config["model"])
        if message:
            _fail(message)
        return
    child = subprocess.run([sys.executable, "-m", "workers.preflight", json.dumps(config)],
                           capture_output=True, text=True)
    if child.returncode == BAD_INPUT:
        _fail(child.stderr.strip().splitlines()[-1])
    if child.returncode != 0:
        raise click.ClickException(f"checking the dataset and model failed:\n{child.stderr[-2000:]}")


def _check_store_location(location: str) -> None:
    """Without writing: a local store must be a directory we can write, or be creatable."""
    import os

    if "://" in location:
        return  # object storage: only a write can tell; submit probes it before any work starts
    path = os.path.abspath(location)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        _fail(f"store {location}: {path} is a file, expected a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        _fail(f"store {location}: {path} is not writable")


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
    ]


def _method_line(m) -> str:
    from orchestrator.spec import method_label

    settings = {k: v for k, v in m.model_dump(exclude_defaults=True).items() if k != "kind"}
    return method_label(m) + (f" ({', '.join(f'{k} {v}' for k, v in settings.items())})" if settings else "")


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    # Package metadata, not `import ray, torch`: the same versions without seconds of imports.
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    click.echo(f"ticketsweep {version('ticketsweep')} (ray {version('ray')}, torch {version('torch')}, "
               f"python {sys.version.split()[0]})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the ticketsweep, Ray, torch and Python versions and exit.")
def main() -> None:
    """Lottery-ticket sweeps on Ray: LTR, one-shot pruning and Concrete Ticket Search."""


@main.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--explain", is_flag=True, help="Also print every spec field with its description.")
@click.option("--skip-data", is_flag=True, help="Do not load the dataset (e.g. where the data root is elsewhere).")
def validate(spec_path: str, explain: bool, skip_data: bool) -> None:
    """Check a spec, its store location, data and model without a cluster, and print what it would run."""
    spec = _spec(spec_path)
    _check_store_location(spec.store)
    if not skip_data:
        _check_inputs(spec)
    for line in _summary_lines(spec, _plan(spec)):
        click.echo(line)
    if explain:
        click.echo(describe())


@main.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--store", "store_location", help="Results store (overrides the spec's).")
@click.option("--stage", "stage_key", help="Print this stage's worker payload as JSON (for `python -m workers`).")
def plan(spec_path: str, store_location: str | None, stage_key: str | None) -> None:
    """List the stages of a spec: which are already stored and which would run."""
    spec = _spec(spec_path)
    p = _plan(spec)
    if stage_key:
        matches = [k for k in p.stages if k.startswith(stage_key)]
        if len(matches) != 1:
            _fail(f"--stage: {stage_key!r} matches {len(matches)} stages")
        click.echo(json.dumps(p.stages[matches[0]].payload(p.config), indent=2))
        return
    store = _store(store_location or spec.store)
    done = store.done_keys(spec.name)
    for line in _summary_lines(spec, p):
        click.echo(line)
    todo = 0
    for s in p.stages.values():
        state = "stored" if s.key in done else "to run"
        todo += s.key not in done
        click.echo(f"  {s.key[:12]}  {state:6}  {s.kind:9} {s.label}")
    click.echo(f"{todo} stage(s) to run, {len(p.stages) - todo} already in {store.location}")


@main.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--store", "store_location", help="Results store (overrides the spec's).")
@click.option("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a private local cluster with the dashboard).")
@click.option("--progress/--no-progress", default=True,
              help="A progress bar on a terminal; with --no-progress (or no terminal) one line per finished stage.")
@click.option("--dashboard/--no-dashboard", default=True, help="Start the Ray dashboard with a private cluster.")
@click.option("--take-over", is_flag=True, help="Take the sweep's lease from another driver (only if it is gone).")
@click.option("--retry-diverged", is_flag=True, help="Run stages that diverged in an earlier submit again.")
@click.option("--detach", is_flag=True,
              help="With --address http://HEAD:8265: run the driver on the cluster as a Ray job, print its id, return.")
def submit(spec_path: str, store_location: str | None, address: str | None, progress: bool, dashboard: bool,
           take_over: bool, retry_diverged: bool, detach: bool) -> None:
    """Run every stage of a sweep that is not in the store yet (so submitting again resumes)."""
    if detach:
        return cli_jobs.submit_detached(spec_path, store_location, address, take_over, retry_diverged)
    from orchestrator.cluster import ClusterError
    from orchestrator.driver import run_plan
    from orchestrator.lease import LeaseHeld
    from orchestrator.scheduler import LeaseLost

    spec = _spec(spec_path)
    store = _store(store_location or spec.store)
    try:
        summary = run_plan(_plan(spec), spec, store, address=address, progress=progress, echo=click.echo,
                           preflight=lambda: _check_inputs(spec), take_over=take_over, retry_diverged=retry_diverged,
                           dashboard=dashboard)
    except ClusterError as err:
        _fail(str(err))
    except LeaseHeld as err:
        click.echo(str(err), err=True)
        sys.exit(SWEEP_BUSY)
    except (StoreError, LeaseLost) as err:
        click.echo(str(err), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted: finished stages are stored; submit again to resume", err=True)
        sys.exit(130)
    click.echo(f"{summary.ran} stage(s) ran, {summary.skipped_done} already stored, {summary.failed} failed, "
               f"{summary.diverged} diverged, {summary.skipped_after_failure} skipped after a failure "
               f"({summary.seconds:.1f} s)")
    if summary.not_retried:
        click.echo(f"{summary.not_retried} stage(s) not run: they diverged in an earlier submit, or depend on one "
                   f"that did (--retry-diverged runs them)")
    for f in summary.failures:
        click.echo(f"  {f}", err=True)
    click.echo(f"results: {store.location}/points  (orchestrate results --store {store.location})")
    if summary.failed or summary.diverged:
        sys.exit(1)


def _points(store_location: str | None, sweep: str | None):
    from orchestrator.suggest import suggest

    store = _store(store_location or "./ticketsweep-store")
    points = store.read("points", sweep)
    if points.empty:
        hint = suggest(sweep, store.sweeps(), list_known=True) if sweep else ""
        _fail(f"store {store.location}: no results" + (f" for sweep {sweep}" if sweep else "") + hint)
    return points


def _check_output(path: str) -> None:
    """An output file's folder must exist: fail on one line before any work, rather than after it."""
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        _fail(f"-o {path}: is a directory, expected a file name")
    if not os.path.isdir(folder):
        _fail(f"-o {path}: no such directory {folder}")


@main.command()
@click.option("--store", "store_location", help="Results store (default: ./ticketsweep-store).")
@click.option("--sweep", help="Only this sweep.")
@click.option("--spec", "spec_path", help="Take the store and sweep from this spec.")
@click.option("--all-levels", is_flag=True, help="Include intermediate LTR levels.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]), default=None,
              help="table (default), markdown, or the frontier's columns as csv or json.")
@click.option("--markdown", is_flag=True, help="Same as --format markdown.")
@click.option("-o", "--output", help="Write to this file instead of printing.")
def results(store_location, sweep, spec_path, all_levels, fmt, markdown, output) -> None:
    """Print the accuracy-vs-sparsity frontier (mean ± std over seeds) with its costs."""
    from orchestrator.report import export_frontier, frontier, write_text

    if markdown and fmt not in (None, "markdown"):
        _fail(f"--markdown conflicts with --format {fmt}")
    fmt = "markdown" if markdown else (fmt or "table")
    if output:
        _check_output(output)
    if spec_path:
        spec = _spec(spec_path)
        store_location, sweep = store_location or spec.store, sweep or spec.name
    text = export_frontier(frontier(_points(store_location, sweep), all_levels=all_levels), fmt)
    if not output:
        click.echo(text)
        return
    write_text(output, text + "\n")
    click.echo(f"wrote {output}")


@main.command()
@click.option("--store", "store_location", help="Results store (default: ./ticketsweep-store).")
@click.option("--sweep", help="Only this sweep.")
@click.option("--spec", "spec_path", help="Take the store and sweep from this spec.")
@click.option("-o", "--output", default="frontier.png", show_default=True, help="PNG to write.")
def plot(store_location, sweep, spec_path, output) -> None:
    """Plot accuracy vs fraction of weights remaining, and accuracy vs standalone cost."""
    from orchestrator.report import frontier, plot_frontier

    _check_output(output)
    if spec_path:
        spec = _spec(spec_path)
        store_location, sweep = store_location or spec.store, sweep or spec.name
    plot_frontier(frontier(_points(store_location, sweep)), output)
    click.echo(f"wrote {output}")


# Verbs that live in their own modules register themselves on `main` when imported.
from orchestrator import cli_data, cli_jobs, cli_store  # noqa: E402,F401

if __name__ == "__main__":
    # Run as a script this file is `__main__`, while the verb modules register on `orchestrator.cli.main`.
    from orchestrator.cli import main as registered_main

    registered_main()
