"""What every `orchestrate` verb shares: one-line bad-input errors (exit 2), loading a spec, opening a store."""
from __future__ import annotations

import os
import sys

import click

from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.store import ResultsStore, StoreError

BAD_INPUT = 2
SWEEP_BUSY = 3  # another driver holds the sweep's lease
CLUSTER_DID_NOT_START = 4  # a private Ray cluster failed to start, also on its retry
INTERRUPTED = 130  # Ctrl-C, or a stop request from `orchestrate cancel`


def fail(message: str) -> None:
    click.echo(message, err=True)
    sys.exit(BAD_INPUT)


def spec_from(path: str) -> SweepSpec:
    try:
        return load_spec(path)
    except SpecError as err:
        fail(str(err))


def store_at(location: str) -> ResultsStore:
    try:
        return ResultsStore(location)
    except StoreError as err:
        fail(str(err))


def plan_of(spec: SweepSpec):
    """The sweep's plan, its keys including the data's content; unreadable data files fail on one line."""
    from orchestrator.plan import sweep_plan
    from workers.data.files import DataError

    try:
        return sweep_plan(spec)
    except DataError as err:
        fail(f"dataset: {err}")


def check_output(path: str) -> None:
    """An output file's folder must exist: fail on one line before any work, rather than after it."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        fail(f"-o {path}: is a directory, expected a file name")
    if not os.path.isdir(folder):
        fail(f"-o {path}: no such directory {folder}")
