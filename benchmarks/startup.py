"""Start-up of `orchestrate submit`: seconds from launching the process to its first stage running, and the
pieces that precede it timed alone in this process (the input check, a private Ray start with the dashboard),
so the figure has something to be read against. A tiny spec (one seed, one epoch), so the sweep itself is short;
each round submits to a new store.

    python benchmarks/startup.py [--rounds N]

The first stage's start is its row's `started_at`, written by its trial actor when the stage is handed to it
(after the actor started and imported torch). Submit checks the data and model in a child process, then starts
Ray (orchestrator/run/driver.py), so the two alone add up to most of its start-up; the rest is the driver's
imports and the trial actors' start (a worker process importing torch). Running the check while Ray starts
was measured and not kept (docs/results.md, Orchestrator overhead: start-up).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SPEC = {"name": "startup", "model": {"name": "mlp", "options": {"hidden": [16]}}, "dataset": {"name": "mnist1d"},
        "training": {"epochs": 1, "batch_size": 128}, "methods": [{"kind": "oneshot", "criterion": "random"}],
        "sparsities": [0.5], "seeds": [0], "resources": {"cpus_per_trial": 1, "max_concurrent": 2}}


def submit_startup(spec: Path, store: Path) -> tuple[float, float]:
    """(launch -> first stage started, launch -> exit) of one `orchestrate submit`, in seconds."""
    from orchestrator.store.results_store import ResultsStore

    launched = time.time()
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--store", str(store),
                          "--no-progress"], capture_output=True, text=True)
    ended = time.time()
    if out.returncode != 0:
        sys.exit(f"submit failed ({out.returncode}):\n{out.stderr[-2000:]}")
    first = ResultsStore(str(store)).read("stages")["started_at"].min().timestamp()
    return first - launched, ended - launched


def parts_alone(spec_path: Path) -> tuple[float, float]:
    """(the input check, a private Ray start with the dashboard) each alone, in seconds."""
    import ray

    from orchestrator.cli.sweep import check_inputs
    from orchestrator.deploy.cluster import connect
    from orchestrator.spec.sweep_spec import load_spec

    spec = load_spec(str(spec_path))
    t0 = time.perf_counter()
    check_inputs(spec)
    check = time.perf_counter() - t0
    t0 = time.perf_counter()
    connect(None, dashboard=True)
    start = time.perf_counter() - t0
    ray.shutdown()
    return check, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(yaml.safe_dump({**SPEC, "store": str(Path(tmp) / "store")}))
        rounds = []
        for i in range(args.rounds):
            first, total = submit_startup(spec, Path(tmp) / f"store{i}")
            check, start = parts_alone(spec)
            rounds.append((first, total, check, start))
            print(f"round {i + 1}: submit's first stage started {first:.1f} s after launch (exit {total:.1f} s); "
                  f"alone: input check {check:.1f} s, Ray start {start:.1f} s")
    first, _, check, start = (statistics.median(r[k] for r in rounds) for k in range(4))
    print(f"median start-up {first:.1f} s; input check + Ray start alone {check + start:.1f} s "
          f"(ratio {first / (check + start):.2f})")
    print(f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after, {os.cpu_count()} logical cores")


if __name__ == "__main__":
    main()
