"""`orchestrate data fetch`: a file dataset (mnist, cifar10, ...) from its usual mirrors into a data root."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli.common import BAD_INPUT, fail
from orchestrator.datafetch import FetchError, fetch, fetchable
from orchestrator.suggest import suggest


@click.group()
def data() -> None:
    """Datasets that are read from a data root (`validate --explain` lists them)."""


@data.command("fetch")
@click.argument("name", metavar="DATASET")
@click.option("--root", help="Data root (default: $TICKETSWEEP_DATA, else ~/.cache/ticketsweep/data, "
                             "which specs without dataset.root read).")
@click.option("--url", help="Fetch <URL>/<file name> instead of the usual mirrors (http, https or file URL).")
@click.option("--progress/--no-progress", default=True, help="A download bar on a terminal.")
def fetch_command(name: str, root: str | None, url: str | None, progress: bool) -> None:
    """Download a file dataset's standard archives (DATASET: one of those `validate --explain` says `data
    fetch` downloads), verify their published checksums and unpack them into the data root. Running it again does nothing once the data is there; an interrupted download resumes."""
    from workers.data.files import default_data_root

    if name not in fetchable():
        fail(f"data fetch: unknown dataset {name!r}{suggest(name, fetchable(), list_known=True)}")
    location = root or str(default_data_root())
    try:
        fetch(name, location, url=url, echo=click.echo, progress=progress and sys.stderr.isatty())
    except FetchError as err:
        click.echo(str(err), err=True)
        sys.exit(BAD_INPUT if err.bad_input else 1)
    except KeyboardInterrupt:
        click.echo("interrupted: what was downloaded is kept; the same command resumes", err=True)
        sys.exit(130)
    if root and Path(root).expanduser().resolve() != default_data_root().resolve():
        click.echo(f"specs read it with dataset.root: {Path(root).expanduser().resolve()}")


COMMANDS = (data,)
