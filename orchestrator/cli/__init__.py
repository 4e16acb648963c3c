"""`orchestrate`: the command line of ticketsweep.

Bad input (spec, store, data root) prints one line per problem and exits 2 without writing anything. Each verb
lives in a module of this package by what it is about; this module only assembles them.
"""
from __future__ import annotations

import sys

import click

from orchestrator.cli import curves, data, jobs, sweep, tables, upkeep


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


for _module in (sweep, tables, curves, upkeep, jobs, data):
    for _command in _module.COMMANDS:
        main.add_command(_command)
