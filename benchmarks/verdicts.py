"""Verdicts a reviewer accepts: CTS-KL against LTR (and SNIP, SynFlow, random) with paired statistics.

    python benchmarks/verdicts.py [SPEC] [--store DIR] [--out DIR] [--cost flops|epochs|seconds] [--small]

Runs the spec (resumable: a second run computes only what is missing), then prints the frontier and every
method compared with LTR as one family of comparisons: per sparsity the paired mean difference with the 95 %
interval that inverts the test, the exact sign-flip test on correct-example counts, its Holm-adjusted p and
Benjamini-Hochberg q over the whole table, the verdict (Holm, the default), the paired cost ratio and the seeds
a 1-point difference needs for 80 % power. Costs are in work units (`--cost`, FLOPs by default: a rerun
reproduces them exactly on any machine) with the measured seconds beside them, and the machines the stages ran
on named; a digest of every stored work count makes two runs comparable at a glance. Writes the report (HTML,
Markdown, plots) to --out.

`--small` runs a trimmed budget of the same setting (2 seeds, 4 epochs, 95 % sparsity; a few minutes) into a
store of its own (default: <out>/store, which must not hold it already, so that it really runs again): enough
to check that the work column reproduces exactly on a rerun.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

import yaml

from orchestrator.analysis.compare import compare_all, format_comparison
from orchestrator.analysis.cost_units import COSTS
from orchestrator.analysis.frontier import MACHINE_HEADER, format_frontier, frontier, machine_cells, machines
from orchestrator.analysis.report import build_report
from orchestrator.store.schemas import WORK_COLUMNS
from orchestrator.analysis.text_tables import render
from sweep_run import run_spec  # benchmarks/sweep_run.py

# The trimmed budget of --small: the same model, data, recipe shape and methods, fewer seeds, epochs, targets.
SMALL = {"name": "verdicts-small", "seeds": [0, 1], "sparsities": [0.95],
         "training": {"epochs": 4, "milestones": [2, 3]}}


def small_spec(spec_path: str, out: str) -> str:
    """The spec trimmed to SMALL, written into `out`; its path."""
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    spec.update({k: v for k, v in SMALL.items() if k != "training"})
    spec["training"] = {**spec["training"], **SMALL["training"]}
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "verdicts-small.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    return path


def work_digest(store, sweep: str, keys: set[str]) -> tuple[str, int]:
    """SHA-256 (16 hex digits) of every ok stage's stored work counts, by stage key; and how many stages."""
    stages = store.read("stages", sweep)
    ok = stages[(stages["status"] == "ok") & stages["stage_key"].isin(keys)]
    rows = sorted(ok[["stage_key", *WORK_COLUMNS]].astype(object).itertuples(index=False, name=None))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16], len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/verdicts.yaml")
    parser.add_argument("--store", default=None, help="results store (default: the spec's; with --small <out>/store)")
    parser.add_argument("--out", default="benchmarks/results/verdicts", help="folder for the report")
    parser.add_argument("--cost", choices=COSTS, default="flops", help="the unit of the cost columns")
    parser.add_argument("--small", action="store_true", help="a trimmed budget (2 seeds, 4 epochs, 95 %%)")
    args = parser.parse_args()
    spec_path, store_location = args.spec, args.store
    if args.small:
        spec_path = small_spec(args.spec, args.out)
        store_location = store_location or os.path.join(args.out, "store")
        if os.path.exists(store_location):
            sys.exit(f"--small: {store_location} exists; give a new --store so that the sweep runs again")
    spec, store, plan, points = run_spec(spec_path, store_location)
    print(format_frontier(frontier(points, cost=args.cost), markdown=True, cost=args.cost))
    print()
    table = compare_all(points, "ltr", cost=args.cost)
    print(format_comparison(table, "markdown"))  # its footer names the family, the adjustment and the notes
    print()
    ratios = {unit: compare_all(points, "ltr", cost=unit) for unit in COSTS}
    print("CTS-KL (B) against LTR (A), from the table above (its family, its adjustment):")
    for r in table[table["method_b"] == "cts_reverse_kl"].itertuples(index=False):
        verdict = {"A better": "LTR better", "B better": "CTS-KL better"}.get(r.verdict, r.verdict)
        costs = ", ".join(f"{unit} {_ratio(ratios[unit], r.target_sparsity):.4g}" for unit in COSTS)
        print(f"  {r.target_sparsity:.0%}: {100 * r.mean_diff:+.2f} points [{100 * r.ci_low:+.2f}, "
              f"{100 * r.ci_high:+.2f}], p = {r.p_value:.3g} ({r.test}, on {r.test_on}, n = {r.n}), Holm p = "
              f"{r.p_holm:.3g}, BH q = {r.q_bh:.3g}: {verdict}; seeds for 80 % power at 1 point: "
              f"{r.seeds_for_power} ({r.seeds_for_power_low}-{r.seeds_for_power_high}); failed LTR/CTS "
              f"{r.failed_a}/{r.failed_b}; cost CTS/LTR in {costs}")
    print()
    ran = store.read("stages", spec.name)
    ran = ran[(ran["status"] == "ok") & ran["stage_key"].isin(set(plan.stages))]
    print("machines the stages ran on:")
    print(render(MACHINE_HEADER, machine_cells(machines(ran)), left={0, 1, 3}, markdown=True))
    digest, counted = work_digest(store, spec.name, set(plan.stages))
    print(f"\nwork digest of {counted} stages (SHA-256 of every stored work count): {digest}; "
          f"total {ran['train_flops'].sum() + ran['search_flops'].sum():.6g} train + search FLOPs, "
          f"{ran['seconds'].sum():.1f} s of stage time")
    for path in build_report(spec_path, spec, store, points, args.out, "ltr", cost=args.cost):
        print(f"wrote {path}")


def _ratio(frame, target: float) -> float:
    row = frame[(frame["method_b"] == "cts_reverse_kl") & ((frame["target_sparsity"] - target).abs() < 1e-9)]
    return float(row["cost_ratio"].iloc[0])


if __name__ == "__main__":
    main()
