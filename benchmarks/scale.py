"""Scale: validating (planning) 100 000 points, driving 5 000 trivial stages, and reading a 20 000-stage store.

    python benchmarks/scale.py [--points 100000] [--stages 5000] [--store-stages 20000]

Each part runs in its own process so its peak RSS is its own. Prints, on this machine:
  plan    seconds and peak RSS of `validate` on the points         (targets < 5 s, < 500 MB)
  driver  overhead per stage, driver peak RSS, object-store peak    (targets < 10 ms, < 500 MB, bounded)
  store   no-op resubmit, `status` and `results` before and after `compact` (targets < 20 s before, < 5 s after)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spec(points: int, sweep: str, hidden: list[int]):
    from orchestrator.spec.sweep_spec import parse_spec

    sparsities = 50
    seeds = max(1, round(points / sparsities))
    return parse_spec({
        "name": sweep, "model": {"name": "mlp", "options": {"hidden": hidden}},
        "dataset": {"name": "synthetic", "options": {"n_train": 32, "n_test": 32}},
        "training": {"epochs": 1, "batch_size": 32, "rewind": "0it"},
        "methods": [{"kind": "oneshot", "criterion": "random"}],
        "sparsities": [round(0.5 + 0.009 * i, 4) for i in range(sparsities)], "seeds": list(range(seeds)),
        "resources": {"max_concurrent": 2}})


def part_plan(points: int) -> dict:
    """`orchestrate validate` of a spec of `points` points: its own function in this process (spec, store
    location, data and model check in a child, plan, summary), and the whole command as a user runs it."""
    import yaml

    from orchestrator.cli.sweep import _summary_lines, validate_spec

    folder = tempfile.mkdtemp(prefix="ts-plan-")
    path = f"{folder}/plan.yaml"
    with open(path, "w") as f:
        yaml.safe_dump({
            "name": "plan", "model": {"name": "mlp"}, "dataset": {"name": "mnist1d"}, "training": {"epochs": 10},
            "methods": [{"kind": "ltr"}] + [{"kind": "oneshot", "criterion": c}
                                            for c in ("random", "magnitude", "snip", "grasp", "synflow")]
                       + [{"kind": "cts"}],
            "sparsities": [round(0.5 + 0.0049 * i, 4) for i in range(100)], "seeds": list(range(points // 700)),
            "store": f"{folder}/store"}, f)
    t0 = time.perf_counter()
    spec, plan = validate_spec(path)
    _summary_lines(spec, plan)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", path], check=True, capture_output=True)
    command = time.perf_counter() - t0
    return {"points": len(plan.points()), "stages": len(plan.stages), "seconds": seconds, "command_s": command,
            "peak_rss_mb": _peak_mb()}


def part_driver(stages: int) -> dict:
    import ray

    from orchestrator.run.driver import run_plan
    from orchestrator.spec.plan import build_plan
    from orchestrator.store.results_store import ResultsStore

    # ~1.2 MB of weights per stage output, so the object store (not the driver's inline store) holds them.
    spec = _spec(round(stages / 1.06), "driver", [1024, 256])
    plan = build_plan(spec)
    store = ResultsStore(tempfile.mkdtemp(prefix="ts-scale-"))
    from orchestrator.deploy.cluster import connect
    connect(None, dashboard=False, num_cpus=2)  # private and loopback-only, as `submit` starts it
    from ray._private.internal_api import memory_summary

    import psutil

    samples: list[tuple[int, float]] = []
    rss: list[tuple[float, float]] = []  # the driver's RSS over time: flat while stages run, or growing?
    compaction: list[tuple[float, float]] = []  # (start, end) of the auto-compaction that ends the run

    def echo(message: str = "", *_, **__) -> None:
        if message.startswith("compacted "):  # "compacted N small result files (S s)"
            end = time.monotonic()
            compaction.append((end - float(message.rsplit("(", 1)[1].split()[0]), end))
    stop = threading.Event()
    me = psutil.Process()

    def sample():
        while not stop.wait(2.0):
            rss.append((time.monotonic(), me.memory_info().rss / 2 ** 20))
            text = memory_summary(stats_only=True)
            for line in text.splitlines():
                if "Plasma memory usage" in line:
                    samples.append((len(store.list_files("stages", "driver")), float(line.split()[3])))

    threading.Thread(target=sample, daemon=True).start()
    cpu0 = time.process_time()
    summary = run_plan(plan, spec, store, progress=False, echo=echo)
    cpu = time.process_time() - cpu0
    peak_rss = _peak_mb()  # now, before this script's own reads below
    wall = summary.seconds  # the scheduling loop: Ray's start-up and the final auto-compaction excluded
    stop.set()
    log = store.committed("driver", ["seconds"]).table.column("seconds").to_pylist()
    ray.shutdown()
    busy = sum(s or 0.0 for s in log)
    n = summary.ran
    half = len(samples) // 2
    start = compaction[0][0] if compaction else float("inf")
    running = [r for t, r in rss if t < start]
    rss_half = len(running) // 2
    return {"stages": n, "failed": summary.failed, "wall_s": wall,
            "overhead_ms_per_stage": 1000 * (wall - busy / 2) / n, "driver_cpu_ms_per_stage": 1000 * cpu / n,
            "driver_peak_rss_mb": peak_rss,
            "driver_rss_first_half_mb": max(running[:rss_half], default=0.0),
            "driver_rss_second_half_mb": max(running[rss_half:], default=0.0),
            "driver_rss_compaction_mb": max((r for t, r in rss if t >= start), default=0.0),
            "compaction_s": compaction[0][1] - compaction[0][0] if compaction else 0.0,
            "object_store_peak_mib": max((m for _, m in samples), default=0.0),
            "object_store_peak_first_half_mib": max((m for _, m in samples[:half]), default=0.0),
            "object_store_peak_second_half_mib": max((m for _, m in samples[half:]), default=0.0)}


def _fill_store(location: str, stages: int):
    """A store holding a finished sweep of `stages` stages, written through the real commit path."""
    from datetime import datetime, timezone

    from orchestrator.spec.plan import build_plan
    from orchestrator.store.results_store import ResultsStore

    spec = _spec(round(stages / 1.06), "store", [8])
    plan = build_plan(spec)
    store = ResultsStore(location)
    now = datetime.now(timezone.utc)
    for i, stage in enumerate(plan.stages.values()):
        row = {"kind": stage.kind, "label": stage.label, "seed": stage.seed, "status": "ok", "seconds": 0.01,
               "started_at": now, "finished_at": now, "method": stage.meta.get("method")}
        points = [{"method": stage.meta["method"], "seed": stage.seed, "status": "ok", "test_accuracy": 0.5,
                   "target_sparsity": stage.params.get("target_sparsity", 0.0), "requested": True}] \
            if stage.produces_point else []
        curve = [{"phase": "train", "epoch": 1.0, "train_loss": 1.0}]
        store.commit("store", stage.key, 1, row, points, curve)
    return spec, plan, store


def part_store(stages: int) -> dict:
    from click.testing import CliRunner

    from orchestrator.cli import main
    from orchestrator.run.driver import run_plan

    location = tempfile.mkdtemp(prefix="ts-store-")
    t0 = time.perf_counter()
    spec, plan, store = _fill_store(location, stages)
    out = {"stages": len(plan.stages), "fill_s": time.perf_counter() - t0}

    def timed(label: str) -> None:
        t = time.perf_counter()
        summary = run_plan(plan, spec, store, progress=False, echo=lambda *_: None)
        assert summary.ran == 0 and summary.skipped_done == len(plan.stages), summary
        out[f"resubmit_{label}_s"] = time.perf_counter() - t
        for verb in ("status", "results"):
            t = time.perf_counter()
            args = [verb, "--store", location, "--sweep", "store"]
            r = CliRunner().invoke(main, args)
            assert r.exit_code == 0, r.output
            out[f"{verb}_{label}_s"] = time.perf_counter() - t

    timed("before")
    t = time.perf_counter()
    store.compact("store")
    out["compact_s"] = time.perf_counter() - t
    timed("after")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--stages", type=int, default=5_000)
    parser.add_argument("--store-stages", type=int, default=20_000)
    parser.add_argument("--part", choices=["plan", "driver", "store"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        fn = {"plan": lambda: part_plan(args.points), "driver": lambda: part_driver(args.stages),
              "store": lambda: part_store(args.store_stages)}[args.part]
        print(json.dumps(fn()))
        return
    results = {}
    for part in ("plan", "driver", "store"):
        out = subprocess.run([sys.executable, __file__, "--part", part, "--points", str(args.points),
                              "--stages", str(args.stages), "--store-stages", str(args.store_stages)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{part} failed:\n{out.stderr[-3000:]}")
        results[part] = json.loads(out.stdout.strip().splitlines()[-1])
        print(part, json.dumps(results[part], indent=1), flush=True)
    p, d, s = results["plan"], results["driver"], results["store"]
    print(f"\nvalidate (plan): {p['points']} points in {p['seconds']:.2f} s, peak RSS {p['peak_rss_mb']:.0f} MB; "
          f"the whole `orchestrate validate` command {p['command_s']:.2f} s [targets < 5 s, < 500 MB]")
    print(f"driver: {d['stages']} stages, overhead {d['overhead_ms_per_stage']:.1f} ms/stage (driver CPU "
          f"{d['driver_cpu_ms_per_stage']:.1f} ms/stage), driver peak RSS {d['driver_peak_rss_mb']:.0f} MB (sampled "
          f"while stages run: first half {d['driver_rss_first_half_mb']:.0f}, second half "
          f"{d['driver_rss_second_half_mb']:.0f}; auto-compaction {d['driver_rss_compaction_mb']:.0f} over "
          f"{d['compaction_s']:.0f} s), "
          f"object store peak {d['object_store_peak_mib']:.0f} MiB (first half {d['object_store_peak_first_half_mib']:.0f},"
          f" second half {d['object_store_peak_second_half_mib']:.0f}) [targets < 10 ms, < 500 MB, bounded]")
    print(f"store of {s['stages']} stages: resubmit {s['resubmit_before_s']:.1f} s, status {s['status_before_s']:.1f} s, "
          f"results {s['results_before_s']:.1f} s before compaction [< 20 s]; compact {s['compact_s']:.1f} s; after: "
          f"resubmit {s['resubmit_after_s']:.1f} s, status {s['status_after_s']:.1f} s, "
          f"results {s['results_after_s']:.1f} s [< 5 s]")


if __name__ == "__main__":
    main()
