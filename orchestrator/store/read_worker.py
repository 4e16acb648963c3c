"""A read worker of read_processes.py: `python -m orchestrator.store.read_worker`, fed (kind, location, args,
chunks) as a pickle on stdin, answering each chunk as the caller's own read would (scans.py) on stdout.

A module of its own, so that read_processes.py (which scans.py calls) imports nothing of the store.
"""
from __future__ import annotations

import pickle
import sys

from orchestrator.store.scans import StoreReader

_stores: dict[str, StoreReader] = {}  # a worker's store per location, opened once


def _store(location: str) -> StoreReader:
    if location not in _stores:
        _stores[location] = StoreReader(location)
    return _stores[location]


def scan_chunk(location: str, table: str, wanted: list[str], paths: list[str]):
    """One chunk of a scan, as the store's `read_chunk` gives it."""
    return _store(location).read_chunk(table, wanted, paths)


def footer_chunk(location: str, table: str, paths: list[str]) -> list[tuple]:
    """One chunk of footer reads, as `footer_fields` tuples (a FileInfo cannot travel between processes)."""
    store = _store(location)
    return [store.footer_fields(table, p) for p in paths]


KINDS = {"scan": scan_chunk, "footers": footer_chunk}


def _serve() -> None:
    kind, location, args, chunks = pickle.load(sys.stdin.buffer)
    answers = [KINDS[kind](location, *args, chunk) for chunk in chunks]
    pickle.dump(answers, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    _serve()
