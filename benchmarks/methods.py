"""Every method on MNIST-1D through the orchestrator: the frontier, and how each compares with LTR and CTS-KL.

    python benchmarks/methods.py [SPEC] [--store DIR] [--plot PNG]

Resumable: results go to the store, so running it again only computes what is missing. Prints the frontier
(validation-selected test accuracy with 95 % intervals and costs), then every method paired against LTR and
against CTS-KL (`orchestrate compare`), and CTS-KL's standalone cost against LTR's at the highest sparsity.
"""
from __future__ import annotations

import argparse

from orchestrator.analysis.compare import compare_all, format_comparison
from orchestrator.analysis.frontier import format_frontier, frontier, plot_frontier
from sweep_run import run_spec  # benchmarks/sweep_run.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/mnist1d_frontier.yaml")
    parser.add_argument("--store", default=None, help="results store (default: the spec's)")
    parser.add_argument("--plot", default="benchmarks/results/mnist1d_frontier.png")
    args = parser.parse_args()
    spec, store, plan, points = run_spec(args.spec, args.store)
    table = frontier(points)
    print(format_frontier(table, markdown=True))
    # Sanity-check rows stay in the table; without them every method gets its own colour in the plot.
    plot_frontier(table[~table["method"].astype(str).str.contains("+", regex=False)], args.plot)
    print(f"plot: {args.plot} (sanity checks left out)")
    for reference in ("ltr", "cts_reverse_kl"):
        print(f"\nevery method (B) against {reference} (A), paired by seed:")
        print(format_comparison(compare_all(points, reference), "markdown"))
    highest = max(spec.target_sparsities())
    c = compare_all(points, "ltr")  # the family the table above judged CTS-KL in
    c = c[c["method_b"] == "cts_reverse_kl"]
    top = c[(c["target_sparsity"] - highest).abs() < 1e-9].iloc[0]
    print(f"\nat {highest:.0%}: cost CTS-KL / LTR = {top.cost_ratio:.3f} [{top.cost_ratio_low:.3f}, "
          f"{top.cost_ratio_high:.3f}] (geometric mean of per-seed standalone-cost ratios)")


if __name__ == "__main__":
    main()
