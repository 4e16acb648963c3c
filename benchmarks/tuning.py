"""Does tuning change the verdicts? Every method with and without the same Ray Tune budget, on MNIST-1D.

    python benchmarks/tuning.py [SPEC] [--store DIR]

The spec lists each method twice, untuned and tuned (`tune:`). Prints the frontier before and after tuning,
the rank of the methods at each sparsity before and after (Kendall's tau), every pairwise comparison whose
difference changes with tuning (a paired sign-flip test of the per-seed change, Holm over all of them), each
method's sensitivity (`orchestrate tuning`), and the tuning cost as a multiple of the untuned sweep.
Resumable: a second run computes only what is missing.
"""
from __future__ import annotations

import argparse
import itertools

from scipy.stats import kendalltau

from orchestrator.analysis.compare import compare_changes
from orchestrator.analysis.frontier import DENSE, finished, format_frontier, frontier
from orchestrator.analysis.stats import smallest_rejecting_n
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

    print("\n## Pairwise comparisons that change with tuning\n")
    # A flip is judged by a paired test of the change of the difference, (B - A tuned) - (B - A untuned) per
    # seed, over every pair and sparsity as one Holm family: not by two verdicts on either side of a threshold.
    methods = sorted({base_name(m) for m in table["method"].astype(str) if m != DENSE})
    pairs = [((a, b), (tuned_name(a), tuned_name(b))) for a, b in itertools.combinations(methods, 2)]
    changes = compare_changes(points, pairs)
    if changes.empty:
        print("no pair of methods has both settings on shared seeds")
    else:
        family, n_min = len(changes), smallest_rejecting_n(0.05, len(changes), "holm")
        print(f"family: {family} changes (every pair of methods at every sparsity), Holm-adjusted p < 0.05; at "
              f"n = {int(changes['n'].min())}-{int(changes['n'].max())} seeds (Holm can reject from n = {n_min})\n")
        for r in changes[changes["changed"]].itertuples(index=False):
            print(f"- {r.target_sparsity:.0%}, {r.before_a} (A) vs {r.before_b} (B): B−A {100 * r.diff_before:+.1f} "
                  f"→ {100 * r.diff_after:+.1f} pts (change {100 * r.change:+.1f}, p {r.p_value:.3g}, Holm p "
                  f"{r.p_holm:.3g}, BH q {r.q_bh:.3g}, n {r.n}, on {r.test_on})")
        flips = int(changes["changed"].sum())
        smallest = changes.sort_values("p_holm").iloc[0]
        print(f"{flips} of {family} comparison(s) changed with tuning" if flips else
              f"no comparison changed detectably with tuning (smallest Holm p {smallest.p_holm:.3g}, BH q "
              f"{changes['q_bh'].min():.3g})")

    print("\n## Sensitivity\n")
    tune_keys = {k for k, s in plan.stages.items() if s.kind == "tune"}
    print(format_summary(summarize(store.read("tuning", spec.name), store.read("stages", spec.name), tune_keys),
                         "markdown"))

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
