"""Verdicts a reviewer accepts: CTS-KL against LTR (and SNIP, SynFlow, random) with paired statistics.

    python benchmarks/verdicts.py [SPEC] [--store DIR] [--out DIR]

Runs the spec (resumable: a second run computes only what is missing), then prints the frontier and every
method compared with LTR: per sparsity the paired mean difference with its 95 % interval, the exact sign-flip
permutation test, the verdict, the paired cost ratio and, where no difference is detected, the seeds a
difference of the observed size would need. Writes the report (HTML, Markdown, plots) to --out.
"""
from __future__ import annotations

import argparse

from orchestrator.compare import compare_all, compare_methods, format_comparison
from orchestrator.report import format_frontier, frontier
from orchestrator.report_page import build_report
from sweep_run import run_spec  # benchmarks/sweep_run.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/verdicts.yaml")
    parser.add_argument("--store", default=None, help="results store (default: the spec's)")
    parser.add_argument("--out", default="benchmarks/results/verdicts", help="folder for the report")
    args = parser.parse_args()
    spec, store, plan, points = run_spec(args.spec, args.store)
    print(format_frontier(frontier(points), markdown=True))
    print()
    print(format_comparison(compare_all(points, "ltr"), "markdown"))
    print()
    cts = compare_methods(points, "ltr", "cts_reverse_kl")
    print("CTS-KL (B) against LTR (A):")
    for r in cts.itertuples(index=False):
        verdict = {"A better": "LTR better", "B better": "CTS-KL better"}.get(r.verdict, r.verdict)
        extra = "" if r.seeds_for_power is None or r.seeds_for_power != r.seeds_for_power else \
            f"; a difference this size needs about {int(r.seeds_for_power)} seeds for 80 % power"
        print(f"  {r.target_sparsity:.0%}: {100 * r.mean_diff:+.2f} points [{100 * r.ci_low:+.2f}, "
              f"{100 * r.ci_high:+.2f}], p = {r.p_value:.3g} ({r.test}, n = {r.n}): {verdict}{extra}; "
              f"cost CTS/LTR = {r.cost_ratio:.3f}")
    for path in build_report(args.spec, spec, store, points, args.out, "ltr"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
