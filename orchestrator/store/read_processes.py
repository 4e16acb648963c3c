"""Large reads of a local store split across worker processes.

Reading a small Parquet file is mostly Python and pyarrow holding the GIL, so threads do not overlap it: on a
local disk one process reads on one core whatever its thread count. A sweep before compaction holds tens of
thousands of such files, and `results`, `status` and a resubmit read all of them; in worker processes they read
on every core (measured on 2 cores: `results` on a 20 000-stage store in about half the time).

A worker is a fresh interpreter running this module (`python -m orchestrator.store.read_processes`), never a fork of
the caller (which may be a Ray driver, with threads of its own) and never a re-import of the caller's main
script, as multiprocessing's spawn and forkserver do (a user's script without a main guard would run again in
every worker). Each chunk's answer is the same as reading it in the caller, so when a worker cannot start or
dies, the caller reads the chunks itself.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

MIN_FILES = 2000   # below this, starting fresh interpreters costs about what the second core saves
MAX_WORKERS = 4    # each holds pyarrow (about 100 MB): a cap on what one read costs in memory
WORKER = [sys.executable, "-m", "orchestrator.store.read_processes"]

_stores: dict[str, object] = {}  # a worker's store per location, opened once


def workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_WORKERS, cores)


def worth_it(files: int) -> bool:
    return files >= MIN_FILES and workers() > 1


def _store(location: str):
    from orchestrator.store.results_store import ResultsStore

    if location not in _stores:
        _stores[location] = ResultsStore(location)
    return _stores[location]


def scan_chunk(location: str, table: str, wanted: list[str], paths: list[str]):
    """One chunk of a scan, as the store's `read_chunk` gives it."""
    return _store(location).read_chunk(table, wanted, paths)


def footer_chunk(location: str, table: str, paths: list[str]) -> list[tuple]:
    """One chunk of footer reads, as `footer_fields` tuples (a FileInfo cannot travel between processes)."""
    store = _store(location)
    return [store.footer_fields(table, p) for p in paths]


KINDS = {"scan": scan_chunk, "footers": footer_chunk}


def map_chunks(kind: str, location: str, args: tuple, chunks: list[list[str]]) -> list | None:
    """KINDS[kind](location, *args, chunk) for every chunk, in worker processes, in order; None if a worker could
    not be started or failed (the caller then reads the chunks itself)."""
    n = min(workers(), len(chunks))
    bounds = [len(chunks) * i // n for i in range(n + 1)]
    # The workers import what this process imports, from where it imports it.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    started = []
    try:
        for _ in range(n):  # all start at once: their interpreters boot side by side
            started.append(subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, env=env))
        for i, worker in enumerate(started):
            with worker.stdin:
                pickle.dump((kind, location, args, chunks[bounds[i]:bounds[i + 1]]), worker.stdin)
        answers = []
        for worker in started:
            with worker.stdout:
                data = worker.stdout.read()
            if worker.wait() != 0:
                return None
            answers += pickle.loads(data)
        return answers
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
    finally:
        for worker in started:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _serve() -> None:
    kind, location, args, chunks = pickle.load(sys.stdin.buffer)
    answers = [KINDS[kind](location, *args, chunk) for chunk in chunks]
    pickle.dump(answers, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":
    _serve()
