"""Every method on MNIST-1D through the orchestrator: the frontier, and CTS-KL vs LTR at the highest sparsity.

    python benchmarks/methods.py [SPEC] [--store DIR] [--plot PNG]

Resumable: results go to the store, so running it again only computes what is missing.
Targets reported (reached or not): CTS-KL at least as accurate as SNIP, GraSP and SynFlow
at >= 95% sparsity; CTS-KL / LTR standalone cost ratio <= 0.1.  When the spec has the
`search_bn: running` ablation, its accuracy is printed beside CTS-KL's at >= 95%.
"""
from __future__ import annotations

import argparse
import math

from orchestrator.driver import run_plan
from orchestrator.plan import build_plan
from orchestrator.report import compare, format_frontier, frontier, plot_frontier
from orchestrator.spec import load_spec
from orchestrator.store import ResultsStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/mnist1d_frontier.yaml")
    parser.add_argument("--store", default=None, help="results store (default: the spec's)")
    parser.add_argument("--plot", default="benchmarks/results/mnist1d_frontier.png")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    store = ResultsStore(args.store or spec.store)
    summary = run_plan(build_plan(spec), spec, store)
    print(f"{summary.ran} stages ran ({summary.seconds:.0f} s), {summary.skipped_done} were stored, {summary.failed} failed")

    table = frontier(store.read("points", spec.name))
    print(format_frontier(table, markdown=True))
    # Sanity-check rows stay in the table; without them every method gets its own colour in the plot.
    plot_frontier(table[~table["method"].astype(str).str.contains("+", regex=False)], args.plot)
    print(f"plot: {args.plot} (sanity checks left out)")

    highest = max(spec.target_sparsities())
    cts = "cts_reverse_kl"
    ablation = "cts_reverse_kl[bn=running]"
    c = compare(table, cts, "ltr", highest)
    print(f"\nat {highest:.2%} sparsity: {cts} {c['accuracy_a']:.1%} in {c['standalone_seconds_a']:.1f} s standalone, "
          f"LTR {c['accuracy_b']:.1%} in {c['standalone_seconds_b']:.1f} s; cost ratio CTS/LTR = {c['cost_ratio']:.3f} "
          f"[target <= 0.1]")
    for s in [s for s in spec.target_sparsities() if s >= 0.95 - 1e-9]:
        row = []
        for other in ("snip", "grasp", "synflow"):
            if other in set(table["method"]):
                o = compare(table, cts, other, s)
                verdict = "≥" if o["accuracy_a"] >= o["accuracy_b"] else "<"
                row.append(f"{other} {o['accuracy_b']:.1%} ({verdict})")
        if row and not math.isnan(compare(table, cts, "ltr", s)["accuracy_a"]):
            print(f"  {s:.0%}: {cts} {compare(table, cts, 'ltr', s)['accuracy_a']:.1%} vs " + ", ".join(row))
    if ablation in set(table["method"]):
        print(f"\nsearch BatchNorm: batch statistics ({cts}) vs running statistics ({ablation}), mean ± std over seeds")
        for s in [s for s in spec.target_sparsities() if s >= 0.95 - 1e-9]:
            o = compare(table, cts, ablation, s)
            print(f"  {s:.0%}: {o['accuracy_a']:.1%} ± {o['accuracy_std_a']:.1%} vs "
                  f"{o['accuracy_b']:.1%} ± {o['accuracy_std_b']:.1%} (n = {o['n_a']}, {o['n_b']})")


if __name__ == "__main__":
    main()
