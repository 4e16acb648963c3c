"""Orchestrator overhead: the same stages (a) through Ray with 2 one-thread trial actors,
(b) as a plain sequential loop in one process (timed with torch's default threads and with
one thread; the faster is the baseline). Prints the ratio (a)/(b), and (a) against its floor: the same stages
run two at a time, which is the actors' busy time (the stages' own seconds, side by side) over 2. How much two
one-thread stages slow each other down is the machine's (memory bandwidth, a shared core); what is left above
the floor is the orchestrator's.

    python benchmarks/overhead.py [SPEC] [--seeds N]

Target: (a) <= 1.05 x the side-by-side floor.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from orchestrator.deploy.cluster import connect
from orchestrator.run.driver import run_plan
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import load_spec
from orchestrator.store.results_store import ResultsStore
from workers.data.dataset import dataset_from_config
from workers.stages.dispatch import run_stage


def sequential(plan) -> float:
    """Baseline (b): every stage in topological order in this process, outputs kept in a dict."""
    cfg = plan.config["dataset"]
    t0 = time.perf_counter()
    data = dataset_from_config(cfg)
    outputs = {}
    for stage in plan.stages.values():
        inputs = {role: outputs[stage.parents[role]] for role in stage.inputs}
        outputs[stage.key] = run_stage(stage.payload(plan.config), inputs, data).outputs
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/quickstart.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="use only the first N seeds of the spec")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    if args.seeds:
        spec = spec.model_copy(update={"seeds": spec.seeds[:args.seeds]})
    spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"cpus_per_trial": 1, "max_concurrent": 2})})
    plan = build_plan(spec)
    load0 = os.getloadavg()[0]
    print(f"{len(plan.stages)} stages of {spec.name} ({spec.model.name} on {spec.dataset.name})")

    baselines = {}
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        baselines[threads] = sequential(plan)
        print(f"(b) sequential loop, one process, {threads} torch thread(s): {baselines[threads]:.1f} s")
    b = min(baselines.values())  # compare against the faster baseline: the honest one

    import ray
    with tempfile.TemporaryDirectory() as store:
        t0 = time.perf_counter()
        # The private, loopback-only cluster `submit` starts (with its dashboard): ray.init without an address
        # would join whatever cluster Ray last recorded on this machine.
        connect(None, dashboard=True, num_cpus=2)
        startup = time.perf_counter() - t0
        summary = run_plan(plan, spec, ResultsStore(store), progress=False, echo=lambda *_: None)
        a = time.perf_counter() - t0
        ray.shutdown()
        busy = ResultsStore(store).read("stages")["seconds"].astype(float).sum()
    assert summary.failed == 0, summary.failures
    print(f"(a) orchestrator, 2 one-thread trial actors: {a:.1f} s (Ray start {startup:.1f} s, stages {summary.seconds:.1f} s)")
    print(f"ratio (a)/(b) = {a / b:.2f} against the faster sequential loop")
    print(f"ratio without Ray start-up = {(a - startup) / b:.2f}")
    # The floor: the stages' own compute, two at a time, as they ran side by side in the actors.
    floor = busy / 2
    print(f"stage compute side by side {busy:.1f} s vs {baselines[1]:.1f} s alone in one thread "
          f"({busy / baselines[1]:.2f}x each); floor (two at a time) {floor:.1f} s = {floor / b:.2f} of (b)")
    print(f"ratio (a)/floor = {a / floor:.3f}, without Ray start-up {(a - startup) / floor:.3f}   [target <= 1.05]; "
          f"trial actors busy {busy / (2 * summary.seconds):.0%} of the run")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"
    print(f"machine: {cpu}, {os.cpu_count()} logical cores, load average {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    if a / floor > 1.05:
        sys.exit(3)


if __name__ == "__main__":
    main()
