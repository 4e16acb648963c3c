"""Orchestrator overhead: the same stages (a) through Ray with 2 one-thread trial actors,
(b) as a plain sequential loop in one process (timed with torch's default threads and with
one thread; the faster is the baseline). Prints the ratio (a)/(b).

    python benchmarks/overhead.py [SPEC] [--seeds N]

Target on 2 cores: (a)/(b) <= 0.6 (two one-thread trials in parallel beat one two-thread loop).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from orchestrator.cluster import connect
from orchestrator.driver import run_plan
from orchestrator.plan import build_plan
from orchestrator.spec import load_spec
from orchestrator.store import ResultsStore
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
    print(f"ratio (a)/(b) = {a / b:.2f} against the faster sequential loop   [target <= 0.6]")
    print(f"ratio without Ray start-up = {(a - startup) / b:.2f}")
    # Where the time goes: stage compute inside the actors vs the same stages alone in one thread.
    print(f"trial actors busy {busy / (2 * summary.seconds):.0%} of the run; stage compute side by side "
          f"{busy:.1f} s vs {baselines[1]:.1f} s alone in one thread ({busy / baselines[1]:.2f}x)")


if __name__ == "__main__":
    main()
