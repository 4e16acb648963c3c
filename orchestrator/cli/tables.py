"""`orchestrate results` and `plot`: the frontier of a sweep, as a table or a picture."""
from __future__ import annotations

import click

from orchestrator.cli.common import check_output, fail, spec_from, store_at


def _points(store_location: str | None, sweep: str | None):
    from orchestrator.suggest import suggest

    store = store_at(store_location or "./ticketsweep-store")
    points = store.read("points", sweep)
    if points.empty:
        hint = suggest(sweep, store.sweeps(), list_known=True) if sweep else ""
        fail(f"store {store.location}: no results" + (f" for sweep {sweep}" if sweep else "") + hint)
    return points


@click.command()
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
        fail(f"--markdown conflicts with --format {fmt}")
    fmt = "markdown" if markdown else (fmt or "table")
    if output:
        check_output(output)
    if spec_path:
        spec = spec_from(spec_path)
        store_location, sweep = store_location or spec.store, sweep or spec.name
    text = export_frontier(frontier(_points(store_location, sweep), all_levels=all_levels), fmt)
    if not output:
        click.echo(text)
        return
    write_text(output, text + "\n")
    click.echo(f"wrote {output}")


@click.command()
@click.option("--store", "store_location", help="Results store (default: ./ticketsweep-store).")
@click.option("--sweep", help="Only this sweep.")
@click.option("--spec", "spec_path", help="Take the store and sweep from this spec.")
@click.option("-o", "--output", default="frontier.png", show_default=True, help="PNG to write.")
def plot(store_location, sweep, spec_path, output) -> None:
    """Plot accuracy vs fraction of weights remaining, and accuracy vs standalone cost."""
    from orchestrator.report import frontier, plot_frontier

    check_output(output)
    if spec_path:
        spec = spec_from(spec_path)
        store_location, sweep = store_location or spec.store, sweep or spec.name
    plot_frontier(frontier(_points(store_location, sweep)), output)
    click.echo(f"wrote {output}")


COMMANDS = (results, plot)
