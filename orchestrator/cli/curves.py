"""`orchestrate curves` and `export tensorboard`: the per-epoch curves of a sweep, as a picture, a table, or
TensorBoard event files."""
from __future__ import annotations

import click

from orchestrator.cli.common import check_output, fail, spec_from, store_at


def _rows(spec_path, store_location, sweep, methods=(), sparsities=(), all_levels=False):
    """The frontier's curve rows of one sweep (orchestrator/analysis/curves.py), or a one-line error and exit 2."""
    from orchestrator.cli.tables import current_points
    from orchestrator.analysis.curves import CurveError, curve_rows

    values = []
    for s in sparsities:
        try:
            values.append(float(s))
        except ValueError:
            fail(f"--sparsity {s}: not a number (a target sparsity of the sweep, e.g. 0.9)")
    spec = spec_from(spec_path) if spec_path else None
    points = current_points(store_location, sweep, spec)
    names = sorted(set(points["sweep"].astype(str)))
    if len(names) > 1:
        fail(f"curves: the store holds several sweeps ({', '.join(names)}): give a SPEC or --sweep")
    store = store_at(store_location or (spec.store if spec else "./ticketsweep-store"))
    curves = store.read("curves", names[0])
    try:
        return curve_rows(points, curves, methods, values, all_levels=all_levels)
    except CurveError as err:
        fail(f"curves: sweep {names[0]} in {store.location}: {err}")


@click.command()
@click.argument("spec_path", metavar="[SPEC]", required=False)
@click.option("--store", "store_location", help="Results store (default: the spec's, else ./ticketsweep-store).")
@click.option("--sweep", help="The sweep (default: the spec's, or the store's only one).")
@click.option("--method", "methods", multiple=True,
              help="Only this method (repeat for several; dense training stays as the reference).")
@click.option("--sparsity", "sparsities", multiple=True,
              help="Only this target sparsity (repeat for several; the PNG's default: at most 4 spread over the "
                   "sweep's).")
@click.option("--all-levels", is_flag=True, help="Include intermediate LTR levels.")
@click.option("--format", "fmt", type=click.Choice(["png", "csv", "json"]), default="png", show_default=True,
              help="png: a panel grid; csv or json: the tidy table (mean, low, high, n per epoch).")
@click.option("-o", "--output", help="File to write (png default: curves.png; csv and json default: print).")
def curves(spec_path, store_location, sweep, methods, sparsities, all_levels, fmt, output) -> None:
    """Per-epoch validation and test accuracy and loss, per method and target sparsity: the mean over seeds
    and its 95 % t interval, of the same runs as the frontier."""
    from orchestrator.cli.tables import emit
    from orchestrator.analysis.curves import CurveError, export_curves, plot_curves, summarize

    if fmt == "png":
        output = output or "curves.png"
    if output:
        check_output(output)
    table = summarize(_rows(spec_path, store_location, sweep, methods, sparsities, all_levels))
    if fmt != "png":
        emit(export_curves(table, fmt), output)
        return
    chosen = sorted({float(s) for s in sparsities}) or None
    try:
        plot_curves(table, output, sparsities=chosen)
    except CurveError as err:
        fail(f"curves: {err}")
    click.echo(f"wrote {output}")


@click.group()
def export() -> None:
    """Export a sweep's stored results for other tools."""


@export.command("tensorboard")
@click.argument("out_dir", metavar="DIR")
@click.option("--spec", "spec_path", help="Take the store and sweep from this spec.")
@click.option("--store", "store_location", help="Results store (default: the spec's, else ./ticketsweep-store).")
@click.option("--sweep", help="The sweep (default: the spec's, or the store's only one).")
@click.option("--all-levels", is_flag=True, help="Include intermediate LTR levels.")
def tensorboard(out_dir, spec_path, store_location, sweep, all_levels) -> None:
    """Write the per-epoch curves as TensorBoard event files into DIR (a new or empty folder): one run per
    stage, DIR/<sweep>/<method>/sparsity=<s>/seed=<n>, scalars <phase>/<metric> by training iteration.
    Needs tensorboardX (or tensorboard); neither is a dependency of ticketsweep."""
    import json
    import os
    import subprocess
    import sys

    from orchestrator.analysis import tensorboard_writer
    from orchestrator.analysis.curves import METRICS

    if tensorboard_writer.available() is None:
        fail(f"export tensorboard: {tensorboard_writer.MISSING}")
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        fail(f"export tensorboard: {out_dir} is " + ("not empty" if os.path.isdir(out_dir) else "a file")
             + "; give a new or empty folder (event files added to old ones would show twice)")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        fail(f"export tensorboard: no such directory {parent}")
    rows = _rows(spec_path, store_location, sweep, all_levels=all_levels)
    runs: dict[str, list] = {}
    for r in rows.itertuples(index=False):
        run = "/".join(str(p).replace("/", "_") for p in
                       (r.sweep, r.method, f"sparsity={float(r.target_sparsity):g}", f"seed={int(r.seed)}"))
        for metric in METRICS:
            value = getattr(r, metric)
            if value == value and r.iteration == r.iteration:
                runs.setdefault(run, []).append([f"{r.phase}/{metric}", float(value), int(r.iteration)])
    child = subprocess.run([sys.executable, "-m", "orchestrator.analysis.tensorboard_writer"], text=True,
                           capture_output=True, input=json.dumps({"dir": os.path.abspath(out_dir), "runs": runs}))
    if child.returncode != 0:
        raise click.ClickException(f"writing the event files failed:\n{child.stderr[-2000:]}")
    click.echo(f"wrote {len(runs)} run(s) into {out_dir}  (tensorboard --logdir {out_dir})")


COMMANDS = (curves, export)
