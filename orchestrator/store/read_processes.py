"""Large reads of a local store split across worker processes.

Reading a small Parquet file is mostly Python and pyarrow holding the GIL, so threads do not overlap it: on a
local disk one process reads on one core whatever its thread count. A sweep before compaction holds tens of
thousands of such files, and `results`, `status` and a resubmit read all of them; in worker processes they read
on every core (the figures: docs/results.md, Scale).

A worker is a fresh interpreter running read_worker.py (`python -m orchestrator.store.read_worker`), never a fork of
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
MAX_WORKERS = 4    # each is an interpreter holding pyarrow: a cap on what one read costs in memory
WORKER = [sys.executable, "-m", "orchestrator.store.read_worker"]  # what it runs: read_worker.py


def workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_WORKERS, cores)


def worth_it(files: int) -> bool:
    return files >= MIN_FILES and workers() > 1


def map_chunks(kind: str, location: str, args: tuple, chunks: list[list[str]]) -> list | None:
    """read_worker.KINDS[kind](location, *args, chunk) for every chunk, in worker processes, in order; None if a
    worker could not be started or failed (the caller then reads the chunks itself)."""
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
