"""compare_methods / compare_all / format_comparison on a hand-built points table with known answers."""
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis.compare import (COMPARE_COLUMNS, CompareError, compare_all, compare_methods, comparison_cells,
                                  format_comparison)
from orchestrator.analysis.stats import B_BETTER, NO_DIFFERENCE, TOO_FEW

SWEEP = "s"
A5 = [0.80 + 0.01 * i for i in range(7)]              # ltr at 0.5, seeds 0-6
D5 = [0.01, 0.02, 0.015, 0.03, 0.01, 0.02]            # cts-kl - ltr at 0.5, seeds 0-5: all positive
COST_B5 = [10.0, 20.0, 10.0, 20.0, 10.0, 20.0]        # cts-kl standalone seconds; ltr's are 40
A9 = [0.60, 0.62, 0.64]
D9 = [-0.02, 0.01, -0.03]
SELECTED_OFFSET = -0.001  # selected_test_accuracy = test_accuracy - 0.001, so the metric choice is visible
EXAMPLES, CLASSES = 1000, 10  # every accuracy is a whole count of correct examples out of 1000


def _row(method, target, seed, acc, *, attempt=1, status="ok", requested=True, standalone=40.0, sweep=SWEEP):
    selected = None if acc is None else acc + SELECTED_OFFSET
    count = lambda v: None if v is None else round(v * EXAMPLES)  # noqa: E731
    return {"sweep": sweep, "method": method, "stage_key": f"{method}-{target}-{seed}", "attempt": attempt,
            "seed": seed, "target_sparsity": target, "sparsity": target, "requested": requested,
            "test_accuracy": acc, "val_accuracy": None if acc is None else acc + 0.002,
            "selected_test_accuracy": selected, "test_correct": count(acc), "selected_test_correct": count(selected),
            "test_examples": None if acc is None else EXAMPLES, "num_classes": None if acc is None else CLASSES,
            "standalone_seconds": standalone, "marginal_seconds": 1.0, "status": status}


def _rows() -> list[dict]:
    rows = [_row("dense", 0.0, s, 0.9, standalone=5.0) for s in range(3)]
    rows += [_row("ltr", 0.5, s, a) for s, a in enumerate(A5)]
    rows.append(_row("ltr", 0.5, 7, None, status="failed"))
    # cts-kl seed 0 ran twice; the newer ok attempt (listed first) supersedes 0.10.
    rows.append(_row("cts-kl", 0.5, 0, A5[0] + D5[0], attempt=2, standalone=COST_B5[0]))
    rows.append(_row("cts-kl", 0.5, 0, 0.10, attempt=1, standalone=99.0))
    rows += [_row("cts-kl", 0.5, s, A5[s] + D5[s], standalone=COST_B5[s]) for s in range(1, 6)]
    rows.append(_row("cts-kl", 0.5, 8, 0.95, standalone=10.0))  # a seed ltr does not have
    rows += [_row("ltr", 0.9, s, a, standalone=60.0) for s, a in enumerate(A9)]
    rows += [_row("cts-kl", 0.9, s, a + d, standalone=30.0) for s, (a, d) in enumerate(zip(A9, D9))]
    rows.append(_row("ltr", 0.7, 0, 0.77, requested=False))  # an intermediate LTR level
    rows.append(_row("cts-kl", 0.7, 0, 0.78))
    rows += [_row("magnitude", 0.5, s, 0.7) for s in (10, 11, 12)]  # no seed in common with ltr
    return rows


@pytest.fixture
def points() -> pd.DataFrame:
    return pd.DataFrame(_rows())


def _one_line_error(match: str, func, *args, **kwargs) -> str:
    with pytest.raises(CompareError, match=match) as info:
        func(*args, **kwargs)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    return str(info.value)


def test_pairs_by_seed_counts_unpaired_seeds_and_uses_the_latest_attempt(points):
    fr = compare_methods(points, "ltr", "cts-kl")
    assert list(fr.columns) == COMPARE_COLUMNS
    # 0.7 is left out: only cts-kl requested it (ltr's row there is an intermediate level).
    assert list(fr["target_sparsity"]) == [0.5, 0.9]
    r5, r9 = fr.iloc[0], fr.iloc[1]

    # ltr's seeds 6 (ok) and 7 (failed) have no cts-kl partner, nor has cts-kl's seed 8.
    assert (r5.n, r5.unpaired_a, r5.unpaired_b, r5.dropped, r5.failed_a, r5.failed_b) == (6, 2, 1, 0, 0, 0)
    assert r5.mean_a == pytest.approx(np.mean(A5[:6]) + SELECTED_OFFSET)
    assert r5.mean_b == pytest.approx(np.mean(np.add(A5[:6], D5)) + SELECTED_OFFSET)  # not the stale 0.10
    assert r5.mean_diff == pytest.approx(np.mean(D5))
    assert r5.p_value == 2 / 64 and r5.test == "exact" and r5.test_on == "counts"
    # Two rows are a family of two: Holm doubles the smallest p (2/64), so 6 seeds cannot pass it.
    assert (r5.family_size, r5.adjust, r5.p_holm, r5.q_bh) == (2, "holm", 4 / 64, 4 / 64)
    assert r5.verdict == TOO_FEW and r5.can_reject
    alone = compare_methods(points, "ltr", "cts-kl", adjust="none").iloc[0]
    assert alone.verdict == B_BETTER and alone.p_value == 2 / 64
    assert compare_methods(points, "ltr", "cts-kl", adjust="bh").iloc[0].verdict == NO_DIFFERENCE
    # The interval inverts the test: it excludes 0 exactly when p < alpha, which Holm's verdict says apart.
    assert r5.interval == "sign-flip" and r5.ci_low > 0
    assert "the interval (one comparison alone) excludes 0, the Holm-adjusted test" in r5.note

    logs = np.log(np.array(COST_B5) / 40.0)  # ratios 1/4 and 1/2, three seeds each
    half = 2.570581835636314 * logs.std(ddof=1) / math.sqrt(6)  # t_{0.975, 5}
    assert r5.cost_ratio == pytest.approx(math.sqrt(0.25 * 0.5))
    assert (r5.cost_ratio_low, r5.cost_ratio_high) == pytest.approx(
        (math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert r5.cost_pairs == 6

    assert (r9.n, r9.unpaired_a, r9.unpaired_b) == (3, 0, 0)
    assert r9.mean_diff == pytest.approx(np.mean(D9))
    # Of the 8 sign patterns of (-20, +10, -30) examples, |sum| >= 40 for (-, +, -), (-, -, -) and mirrors.
    assert r9.verdict == TOO_FEW and not r9.can_reject and r9.p_value == 4 / 8
    assert r9.note == "n=3 can never reach p<0.05; needs >= 6 seeds"
    assert (r9.ci_low, r9.ci_high) == (-math.inf, math.inf)  # 3 pairs cannot exclude any shift
    assert r9.cost_ratio == pytest.approx(0.5) and r9.cost_ratio_low == pytest.approx(0.5)


def test_the_metric_is_a_parameter_and_all_levels_brings_intermediate_levels_in(points):
    fr = compare_methods(points, "ltr", "cts-kl", metric="test_accuracy")
    assert fr.iloc[0].mean_a == pytest.approx(np.mean(A5[:6]))
    assert fr.iloc[0].metric == "test_accuracy"
    every = compare_methods(points, "ltr", "cts-kl", all_levels=True)
    assert list(every["target_sparsity"]) == [0.5, 0.7, 0.9]


def test_a_missing_metric_value_drops_the_pair_and_counts_it(points):
    points.loc[(points["method"] == "cts-kl") & (points["seed"] == 3), "selected_test_accuracy"] = math.nan
    r5 = compare_methods(points, "ltr", "cts-kl").iloc[0]
    assert (r5.n, r5.dropped, r5.unpaired_a, r5.unpaired_b) == (5, 1, 2, 1)
    kept = [0, 1, 2, 4, 5]
    assert r5.mean_a == pytest.approx(np.mean([A5[i] for i in kept]) + SELECTED_OFFSET)
    assert r5.mean_diff == pytest.approx(np.mean([D5[i] for i in kept]))
    # The cost ratio speaks of the same seeds as the difference: that seed's cost (1/4 of ltr's) is left out.
    assert r5.cost_pairs == 5
    assert r5.cost_ratio == pytest.approx(math.exp(np.mean(np.log(np.array(COST_B5)[kept] / 40.0))))


def test_raw_parquet_style_categoricals_are_accepted(points):
    points["sweep"] = points["sweep"].astype("category")
    points["method"] = points["method"].astype("category")
    assert compare_methods(points, "ltr", "cts-kl").iloc[0].n == 6


def test_unknown_method_names_it_with_a_suggestion(points):
    message = _one_line_error("no method 'ltrr' in the finished points", compare_methods, points, "ltrr", "cts-kl")
    assert message.endswith("did you mean 'ltr'?")
    _one_line_error("no method 'zzz'.*known: cts-kl, dense, ltr, magnitude", compare_methods, points, "ltr", "zzz")


def test_no_shared_seed_says_which_seeds_each_side_has(points):
    message = _one_line_error("share no seed", compare_methods, points, "ltr", "magnitude")
    assert message == ("'ltr' and 'magnitude' share no seed at any target sparsity "
                       "('ltr' has seeds 0-6; 'magnitude' has seeds 10-12)")


def test_no_common_sparsity_or_sweep(points):
    _one_line_error(r"'ltr' and 'dense' have no target sparsity in common \('ltr': 0.5, 0.9; 'dense': 0\)",
                    compare_methods, points, "ltr", "dense")
    other = pd.DataFrame([_row("ltr", 0.5, 0, 0.8, sweep="x"), _row("cts-kl", 0.5, 0, 0.8, sweep="y")])
    _one_line_error(r"'ltr' and 'cts-kl' are in no sweep together \('ltr': x; 'cts-kl': y\)",
                    compare_methods, other, "ltr", "cts-kl")


def test_missing_or_empty_metric_names_it_and_lists_the_accuracy_columns(points):
    columns = "test_accuracy, val_accuracy, selected_test_accuracy"
    _one_line_error(f"no metric column 'val_acc' in the points; accuracy columns with values: {columns}$",
                    compare_methods, points, "ltr", "cts-kl", metric="val_acc")
    empty = points.assign(selected_test_accuracy=math.nan)
    _one_line_error("metric column 'selected_test_accuracy' has no values in the finished points; "
                    "accuracy columns with values: test_accuracy, val_accuracy$",
                    compare_methods, empty, "ltr", "cts-kl")
    one_side = points.copy()
    one_side.loc[one_side["method"] == "ltr", "val_accuracy"] = None
    _one_line_error("metric column 'val_accuracy' has no values for method 'ltr'",
                    compare_methods, one_side, "ltr", "cts-kl", metric="val_accuracy")


def test_other_bad_input(points):
    _one_line_error("compare two different methods, got 'ltr' twice", compare_methods, points, "ltr", "ltr")
    _one_line_error("alpha must be between 0 and 1, got 5", compare_methods, points, "ltr", "cts-kl", alpha=5)
    _one_line_error("the points have no column.s. seed", compare_methods, points.drop(columns="seed"), "ltr", "cts-kl")
    _one_line_error("no finished points to compare", compare_methods, points.assign(status="failed"), "ltr", "cts-kl")
    twice = pd.concat([points, pd.DataFrame([{**_row("ltr", 0.5, 2, 0.5), "stage_key": "other"}])])
    _one_line_error("'ltr' has several finished points for seed 2 at target sparsity 0.5 of sweep 's'",
                    compare_methods, twice, "ltr", "cts-kl")


def test_compare_all_against_a_reference(points):
    fr = compare_all(points, "ltr")
    assert sorted(set(fr["method_b"])) == ["cts-kl"]  # dense excluded, magnitude shares no seed
    assert set(fr["method_a"]) == {"ltr"}
    assert "share no seed" in fr.attrs["skipped"]["magnitude"]
    assert "not compared: magnitude ('ltr' and 'magnitude' share no seed" in format_comparison(fr, "table")
    both = compare_all(points, "cts-kl")
    assert list(zip(both["method_b"], both["target_sparsity"])) == [("ltr", 0.5), ("ltr", 0.9)]
    assert both.iloc[0].mean_diff == pytest.approx(-np.mean(D5))
    _one_line_error("no method can be compared with 'magnitude'", compare_all, points, "magnitude")
    _one_line_error("no method 'ltx'", compare_all, points, "ltx")


def _table_cells(text: str) -> list[dict]:
    """Cells of a fixed-width table, cut at the column spans its rule of dashes marks."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "})
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[rule])]
    header = [lines[rule - 1][s:e].strip() for s, e in spans]
    body = [line for line in lines[rule + 1:] if not line.startswith(("not compared", "["))]
    return [dict(zip(header, (line[s:e].strip() for s, e in spans))) for line in body]


def test_table_numbers_equal_the_frame(points):
    fr = compare_methods(points, "ltr", "cts-kl")
    text = format_comparison(fr, "table")
    assert text.splitlines()[0].startswith("sweep: s; metric: selected_test_accuracy")
    assert text.splitlines()[1].startswith("verdicts: Holm-adjusted p (p Holm) < 0.05 over a family of 2 "
                                           "comparison(s), the rows of this table with a p; Holm can reject from n = 7")
    cells = _table_cells(text)
    assert len(cells) == len(fr)
    for row, r in zip(cells, fr.itertuples(index=False)):
        assert (row["A"], row["B"]) == ("ltr", "cts-kl")
        assert float(row["target"]) == r.target_sparsity
        assert int(row["n"]) == r.n and int(row["unpaired"]) == r.unpaired_a + r.unpaired_b
        assert float(row["A %"]) == pytest.approx(100 * r.mean_a, abs=0.005)
        assert float(row["B %"]) == pytest.approx(100 * r.mean_b, abs=0.005)
        assert float(row["B−A"]) == pytest.approx(100 * r.mean_diff, abs=0.005)
        assert row["failed"] == f"{r.failed_a}/{r.failed_b}"
        low, high = (float(v.replace("∞", "inf")) for v in re.fullmatch(r"\[(\S+), (\S+)\]", row["95 % CI"]).groups())
        assert (low, high) == pytest.approx((100 * r.ci_low, 100 * r.ci_high), abs=0.005)
        for column, value in (("p", r.p_value), ("p Holm", r.p_holm), ("q BH", r.q_bh)):
            assert float(row[column]) == pytest.approx(value, rel=5e-3)  # three significant digits
        point, low, high = (int(v) for v in re.fullmatch(r"(\d+) \((\d+)–(\d+)\)", row["seeds 80 %"]).groups())
        assert (point, low, high) == (r.seeds_for_power, r.seeds_for_power_low, r.seeds_for_power_high)
        ratio, cost_low, cost_high = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", row["cost B/A"]).groups()
        assert [float(ratio), float(cost_low), float(cost_high)] == pytest.approx(
            [r.cost_ratio, r.cost_ratio_low, r.cost_ratio_high], abs=0.005)
    assert [c["verdict"] for c in cells] == ["too few seeds [1]", "too few seeds [2]"]
    footer = text.splitlines()[-2:]
    assert footer == [f"[1] {fr.iloc[0].note}", "[2] n=3 can never reach p<0.05; needs >= 6 seeds"]
    assert len(max(text.splitlines()[2:4], key=len)) <= 160  # issue 26: the table was 225 characters wide


def test_a_caveat_shared_by_every_row_is_printed_once_below_the_table(points):
    three = points[points["seed"].astype(int) < 3]  # n=3 at both sparsities: the same caveat on both rows
    fr = compare_methods(three, "ltr", "cts-kl")
    assert len(fr) == 2 and fr["note"].nunique() == 1 and fr["note"].iloc[0]
    text = format_comparison(fr, "table")
    assert text.count(fr["note"].iloc[0]) == 1
    assert [c["verdict"].endswith("[1]") for c in _table_cells(text)] == [True, True]
    assert text.splitlines()[-1] == f"[1] {fr['note'].iloc[0]}"
    md = format_comparison(fr, "markdown")
    assert md.count(fr["note"].iloc[0]) == 1 and md.splitlines()[-1] == f"[1] {fr['note'].iloc[0]}"


def test_markdown_table(points):
    fr = compare_methods(points, "ltr", "cts-kl")
    lines = format_comparison(fr, "markdown").splitlines()
    assert len(lines) == 2 + len(fr) + 4  # and a blank line, the family line and two notes
    assert lines[2 + len(fr) + 1].startswith("verdicts: Holm-adjusted p (p Holm) < 0.05 over a family of 2")
    skipped = format_comparison(compare_all(points, "ltr"), "markdown").splitlines()
    assert skipped[-1] == ("not compared: magnitude ('ltr' and 'magnitude' share no seed at any target "
                           "sparsity ('ltr' has seeds 0-6; 'magnitude' has seeds 10-12))")
    assert skipped[2 + len(fr)] == ""  # the footer is set off from the table
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[:2 + len(fr)]]
    assert cells[0][:4] == ["A", "B", "target", "n"] and all(len(c) == len(cells[0]) for c in cells)
    assert all(re.fullmatch(r"-+:?", c) for c in cells[1])
    assert cells[2][cells[0].index("p")] == f"{fr.iloc[0].p_value:.3g}"


def test_csv_and_json_carry_the_columns_with_accuracies_in_percent(points):
    from orchestrator.analysis.compare import COMPARE_PERCENT

    exported = [c + "_pct" if c in COMPARE_PERCENT else c for c in COMPARE_COLUMNS]
    fr = compare_methods(points, "ltr", "cts-kl")
    back = pd.read_csv(io.StringIO(format_comparison(fr, "csv")))
    assert list(back.columns) == exported
    for col in ("mean_a", "mean_b", "mean_diff", "ci_low", "ci_high"):  # percent, as the table shows them
        assert back[col + "_pct"].tolist() == pytest.approx((100 * fr[col]).tolist())
    for col in ("p_value", "cost_ratio"):
        assert back[col].tolist() == pytest.approx(fr[col].tolist())
    assert back["seeds_for_power"].tolist() == fr["seeds_for_power"].tolist()
    assert back["p_holm"].tolist() == pytest.approx(fr["p_holm"].tolist())
    assert back["verdict"].tolist() == fr["verdict"].tolist()

    records = json.loads(format_comparison(fr, "json"))
    assert [list(r) for r in records] == [exported] * len(fr)
    assert [r["seeds_for_power_high"] for r in records] == fr["seeds_for_power_high"].tolist()
    assert records[0]["mean_a_pct"] == pytest.approx(100 * fr.iloc[0].mean_a) and records[0]["can_reject"] is True
    assert records[0]["n"] == 6 and records[1]["note"] == fr.iloc[1].note


def test_json_has_no_infinity_and_empty_frames_format(points):
    constant = points.copy()
    rows = (constant["method"] == "cts-kl") & (constant["target_sparsity"] == 0.9)
    constant.loc[rows, "selected_test_accuracy"] = [a + 0.01 + SELECTED_OFFSET for a in A9]
    constant.loc[rows, "selected_test_correct"] = [round((a + SELECTED_OFFSET) * EXAMPLES) + 10 for a in A9]
    fr = compare_methods(constant, "ltr", "cts-kl")
    # The same 10 examples on every seed: exactly, on the counts (the floats differ by rounding, and gave
    # an effect size of 1e15 when the zero sd was tested on them).
    assert fr.iloc[1].sd_diff == 0.0 and fr.iloc[1].effect_size == math.inf
    floats = compare_methods(constant.drop(columns=["selected_test_correct", "test_examples"]), "ltr", "cts-kl")
    assert floats.iloc[1].test_on == "floats" and floats.iloc[1].effect_size == math.inf
    exact = fr.assign(effect_size=[1.0, math.inf])
    assert json.loads(format_comparison(exact, "json"))[1]["effect_size"] is None

    empty = pd.DataFrame(columns=COMPARE_COLUMNS)
    assert format_comparison(empty, "table") == "no comparison"
    from orchestrator.analysis.compare import COMPARE_PERCENT
    assert format_comparison(empty, "csv") == ",".join(c + "_pct" if c in COMPARE_PERCENT else c
                                                       for c in COMPARE_COLUMNS)
    assert json.loads(format_comparison(empty, "json")) == []
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        format_comparison(fr, "xml")


def test_several_sweeps_pair_within_each_sweep_and_show_the_sweep(points):
    second = points.assign(sweep="t")
    second.loc[second["method"] == "cts-kl", "seed"] += 100  # sweep t shares no seed
    third = points.assign(sweep="u")
    fr = compare_methods(pd.concat([points, second, third]), "ltr", "cts-kl")
    assert list(zip(fr["sweep"], fr["target_sparsity"])) == [("s", 0.5), ("s", 0.9), ("u", 0.5), ("u", 0.9)]
    cells = _table_cells(format_comparison(fr, "table"))
    assert [c["sweep"] for c in cells] == ["s", "s", "u", "u"]


# ---- issue 25: exact counts, failures, multiplicity ------------------------------------------------------

ISSUE_B = [9032, 9012, 8980, 9039, 9035, 8986, 8955, 9026]
ISSUE_D = [-2, -2, 7, 2, 8, 7, 8, 7]


def _issue_points(with_counts: bool) -> pd.DataFrame:
    rows = []
    for seed, (b, d) in enumerate(zip(ISSUE_B, ISSUE_D)):
        for method, correct in (("a", b - d), ("b", b)):
            row = {"sweep": SWEEP, "method": method, "stage_key": f"{method}-{seed}", "attempt": 1, "seed": seed,
                   "target_sparsity": 0.9, "requested": True, "status": "ok", "standalone_seconds": 1.0,
                   "selected_test_accuracy": correct / 10000}
            if with_counts:
                row.update(selected_test_correct=correct, test_examples=10000, num_classes=10)
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_issues_tied_example_is_tested_on_counts_exactly():
    """Issue 25: the float differences made scipy drop tied patterns (p = 0.039, "B better"); on the counts
    the p-value is 14/256 exactly and the verdict no difference."""
    exact = compare_methods(_issue_points(True), "a", "b").iloc[0]
    assert exact.p_value == 14 / 256 and exact.test_on == "counts" and exact.verdict == NO_DIFFERENCE
    assert exact.ci_low <= 0 <= exact.ci_high  # the interval agrees with the test
    floats = compare_methods(_issue_points(False), "a", "b").iloc[0]
    assert floats.test_on == "floats" and "test on float accuracies" in floats.note
    assert floats.p_value == pytest.approx(0.0390625)  # the old, wrong answer, named as a float test
    # An older store with the example count but no correct counts: recovered, since they round-trip exactly.
    older = _issue_points(True).drop(columns="selected_test_correct")
    assert compare_methods(older, "a", "b").iloc[0].p_value == 14 / 256


def _failure_points(failures_b: dict[int, str]) -> pd.DataFrame:
    """ltr and cts on 8 seeds, cts 2 points better on every seed it finishes; failures_b: seed -> status."""
    rows = []
    for seed in range(8):
        rows.append(_row("ltr", 0.5, seed, 0.800))
        status = failures_b.get(seed, "ok")
        row = _row("cts", 0.5, seed, None if status != "ok" else 0.820, status=status)
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("status", ["failed", "diverged", "skipped"])
def test_a_failed_seed_counts_at_chance_unless_excluded(status):
    points = _failure_points({2: status, 5: status})
    counted = compare_methods(points, "ltr", "cts").iloc[0]
    assert (counted.n, counted.failed_a, counted.failed_b, counted.unpaired_a, counted.unpaired_b) == (8, 0, 2, 0, 0)
    # Six seeds +2 points, two at chance (10 %) against 79.9 %: the differences are in whole examples.
    assert counted.mean_b == pytest.approx((6 * 0.819 + 2 * 0.1) / 8)
    assert counted.test_on == "counts" and counted.verdict == NO_DIFFERENCE
    assert counted.p_value == pytest.approx(exact_p([20] * 6 + [100 - 799] * 2))
    assert "2 seed value(s) at chance (failed or collapsed)" in counted.note
    excluded = compare_methods(points, "ltr", "cts", failures="exclude").iloc[0]
    assert (excluded.n, excluded.failed_b, excluded.unpaired_b) == (6, 2, 0)
    assert excluded.verdict == B_BETTER and excluded.p_value == 2 / 64
    cells = _table_cells(format_comparison(compare_methods(points, "ltr", "cts"), "table"))
    assert cells[0]["failed"] == "0/2" and cells[0]["n"] == "8"
    assert "failed seeds count at chance accuracy" in format_comparison(compare_methods(points, "ltr", "cts"))


def exact_p(diffs):
    from orchestrator.analysis.stats import exact_sign_flip_pvalue
    return exact_sign_flip_pvalue(diffs)


def test_a_method_that_failed_on_every_seed_at_a_sparsity_is_compared_at_chance_there():
    """A method that diverged on all 8 seeds at 90 % must not vanish from the table at 90 % (it did: a side with
    no finished row was skipped) but count at chance there, with the counts behind the exact test."""
    rows = _failure_points({}).to_dict("records")
    rows += [_row("ltr", 0.9, seed, 0.700) for seed in range(8)]
    rows += [_row("cts", 0.9, seed, None, status="diverged") for seed in range(8)]
    table = compare_methods(pd.DataFrame(rows), "ltr", "cts").set_index("target_sparsity")
    at90 = table.loc[0.9]
    assert (at90.n, at90.failed_a, at90.failed_b) == (8, 0, 8)
    assert at90.mean_b == pytest.approx(1 / CLASSES)
    assert at90.mean_diff == pytest.approx(0.1 - (0.700 + SELECTED_OFFSET))
    assert at90.test_on == "counts" and at90.p_value == 2 / 256
    excluded = compare_methods(pd.DataFrame(rows), "ltr", "cts", failures="exclude").set_index("target_sparsity")
    # left out, the row stays to say so: no pair, 8 failed, no verdict, and not in the family
    assert (excluded.loc[0.9, "n"], excluded.loc[0.9, "failed_b"], excluded.loc[0.9, "verdict"]) == (0, 8, TOO_FEW)
    assert excluded["family_size"].iloc[0] == 1


def test_without_num_classes_failed_seeds_are_left_out_and_said_so():
    points = _failure_points({2: "failed"}).drop(columns="num_classes")
    r = compare_methods(points, "ltr", "cts").iloc[0]
    assert r.n == 7 and r.failed_b == 1 and "chance accuracy is unknown" in r.note


def test_the_family_is_every_row_and_the_adjustment_is_named(points):
    rows = []
    for m, shift in (("x", 0.05), ("y", 0.05), ("z", 0.0)):
        for target in (0.5, 0.9):
            for seed in range(10):
                base = 0.7 + 0.01 * seed
                rows.append(_row("ref", target, seed, base))
                rows.append(_row(m, target, seed, base + shift + 0.001 * (seed % 3)))
    frame = pd.DataFrame(rows).drop_duplicates(["method", "stage_key"])
    fr = compare_all(frame, "ref")
    assert len(fr) == 6 and set(fr["family_size"]) == {6} and set(fr["adjust"]) == {"holm"}
    assert fr["p_holm"].tolist() == pytest.approx(np.minimum(1, np.maximum.accumulate(
        (6 - np.arange(6)) * np.sort(fr["p_value"])))[np.argsort(np.argsort(fr["p_value"], kind="stable"))])
    assert list(fr["verdict"]) == ["B better"] * 4 + [NO_DIFFERENCE] * 2
    text = format_comparison(fr)
    assert "Holm-adjusted p (p Holm) < 0.05 over a family of 6 comparison(s)" in text
    assert "Holm can reject from n = 8 seeds" in text  # 6 x 2/2^8 < 0.05 <= 6 x 2/2^7
    none = compare_all(frame, "ref", adjust="none")
    assert "unadjusted p < 0.05" in format_comparison(none)
    with pytest.raises(CompareError, match="adjust must be one of holm, bh, none"):
        compare_all(frame, "ref", adjust="bonferroni")


def test_power_plans_for_the_named_effect_not_the_observed_one():
    rows = []
    for seed in range(8):
        rows.append(_row("ref", 0.5, seed, 0.7))
        rows.append(_row("big", 0.5, seed, 0.7 + 0.05 + 0.01 * (seed % 2)))
        rows.append(_row("none", 0.5, seed, 0.695 + 0.01 * (seed % 2)))
    fr = compare_all(pd.DataFrame(rows), "ref", min_effect=0.004)
    big, none = fr[fr["method_b"] == "big"].iloc[0], fr[fr["method_b"] == "none"].iloc[0]
    # The same spread of differences, very different means: the same advice, a range around it.
    assert big.sd_diff == pytest.approx(none.sd_diff)
    assert (big.seeds_for_power, big.seeds_for_power_low, big.seeds_for_power_high) == \
        (none.seeds_for_power, none.seeds_for_power_low, none.seeds_for_power_high)
    assert big.seeds_for_power_low <= big.seeds_for_power < big.seeds_for_power_high
    assert compare_all(pd.DataFrame(rows), "ref", min_effect=0.008).iloc[0].seeds_for_power < big.seeds_for_power


def test_a_flip_between_two_settings_is_a_paired_test_of_the_change():
    rows = []
    for seed in range(10):
        rows += [_row("a", 0.5, seed, 0.700), _row("b", 0.5, seed, 0.700 + 0.001 * (seed % 3)),
                 # tuned: b gains 2 points on every seed; a stays
                 _row("a[tuned]", 0.5, seed, 0.700), _row("b[tuned]", 0.5, seed, 0.720 + 0.001 * (seed % 3)),
                 _row("c", 0.5, seed, 0.690), _row("c[tuned]", 0.5, seed, 0.690 + 0.001 * (seed % 2))]
    from orchestrator.analysis.compare import compare_changes
    changes = compare_changes(pd.DataFrame(rows), [(("a", "b"), ("a[tuned]", "b[tuned]")),
                                                   (("a", "c"), ("a[tuned]", "c[tuned]"))])
    assert list(changes["family_size"]) == [2, 2] and list(changes["test_on"]) == ["counts", "counts"]
    ab, ac = changes.iloc[0], changes.iloc[1]
    assert ab.change == pytest.approx(0.02) and ab.p_value == 2 / 1024 and ab.p_holm == 4 / 1024 and ab.changed
    assert ac.p_value == exact_p([(s % 2) for s in range(10)]) and not ac.changed


def test_the_cost_ratio_in_work_units_reads_the_counted_columns_and_never_counts_a_missing_count(points):
    # FLOPs a different ratio from the seconds: cts-kl costs a tenth of ltr's counted work at every seed.
    points["standalone_flops"] = np.where(points["method"] == "ltr", 1000, 100)
    points["standalone_epochs"] = np.where(points["method"] == "ltr", 40.0, 8.0)
    for cost, ratio in (("flops", 0.1), ("epochs", 0.2), ("seconds", math.sqrt(0.25 * 0.5))):
        r5 = compare_methods(points, "ltr", "cts-kl", cost=cost).iloc[0]
        assert r5.cost_ratio == pytest.approx(ratio) and r5.cost_pairs == 6 and r5.cost_unit == cost
    frame = compare_methods(points, "ltr", "cts-kl", cost="flops")
    header, rows, _ = comparison_cells(frame)
    assert "cost B/A (flops)" in header and rows[0][header.index("cost B/A (flops)")] == "0.10 [0.10, 0.10]"
    assert "cost B/A" in comparison_cells(compare_methods(points, "ltr", "cts-kl"))[0]
    # Seeds stored before the counts existed (null) are left out of the ratio, and counted as such.
    points.loc[(points["method"] == "cts-kl") & (points["seed"] < 3), "standalone_flops"] = None
    r5 = compare_methods(points, "ltr", "cts-kl", cost="flops").iloc[0]
    assert r5.cost_pairs == 3 and r5.cost_ratio == pytest.approx(0.1)
    points["standalone_flops"] = None
    r5 = compare_methods(points, "ltr", "cts-kl", cost="flops").iloc[0]
    assert r5.cost_pairs == 0 and math.isnan(r5.cost_ratio)
    _one_line_error("cost must be one of seconds, epochs, flops, got 'joules'", compare_methods, points, "ltr",
                    "cts-kl", cost="joules")
