"""compare_methods / compare_all / format_comparison on a hand-built points table with known answers."""
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from orchestrator.compare import (COMPARE_COLUMNS, CompareError, compare_all, compare_methods,
                                  format_comparison)
from orchestrator.stats import B_BETTER, NO_DIFFERENCE

SWEEP = "s"
A5 = [0.80 + 0.01 * i for i in range(7)]              # ltr at 0.5, seeds 0-6
D5 = [0.01, 0.02, 0.015, 0.03, 0.01, 0.02]            # cts-kl - ltr at 0.5, seeds 0-5: all positive
COST_B5 = [10.0, 20.0, 10.0, 20.0, 10.0, 20.0]        # cts-kl standalone seconds; ltr's are 40
A9 = [0.60, 0.62, 0.64]
D9 = [-0.02, 0.01, -0.03]
SELECTED_OFFSET = -0.001  # selected_test_accuracy = test_accuracy - 0.001, so the metric choice is visible


def _row(method, target, seed, acc, *, attempt=1, status="ok", requested=True, standalone=40.0, sweep=SWEEP):
    return {"sweep": sweep, "method": method, "stage_key": f"{method}-{target}-{seed}", "attempt": attempt,
            "seed": seed, "target_sparsity": target, "sparsity": target, "requested": requested,
            "test_accuracy": acc, "val_accuracy": None if acc is None else acc + 0.002,
            "selected_test_accuracy": None if acc is None else acc + SELECTED_OFFSET,
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

    assert (r5.n, r5.unpaired_a, r5.unpaired_b, r5.dropped) == (6, 1, 1, 0)
    assert r5.mean_a == pytest.approx(np.mean(A5[:6]) + SELECTED_OFFSET)
    assert r5.mean_b == pytest.approx(np.mean(np.add(A5[:6], D5)) + SELECTED_OFFSET)  # not the stale 0.10
    assert r5.mean_diff == pytest.approx(np.mean(D5))
    assert r5.p_value == pytest.approx(2 / 64) and r5.test == "exact"
    assert r5.verdict == B_BETTER and r5.can_reject and r5.seeds_for_power is None

    logs = np.log(np.array(COST_B5) / 40.0)  # ratios 1/4 and 1/2, three seeds each
    half = 2.570581835636314 * logs.std(ddof=1) / math.sqrt(6)  # t_{0.975, 5}
    assert r5.cost_ratio == pytest.approx(math.sqrt(0.25 * 0.5))
    assert (r5.cost_ratio_low, r5.cost_ratio_high) == pytest.approx(
        (math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert r5.cost_pairs == 6

    assert (r9.n, r9.unpaired_a, r9.unpaired_b) == (3, 0, 0)
    assert r9.mean_diff == pytest.approx(np.mean(D9))
    # Of the 8 sign patterns of (-2, +1, -3), |sum| >= 4 for (-, +, -), (-, -, -) and their mirrors.
    assert r9.verdict == NO_DIFFERENCE and not r9.can_reject and r9.p_value == pytest.approx(4 / 8)
    assert r9.note == "n=3 can never reach p<0.05; needs >= 6 seeds"
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
    assert (r5.n, r5.dropped, r5.unpaired_a, r5.unpaired_b) == (5, 1, 1, 1)
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
    body = [line for line in lines[rule + 1:] if not line.startswith(("not compared", "note "))]
    return [dict(zip(header, (line[s:e].strip() for s, e in spans))) for line in body]


def test_table_numbers_equal_the_frame(points):
    fr = compare_methods(points, "ltr", "cts-kl")
    text = format_comparison(fr, "table")
    assert text.splitlines()[0].startswith("sweep: s; metric: selected_test_accuracy")
    cells = _table_cells(text)
    assert len(cells) == len(fr)
    for row, r in zip(cells, fr.itertuples(index=False)):
        assert (row["A"], row["B"]) == ("ltr", "cts-kl")
        assert float(row["target"]) == r.target_sparsity
        assert int(row["n"]) == r.n and int(row["unpaired"]) == r.unpaired_a + r.unpaired_b
        assert float(row["A %"]) == pytest.approx(100 * r.mean_a, abs=0.005)
        assert float(row["B %"]) == pytest.approx(100 * r.mean_b, abs=0.005)
        assert float(row["B−A (pts)"]) == pytest.approx(100 * r.mean_diff, abs=0.005)
        low, high = (float(v) for v in re.fullmatch(r"\[(\S+), (\S+)\]", row["95 % CI"]).groups())
        assert (low, high) == pytest.approx((100 * r.ci_low, 100 * r.ci_high), abs=0.005)
        assert float(row["p"]) == pytest.approx(r.p_value, rel=5e-3)  # three significant digits
        assert row["test"] == r.test
        ratio, cost_low, cost_high = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", row["cost B/A"]).groups()
        assert [float(ratio), float(cost_low), float(cost_high)] == pytest.approx(
            [r.cost_ratio, r.cost_ratio_low, r.cost_ratio_high], abs=0.005)
    assert cells[0]["verdict"] == "cts-kl better" and cells[0]["seeds for 80 % power"] == "—"
    assert cells[1]["verdict"] == "no difference detected (note 1)"
    assert text.splitlines()[-1] == "note 1: n=3 can never reach p<0.05; needs >= 6 seeds"
    assert cells[1]["seeds for 80 % power"] == str(fr.iloc[1].seeds_for_power)


def test_a_caveat_shared_by_every_row_is_printed_once_below_the_table(points):
    three = points[points["seed"].astype(int) < 3]  # n=3 at both sparsities: the same caveat on both rows
    fr = compare_methods(three, "ltr", "cts-kl")
    assert len(fr) == 2 and fr["note"].nunique() == 1 and fr["note"].iloc[0]
    text = format_comparison(fr, "table")
    assert text.count(fr["note"].iloc[0]) == 1
    assert [c["verdict"].endswith("(note 1)") for c in _table_cells(text)] == [True, True]
    assert text.splitlines()[-1] == f"note 1: {fr['note'].iloc[0]}"
    md = format_comparison(fr, "markdown")
    assert md.count(fr["note"].iloc[0]) == 1 and md.splitlines()[-1] == f"note 1: {fr['note'].iloc[0]}"


def test_markdown_table(points):
    fr = compare_methods(points, "ltr", "cts-kl")
    lines = format_comparison(fr, "markdown").splitlines()
    # a blank line sets the footer off: a line right below the table would be read as one more row
    assert len(lines) == 2 + len(fr) + 2 and lines[-2:] == ["", "note 1: n=3 can never reach p<0.05; needs >= 6 seeds"]
    lines = lines[:-2]
    skipped = format_comparison(compare_all(points, "ltr"), "markdown").splitlines()
    assert skipped[-3:] == ["", "note 1: n=3 can never reach p<0.05; needs >= 6 seeds",
                            "not compared: magnitude ('ltr' and 'magnitude' share no seed at any target "
                            "sparsity ('ltr' has seeds 0-6; 'magnitude' has seeds 10-12))"]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert cells[0][:4] == ["A", "B", "target", "n"] and all(len(c) == len(cells[0]) for c in cells)
    assert all(re.fullmatch(r"-+:?", c) for c in cells[1])
    assert cells[2][cells[0].index("p")] == f"{fr.iloc[0].p_value:.3g}"


def test_csv_and_json_carry_the_columns_with_accuracies_in_percent(points):
    from orchestrator.compare import COMPARE_PERCENT

    exported = [c + "_pct" if c in COMPARE_PERCENT else c for c in COMPARE_COLUMNS]
    fr = compare_methods(points, "ltr", "cts-kl")
    back = pd.read_csv(io.StringIO(format_comparison(fr, "csv")))
    assert list(back.columns) == exported
    for col in ("mean_a", "mean_b", "mean_diff", "ci_low", "ci_high"):  # percent, as the table shows them
        assert back[col + "_pct"].tolist() == pytest.approx((100 * fr[col]).tolist())
    for col in ("p_value", "cost_ratio"):
        assert back[col].tolist() == pytest.approx(fr[col].tolist())
    assert math.isnan(back["seeds_for_power"][0]) and back["seeds_for_power"][1] == fr.iloc[1].seeds_for_power
    assert back["verdict"].tolist() == fr["verdict"].tolist()

    records = json.loads(format_comparison(fr, "json"))
    assert [list(r) for r in records] == [exported] * len(fr)
    assert records[0]["seeds_for_power"] is None and records[1]["seeds_for_power"] == fr.iloc[1].seeds_for_power
    assert records[0]["mean_a_pct"] == pytest.approx(100 * fr.iloc[0].mean_a) and records[0]["can_reject"] is True
    assert records[0]["n"] == 6 and records[1]["note"] == fr.iloc[1].note


def test_json_has_no_infinity_and_empty_frames_format(points):
    constant = points.copy()
    rows = (constant["method"] == "cts-kl") & (constant["target_sparsity"] == 0.9)
    constant.loc[rows, "selected_test_accuracy"] = [a + 0.01 + SELECTED_OFFSET for a in A9]
    fr = compare_methods(constant, "ltr", "cts-kl")
    assert fr.iloc[1].effect_size > 1e6  # the same difference on every seed (up to float rounding)
    exact = fr.assign(effect_size=[1.0, math.inf])
    assert json.loads(format_comparison(exact, "json"))[1]["effect_size"] is None

    empty = pd.DataFrame(columns=COMPARE_COLUMNS)
    assert format_comparison(empty, "table") == "no comparison"
    from orchestrator.compare import COMPARE_PERCENT
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
