"""`orchestrate results`, `plot`, `compare` and `report`: what a sweep found, as tables, pictures and verdicts.

Every verb reads the frontier of the sweep's current plan: rows whose stage is no longer planned (the spec
changed since) stay in the store but are left out (orchestrator/store/plan_manifests.py).
"""
from __future__ import annotations

import click

from orchestrator.cli.common import check_output, fail, plan_of, spec_from, store_at

FORMATS = click.Choice(["table", "markdown", "csv", "json"])


def cost_option(command):
    """--cost: the unit costs are shown in (orchestrator/analysis/cost_units.py COSTS)."""
    from orchestrator.analysis.cost_units import COSTS, DEFAULT_COST

    return click.option("--cost", type=click.Choice(COSTS), default=DEFAULT_COST, show_default=True,
                        help="Costs in wall-clock seconds as measured, or in the work the workers counted, which "
                             "a rerun reproduces exactly on any machine: training and search epochs, or FLOPs of "
                             "the masked network (docs/cost.md).")(command)


def current_points(store_location: str | None, sweep: str | None, spec=None):
    """The sweep's points (every sweep's, without one) with `superseded` marked: against the spec's plan when a
    spec is given, else against each sweep's newest recorded plan."""
    from orchestrator.store import plan_manifests
    from orchestrator.spec.suggest import suggest

    store = store_at(store_location or (spec.store if spec else "./ticketsweep-store"))
    sweep = sweep or (spec.name if spec else None)
    points = store.read("points", sweep)
    if points.empty:
        hint = suggest(sweep, store.sweeps(), list_known=True) if sweep else ""
        fail(f"store {store.location}: no results" + (f" for sweep {sweep}" if sweep else "") + hint)
    names = sorted(set(points["sweep"].astype(str)))
    keys = {name: plan_manifests.current_keys(store, name) for name in names}
    if spec is not None and spec.name in keys:
        keys[spec.name] = set(plan_of(spec).stages)
    return plan_manifests.mark_superseded(points, keys)


def emit(text: str, output: str | None) -> None:
    from orchestrator.analysis.frontier import write_text

    if not output:
        click.echo(text)
        return
    write_text(output, text + "\n")
    click.echo(f"wrote {output}")


@click.command()
@click.option("--store", "store_location", help="Results store (default: ./ticketsweep-store).")
@click.option("--sweep", help="Only this sweep.")
@click.option("--spec", "spec_path", help="Take the store and sweep from this spec.")
@click.option("--all-levels", is_flag=True, help="Include intermediate LTR levels.")
@click.option("--format", "fmt", type=FORMATS, default=None,
              help="table (default), markdown, or the frontier's columns as csv or json.")
@click.option("--markdown", is_flag=True, help="Same as --format markdown.")
@click.option("-o", "--output", help="Write to this file instead of printing.")
@cost_option
def results(store_location, sweep, spec_path, all_levels, fmt, markdown, output, cost) -> None:
    """Print the accuracy-vs-sparsity frontier: the validation-selected test accuracy, mean ± std and 95 %
    interval over seeds, the final test and validation accuracy, and costs."""
    from orchestrator.analysis.frontier import export_frontier, frontier

    if markdown and fmt not in (None, "markdown"):
        fail(f"--markdown conflicts with --format {fmt}")
    if output:
        check_output(output)
    spec = spec_from(spec_path) if spec_path else None
    points = current_points(store_location, sweep, spec)
    emit(export_frontier(frontier(points, all_levels=all_levels, cost=cost),
                         "markdown" if markdown else (fmt or "table"), cost), output)


@click.command()
@click.option("--store", "store_location", help="Results store (default: ./ticketsweep-store).")
@click.option("--sweep", help="Only this sweep.")
@click.option("--spec", "spec_path", help="Take the store and sweep from this spec.")
@click.option("-o", "--output", default="frontier.png", show_default=True, help="PNG to write.")
@cost_option
def plot(store_location, sweep, spec_path, output, cost) -> None:
    """Plot accuracy vs fraction of weights remaining (95 % interval bands), and the cost-accuracy frontier."""
    from orchestrator.analysis.frontier import frontier, plot_frontier

    check_output(output)
    spec = spec_from(spec_path) if spec_path else None
    plot_frontier(frontier(current_points(store_location, sweep, spec), cost=cost), output, cost=cost)
    click.echo(f"wrote {output}")


def judging_options(command):
    """--adjust, --min-effect and --failures, which `compare` and `report` share (orchestrator/analysis/compare.py)."""
    from orchestrator.analysis.stats import ADJUSTMENTS, DEFAULT_ADJUST, DEFAULT_MIN_EFFECT_POINTS, FAILURES

    command = click.option("--failures", type=click.Choice(FAILURES), default="chance", show_default=True,
                           help="A seed that failed, diverged or was skipped counts at chance accuracy, or is "
                                "left out.")(command)
    command = click.option("--min-effect", "min_effect", type=click.FloatRange(min=0, min_open=True),
                           default=DEFAULT_MIN_EFFECT_POINTS, show_default=True, metavar="POINTS",
                           help="The difference, in accuracy points, that the power column (seeds 80 %) plans for.")(command)
    return click.option("--adjust", type=click.Choice(ADJUSTMENTS), default=DEFAULT_ADJUST, show_default=True,
                        help="Multiplicity adjustment the verdicts follow, over the rows of the table: Holm "
                             "(family-wise error), Benjamini-Hochberg (false discovery rate) or none.")(command)


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.argument("methods", nargs=-1, metavar="[A B]")
@click.option("--reference", help="Compare every other method with this one (with --all).")
@click.option("--all", "every", is_flag=True, help="With --reference: every other method against it.")
@click.option("--metric", default="selected_test_accuracy", show_default=True,
              help="The accuracy column compared (e.g. test_accuracy, the final one; val_accuracy).")
@click.option("--alpha", default=0.05, show_default=True, type=float, help="Significance level of the test.")
@judging_options
@click.option("--store", "store_location", help="Results store (default: the spec's).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("-o", "--output", help="Write to this file instead of printing.")
@cost_option
def compare(spec_path, methods, reference, every, metric, alpha, adjust, min_effect, failures, store_location, fmt,
            output, cost) -> None:
    """Paired comparison of method B with method A at every sparsity both have, over the seeds both have: the
    mean difference B − A with the 95 % interval that inverts the test, an exact sign-flip test on
    correct-example counts, its Holm-adjusted p and Benjamini-Hochberg q over the rows (the family), a
    verdict, the paired cost ratio, and the seeds a difference of --min-effect points needs."""
    from orchestrator.analysis.compare import CompareError, compare_all, compare_methods, format_comparison

    if every != bool(reference):
        fail("compare: --all and --reference go together (--reference A --all)")
    if every and methods:
        fail(f"compare: give either A B or --reference A --all, not both (got {' '.join(methods)})")
    if not every and len(methods) != 2:
        fail(f"compare: give two methods A B (got {len(methods)}), or --reference A --all")
    if output:
        check_output(output)
    spec = spec_from(spec_path)
    points = current_points(store_location, None, spec)
    points = points[points["sweep"].astype(str) == spec.name]
    try:
        judging = {"metric": metric, "alpha": alpha, "adjust": adjust, "min_effect": min_effect / 100,
                   "failures": failures, "cost": cost}
        frame = (compare_all(points, reference, **judging) if every
                 else compare_methods(points, methods[0], methods[1], **judging))
        text = format_comparison(frame, fmt)
    except CompareError as err:
        fail(f"compare: {err}")
    if fmt in ("table", "markdown"):
        text += _decisions_text(store_location or spec.store, spec.name, fmt == "markdown")
    emit(text, output)


def _decisions_text(location: str, sweep: str, markdown: bool) -> str:
    """The sweep's `submit --until-decided` decisions after a blank line; "" when it has no decision log."""
    from orchestrator.analysis.decision_log import DecisionLogError, format_decisions, read_looks, state

    try:
        log = state(read_looks(store_at(location), sweep))
    except DecisionLogError as err:
        fail(f"compare: {err}")
    return "" if log is None else "\n\n" + format_decisions(log, markdown=markdown)


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("-o", "--output", "out_dir", required=True, help="Folder to write report.html and report.md into.")
@click.option("--reference", help="The method every other is compared with (default: ltr when present).")
@judging_options
@click.option("--store", "store_location", help="Results store (default: the spec's).")
@cost_option
def report(spec_path, out_dir, reference, adjust, min_effect, failures, store_location, cost) -> None:
    """Write one self-contained HTML page (images embedded) and the same content as Markdown: the spec and
    versions, the frontier and cost-accuracy plots, the frontier table, every method compared with a
    reference, stage counts by status, total compute, and the machines the stages ran on."""
    import os

    from orchestrator.analysis.compare import CompareError
    from orchestrator.analysis.report import build_report

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        fail(f"-o {out_dir}: is a file, expected a folder")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        fail(f"-o {out_dir}: no such directory {parent}")
    spec = spec_from(spec_path)
    store = store_at(store_location or spec.store)
    points = current_points(store.location, None, spec)
    points = points[points["sweep"].astype(str) == spec.name]
    try:
        written = build_report(spec_path, spec, store, points, out_dir, reference,
                               judging={"adjust": adjust, "min_effect": min_effect / 100, "failures": failures},
                               cost=cost)
    except CompareError as err:
        fail(f"report: {err}")
    for path in written:
        click.echo(f"wrote {path}")


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--store", "store_location", help="Results store (default: the spec's).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("-o", "--output", help="Write to this file instead of printing.")
def tuning(spec_path, store_location, fmt, output) -> None:
    """What tuning found, per tuned method: the chosen values, the budget spent (configurations, epochs run by
    ASHA against the full budget, seconds, and the work its configurations counted in epochs and FLOPs) and the
    sensitivity (the spread of validation accuracy over the configurations, and the best against the untuned
    default)."""
    from orchestrator.tuning.summary import format_summary, summarize

    if output:
        check_output(output)
    spec = spec_from(spec_path)
    store = store_at(store_location or spec.store)
    tune_keys = {k for k, s in plan_of(spec).stages.items() if s.kind == "tune"}
    if not tune_keys:
        fail(f"{spec_path}: no method of sweep {spec.name} is tuned (give a method a `tune` search space)")
    emit(format_summary(summarize(store.read("tuning", spec.name), store.read("stages", spec.name), tune_keys), fmt),
         output)


COMMANDS = (results, plot, compare, report, tuning)
