"""`submit --until-decided` against a fixed 20-seed sweep, on the verdicts setting.

    python benchmarks/until_decided.py [--quick] [--root DIR] [--only sequential|fixed] [--fixed-from-sequential]

specs/until_decided.yaml: the setting of specs/verdicts.yaml (a 1-D CNN on MNIST-1D) trimmed to LTR, CTS-KL and
SNIP at 95/98/99 % sparsity, with a budget of 20 seeds: CTS-KL and SNIP (B) against LTR (A), 6 comparisons,
family-wise alpha 0.05, looks at 6, 10, 15 and 20 seeds. Runs, each through the real CLI in its own store,

1. `orchestrate submit SPEC --until-decided` (the sequential design), and
2. `orchestrate submit SPEC` with the same 20 seeds (the fixed design), analysed with the exact sign-flip test
   of each comparison at 20 seeds at the same Bonferroni level alpha/6;

then prints each decision, the look it came at and the seeds it used, the stages and wall time of each run,
and the sequential rule re-applied to the fixed sweep's results (the same seeds give the same results, so it
must give the same decisions). `--quick` trims the recipe (3 epochs) and the budget (looks at 6 and 8 seeds)
so the whole thing runs in minutes; its numbers are a smoke test of the machinery, not a measurement.
`--fixed-from-sequential` runs the fixed design in a copy of the sequential store under the sequential sweep's
name: the stages both designs share (the same keys, so the same results) are trained once, and only what the
sequential run did not need is trained for the fixed one. Its costs are then the stored stage seconds and work
of every stage of its plan, not the wall time of a run of its own.
Resumable: each store keeps what ran (delete --root to measure again).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUICK_LOOKS = [6, 8]


def spec_dicts(quick: bool, root: Path, shared: bool = False) -> tuple[dict, dict]:
    """The sequential spec (specs/until_decided.yaml, trimmed with --quick) and the same sweep as a fixed design."""
    base = yaml.safe_load((ROOT / "specs" / "until_decided.yaml").read_text())
    if quick:
        base["training"].update(epochs=3, milestones=[2])
        base["seeds"] = base["seeds"][:QUICK_LOOKS[-1]]
        base["until_decided"]["looks"] = QUICK_LOOKS
    tag = "quick" if quick else "full"
    sequential = {**base, "name": f"until_decided_{tag}", "store": str(root / f"sequential_{tag}")}
    fixed = {k: v for k, v in base.items() if k != "until_decided"}
    if shared:
        fixed.update(name=sequential["name"], store=str(root / f"fixed_from_sequential_{tag}"))
    else:
        fixed.update(name=f"fixed_{tag}", store=str(root / f"fixed_{tag}"))
    return sequential, fixed


def submit(spec: dict, root: Path, *extra: str, path: Path | None = None) -> float:
    path = path or root / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--no-progress",
                           "--no-dashboard", *extra], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lines = [line for line in done.stdout.splitlines() if not line.startswith("[")]
    print("\n".join(lines[-16:]))
    # Exit 1 after divergences only: the runs are results (counted at chance), so the benchmark goes on.
    diverged_only = done.returncode == 1 and ("diverged in this submit" in done.stderr
                                              or re.search(r" 0 failed, [1-9]\d* diverged", done.stdout))
    if done.returncode != 0 and not diverged_only:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{spec['name']}: submit exited {done.returncode}")
    if diverged_only:
        print(f"{spec['name']}: some stages diverged (exit 1); they count at chance accuracy")
    return seconds


def stage_count(store: str, sweep: str) -> tuple[int, float, float, int]:
    """Stage attempts stored, their summed seconds (all of them: every attempt was paid for), and the training
    and search epochs of those that recorded work, with how many did not (stages run before the store recorded
    work, schema 4, have none: summing them as 0 would understate the design's cost)."""
    from orchestrator.store.results_store import ResultsStore

    log = ResultsStore(store).committed(sweep, ["stage_key", "seconds", "train_epochs", "search_epochs"])
    rows = log.table.to_pylist()
    counted = [r for r in rows if r["train_epochs"] is not None and r["search_epochs"] is not None]
    epochs = sum(r["train_epochs"] + r["search_epochs"] for r in counted)
    return len(rows), float(sum(r["seconds"] or 0.0 for r in rows)), float(epochs), len(rows) - len(counted)


def fixed_analysis(spec_dict: dict, sequential_dict: dict) -> None:
    """The fixed design on the fixed sweep (exact test at all seeds, alpha/m), and the sequential rule on it."""
    from orchestrator.store import plan_manifests
    from orchestrator.spec.plan import build_plan
    from orchestrator.spec.sweep_spec import parse_spec
    from orchestrator.store.results_store import ResultsStore
    from orchestrator.analysis.stats import exact_sign_flip_pvalue
    from orchestrator.run.until_decided import analyse, comparisons, paired_differences

    fixed = parse_spec(spec_dict)
    as_sequential = parse_spec({**sequential_dict, "name": fixed.name, "store": fixed.store})
    store = ResultsStore(fixed.store)
    plan = build_plan(fixed)
    points = plan_manifests.mark_superseded(store.read("points", fixed.name), {fixed.name: set(plan.stages)})
    family = comparisons(as_sequential)
    looks = list(as_sequential.until_decided.looks)
    level = as_sequential.until_decided.alpha / len(family)
    pairs = paired_differences(points, plan, as_sequential, family, looks[-1])
    print(f"\nfixed design: exact sign-flip test at {looks[-1]} seeds, alpha {level:.4f} per comparison "
          f"(0.05 / {len(family)}); failed seeds {as_sequential.until_decided.failures}:")
    for i, c in enumerate(family):
        d = pairs.diffs[i]
        p = exact_sign_flip_pvalue(d)
        verdict = (f"{c.method_b} better" if d.sum() > 0 else f"{c.method_a} better") if p <= level else "no decision"
        print(f"  {c.method_b} vs {c.method_a} at {c.target:.0%}: B-A {100 * d.mean() / pairs.units[i]:+.2f} "
              f"points, p = {p:.3g}, failed A/B {pairs.failed_a[i]}/{pairs.failed_b[i]}: {verdict}")
    print("the sequential rule applied to the fixed sweep's results (must match the sequential run):")
    undecided, rows = list(range(len(family))), {}
    for k, n in enumerate(looks):
        if not undecided:
            break
        part = [family[i] for i in undecided]
        records = analyse(paired_differences(points, plan, as_sequential, part, n), part, looks, k, as_sequential)
        for i, r in zip(undecided, records):
            rows[i] = r
        undecided = [i for i, r in zip(undecided, records) if r["status"] == "undecided"]
    for i, c in enumerate(family):
        r = rows[i]
        print(f"  {c.method_b} vs {c.method_a} at {c.target:.0%}: {r['verdict'] or r['status']} at look {r['look']} "
              f"({r['seeds']} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, looks at 6 and 8 seeds (minutes)")
    parser.add_argument("--root", default=None, help="folder of the two stores (default /tmp/until_decided_bench)")
    parser.add_argument("--only", choices=["sequential", "fixed"], default=None)
    parser.add_argument("--fixed-from-sequential", action="store_true",
                        help="train only what the fixed design needs beyond the sequential run (see above)")
    args = parser.parse_args()
    root = Path(args.root or "/tmp/until_decided_bench").resolve()
    root.mkdir(parents=True, exist_ok=True)
    sequential, fixed = spec_dicts(args.quick, root, args.fixed_from_sequential)
    print(f"setting: specs/until_decided.yaml{' (--quick)' if args.quick else ''}, methods ltr, cts_reverse_kl, snip; "
          f"{fixed['training']['epochs']} epochs; "
          f"looks {sequential['until_decided']['looks']}; stores under {root}; {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    timing = {}
    if args.only in (None, "sequential"):
        print("\n== submit --until-decided ==")
        timing["sequential"] = submit(sequential, root, "--until-decided")
        from orchestrator.analysis.decision_log import read_looks
        from orchestrator.store.results_store import ResultsStore

        for look in read_looks(ResultsStore(sequential["store"]), sequential["name"]):
            print(f"look {look['look']}: {look['seeds_used']} seeds, methods run for its new seeds: "
                  f"{', '.join(look['methods_run'])}; decided here: "
                  + (", ".join(f"{r['method_b']} at {r['target_sparsity']:.0%} ({r['verdict']})"
                               for r in look["comparisons"] if r["status"] == "decided") or "none"))
    if args.only in (None, "fixed"):
        print(f"\n== fixed {len(fixed['seeds'])}-seed sweep ==")
        if args.fixed_from_sequential and not Path(fixed["store"]).exists():
            if not Path(sequential["store"]).exists():
                raise SystemExit("--fixed-from-sequential: run the sequential design first")
            shutil.copytree(sequential["store"], fixed["store"], ignore=shutil.ignore_patterns("leases"))
            print(f"(in a copy of {sequential['store']}: only the stages the sequential run did not need are trained)")
        fixed_path = root / f"fixed_from_{sequential['name']}.yaml" if args.fixed_from_sequential else None
        timing["fixed"] = submit(fixed, root, path=fixed_path)
    print()
    for name, spec in (("sequential", sequential), ("fixed", fixed)):
        if Path(spec["store"]).exists():  # a design run by an earlier call too: its stored costs
            stages, seconds, epochs, uncounted = stage_count(spec["store"], spec["name"])
            wall = f"wall {timing[name]:.0f} s for this submit" if name in timing else "not submitted by this call"
            work = f"{epochs:.1f} training and search epochs" + (
                f" in the {stages - uncounted} that recorded work ({uncounted} ran before stages recorded it)"
                if uncounted else "")
            print(f"{name}: {wall}; {stages} stage attempt(s) stored, {seconds:.0f} s of stage time, {work}; "
                  f"load average {os.getloadavg()[0]:.1f} at the end")
    if "fixed" in timing:
        fixed_analysis(fixed, sequential)


if __name__ == "__main__":
    main()
