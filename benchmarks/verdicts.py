"""Verdicts a reviewer accepts: CTS-KL against LTR (and SNIP, SynFlow, random) with paired statistics.

    python benchmarks/verdicts.py [SPEC] [--store DIR] [--out DIR]

Runs the spec (resumable: a second run computes only what is missing), then prints the frontier and every
method compared with LTR as one family of comparisons: per sparsity the paired mean difference with the 95 %
interval that inverts the test, the exact sign-flip test on correct-example counts, its Holm-adjusted p and
Benjamini-Hochberg q over the whole table, the verdict (Holm, the default), the paired cost ratio and the seeds
a 1-point difference needs for 80 % power. Writes the report (HTML, Markdown, plots) to --out.
"""
from __future__ import annotations

import argparse

from orchestrator.analysis.compare import compare_all, format_comparison
from orchestrator.analysis.frontier import format_frontier, frontier
from orchestrator.analysis.report import build_report
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
    table = compare_all(points, "ltr")
    print(format_comparison(table, "markdown"))  # its footer names the family, the adjustment and the notes
    print()
    print("CTS-KL (B) against LTR (A), from the table above (its family, its adjustment):")
    for r in table[table["method_b"] == "cts_reverse_kl"].itertuples(index=False):
        verdict = {"A better": "LTR better", "B better": "CTS-KL better"}.get(r.verdict, r.verdict)
        print(f"  {r.target_sparsity:.0%}: {100 * r.mean_diff:+.2f} points [{100 * r.ci_low:+.2f}, "
              f"{100 * r.ci_high:+.2f}], p = {r.p_value:.3g} ({r.test}, on {r.test_on}, n = {r.n}), Holm p = "
              f"{r.p_holm:.3g}, BH q = {r.q_bh:.3g}: {verdict}; seeds for 80 % power at 1 point: "
              f"{r.seeds_for_power} ({r.seeds_for_power_low}-{r.seeds_for_power_high}); failed LTR/CTS "
              f"{r.failed_a}/{r.failed_b}; cost CTS/LTR = {r.cost_ratio:.3f}")
    for path in build_report(args.spec, spec, store, points, args.out, "ltr"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
