"""Large reads of a local store split across worker processes.

Reading a small Parquet file is mostly Python and pyarrow holding the GIL, so threads do not overlap it: on a
local disk one process reads on one core whatever its thread count. A sweep before compaction holds tens of
thousands of such files, and `results`, `status` and a resubmit read all of them; in worker processes they read
on every core (measured on 2 cores: `results` on a 20 000-stage store in about half the time).

Workers come from a forkserver: fresh interpreters that import only the store, never a fork of the caller (which
may be a Ray driver, with threads of its own). Each chunk's answer is the same as reading it in the caller, so
when the workers cannot start or one dies, the caller reads the chunks itself.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat

MIN_FILES = 2000   # below this, starting fresh interpreters costs about what the second core saves
MAX_WORKERS = 4    # each holds pyarrow (about 100 MB): a cap on what one read costs in memory

_stores: dict[str, object] = {}  # a worker's store per location, opened once


def workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_WORKERS, cores)


def worth_it(files: int) -> bool:
    return files >= MIN_FILES and workers() > 1


def _store(location: str):
    from orchestrator.store import ResultsStore

    if location not in _stores:
        _stores[location] = ResultsStore(location)
    return _stores[location]


def scan_chunk(location: str, table: str, wanted: list[str], paths: list[str]):
    """One chunk of a scan: the store's `gather` of its files' reads."""
    from orchestrator.store import gather

    store = _store(location)
    return gather(paths, [store._read_one(p, table, wanted) for p in paths])


def footer_chunk(location: str, table: str, paths: list[str]) -> list[tuple]:
    """One chunk of footer reads, as `footer_fields` tuples (a FileInfo cannot travel between processes)."""
    store = _store(location)
    return [store.footer_fields(table, p) for p in paths]


def map_chunks(fn, location: str, *args_then_chunks) -> list | None:
    """fn(location, *args, chunk) for every chunk, in worker processes, in order; None if the workers could not
    be started or one died (the caller then reads the chunks itself)."""
    *args, chunks = args_then_chunks
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["orchestrator.store"])
    try:
        with ProcessPoolExecutor(min(workers(), len(chunks)), mp_context=context) as pool:
            return list(pool.map(fn, repeat(location), *(repeat(a) for a in args), chunks))
    except (BrokenProcessPool, OSError):
        return None
