"""Does tuning change the verdicts? Every method with and without the same Ray Tune budget, on MNIST-1D.

    python benchmarks/tuning.py [SPEC] [--store DIR]

The spec lists each method twice, untuned and tuned (`tune:`). Prints the frontier before and after tuning,
the rank of the methods at each sparsity before and after (Kendall's tau), every pairwise verdict that flips
(the paired comparison of `orchestrate compare`), each method's sensitivity (`orchestrate tuning`), and the
tuning cost as a multiple of the untuned sweep. Resumable: a second run computes only what is missing.
"""
from __future__ import annotations

import argparse
import itertools

from scipy.stats import kendalltau

from orchestrator.compare import CompareError, compare_methods
from orchestrator.report import DENSE, finished, format_frontier, frontier
from orchestrator.tuning.summary import format_summary, summarize
from sweep_run import run_spec  # benchmarks/sweep_run.py

TUNED = "[tuned]"


def tuned_name(label: str) -> str:
    """`ltr` -> `ltr[tuned]`; `magnitude[score_at=trained]` -> `magnitude[score_at=trained,tuned]` (the naming rule)."""
    return label[:-1] + ",tuned]" if label.endswith("]") else label + TUNED


def base_name(label: str) -> str:
    """`cts_reverse_kl[tuned]` -> `cts_reverse_kl`; `magnitude[score_at=trained,tuned]` -> `magnitude[score_at=trained]`."""
    if label.endswith(TUNED):
        return label[:-len(TUNED)]
    return label.replace(",tuned]", "]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/tuning.yaml")
    parser.add_argument("--store", default=None, help="results store (default: the spec's)")
    args = parser.parse_args()
    spec, store, plan, points = run_spec(args.spec, args.store)
    table = frontier(points)
    tuned = table["method"].astype(str).str.contains("tuned")
    print("## Before tuning\n")
    print(format_frontier(table[~tuned], markdown=True))
    print("\n## After tuning\n")
    print(format_frontier(table[tuned | (table["method"] == DENSE)], markdown=True))

    print("\n## Ranks (by mean validation-selected test accuracy; 1 = best)\n")
    for sparsity, g in table[table["method"] != DENSE].groupby("target_sparsity"):
        g = g.assign(base=g["method"].astype(str).map(base_name), tuned=g["method"].astype(str).str.contains("tuned"))
        wide = g.pivot_table(index="base", columns="tuned", values="selected_test_accuracy_mean")
        wide = wide.dropna()
        if len(wide) < 2 or True not in wide or False not in wide:
            continue
        before, after = wide[False].rank(ascending=False), wide[True].rank(ascending=False)
        tau, p = kendalltau(before, after)
        ranks = ", ".join(f"{m} {int(before[m])}→{int(after[m])}" for m in wide.index)
        print(f"- {sparsity:.0%}: Kendall tau {tau:.2f} (p = {p:.2g}); {ranks}")

    print("\n## Pairwise verdicts that flip with tuning\n")
    methods = sorted({base_name(m) for m in table["method"].astype(str) if m != DENSE})
    flips = 0
    for a, b in itertools.combinations(methods, 2):
        try:
            before = compare_methods(points, a, b)
            after = compare_methods(points, tuned_name(a), tuned_name(b))
        except CompareError:
            continue
        merged = before.merge(after, on="target_sparsity", suffixes=("_before", "_after"))
        for r in merged.itertuples(index=False):
            if r.verdict_before != r.verdict_after:
                flips += 1
                print(f"- {r.target_sparsity:.0%}, {a} (A) vs {b} (B): {r.verdict_before} "
                      f"({100 * r.mean_diff_before:+.1f} pts, p {r.p_value_before:.3g}) → {r.verdict_after} "
                      f"({100 * r.mean_diff_after:+.1f} pts, p {r.p_value_after:.3g})")
    print(f"{flips} verdict(s) flipped" if flips else "no verdict flipped")

    print("\n## Sensitivity\n")
    tune_keys = {k for k, s in plan.stages.items() if s.kind == "tune"}
    print(format_summary(summarize(store.read("tuning", spec.name), tune_keys), "markdown"))

    stages = store.read("stages", spec.name)
    stages = stages[(stages["status"] == "ok") & stages["stage_key"].isin(set(plan.stages))]
    tune_seconds = stages.loc[stages["kind"] == "tune", "seconds"].sum()
    untuned = {k for k, s in plan.stages.items()
               if s.kind in ("init", "warmup", "dense") or (s.meta.get("method") and "tuned" not in s.meta["method"])}
    untuned_seconds = stages.loc[stages["stage_key"].isin(untuned) & (stages["kind"] != "tune"), "seconds"].sum()
    evaluated = finished(points)
    print(f"\ntuning: {tune_seconds:.0f} s of search, {tune_seconds / untuned_seconds:.2f}x the untuned sweep's "
          f"{untuned_seconds:.0f} s of stages ({len(evaluated)} finished points)")


if __name__ == "__main__":
    main()
