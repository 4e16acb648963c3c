import os
import stat
import math

import pandas as pd
import pytest

from orchestrator.analysis.frontier import (FRONTIER_COLUMNS, FRONTIER_PERCENT, cost_summary, density_ticks, export_frontier, format_frontier,
                                 frontier, percent_label, plot_frontier)
from orchestrator.store.results_store import ResultsStore

SWEEP = "tiny"


def _row(method, target, seed, acc, *, attempt=1, status="ok", requested=True, sparsity=None,
         standalone=None, marginal=1.0, search=None, level=None, key=None):
    return {"method": method, "stage_key": key or f"{method}-{target}-{seed}", "attempt": attempt,
            "point_key": f"p-{method}-{target}-{seed}", "seed": seed, "target_sparsity": target,
            "sparsity": target if sparsity is None else sparsity, "level": level, "requested": requested,
            # `acc` is the validation-selected test accuracy; the final one and the validation one differ from it
            "selected_test_accuracy": acc, "test_accuracy": None if acc is None else acc - 0.01,
            "val_accuracy": None if acc is None else acc + 0.02,
            "dense_test_accuracy": 0.91, "standalone_seconds": standalone,
            "marginal_seconds": marginal if status == "ok" else None, "search_seconds": search,
            "status": status, "error_type": None if status == "ok" else "RuntimeError"}


def _rows() -> list[dict]:
    rows = [_row("dense", 0.0, s, a, standalone=5.0, marginal=5.0) for s, a in zip(range(3), (0.90, 0.91, 0.92))]
    # cts-kl at 0.5: seed 0 ran twice; attempt 2 (listed first on purpose) supersedes 0.10.
    rows += [_row("cts-kl", 0.5, 0, 0.80, attempt=2, sparsity=0.5001, standalone=10.0, search=3.0),
             _row("cts-kl", 0.5, 0, 0.10, attempt=1, sparsity=0.5001, standalone=99.0, search=3.0),
             _row("cts-kl", 0.5, 1, 0.82, sparsity=0.4999, standalone=12.0, search=4.0),
             _row("cts-kl", 0.5, 2, 0.84, sparsity=0.5004, standalone=14.0, search=5.0)]
    rows += [_row("cts-kl", 0.9, s, a, standalone=c, search=6.0)
             for s, a, c in zip(range(3), (0.70, 0.74, 0.72), (10.0, 20.0, 30.0))]
    rows.append(_row("cts-kl", 0.9, 3, None, status="failed"))
    rows += [_row("ltr", 0.5, s, a, standalone=40.0, marginal=2.0, level=3)
             for s, a in zip(range(3), (0.81, 0.83, 0.85))]
    # A later failed attempt must not hide the earlier success of the same stage.
    rows.append(_row("ltr", 0.5, 1, None, attempt=2, status="failed"))
    rows += [_row("ltr", 0.9, s, a, standalone=c, marginal=2.0, level=10)
             for s, a, c in zip(range(3), (0.60, 0.66, 0.63), (50.0, 60.0, 70.0))]
    # An intermediate IMP level, on the way to a requested target.
    rows.append(_row("ltr", 0.7, 0, 0.77, requested=False, standalone=30.0, marginal=2.0, level=6))
    return rows


@pytest.fixture
def points() -> pd.DataFrame:
    frame = pd.DataFrame(_rows())
    frame["sweep"] = SWEEP
    return frame


def _by_key(fr: pd.DataFrame) -> dict:
    return {(r.method, r.target_sparsity): r for r in fr.itertuples(index=False)}


def test_frontier_means_stds_and_filtering(points):
    fr = frontier(points)
    assert list(zip(fr["method"], fr["target_sparsity"])) == [
        ("dense", 0.0), ("cts-kl", 0.5), ("cts-kl", 0.9), ("ltr", 0.5), ("ltr", 0.9)]
    rows = _by_key(fr)
    assert (fr["n"] == 3).all()  # failed rows out, duplicate attempt counted once

    cts5 = rows[("cts-kl", 0.5)]
    assert cts5.selected_test_accuracy_mean == pytest.approx(0.82)  # the superseded 0.10 is gone
    assert cts5.selected_test_accuracy_std == pytest.approx(0.02)   # sqrt(((-.02)^2 + 0 + .02^2) / 2)
    # the 95 % t interval of the mean over 3 seeds: 0.82 ± t(0.975, 2) · 0.02 / sqrt(3)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert (cts5.selected_test_accuracy_ci_low, cts5.selected_test_accuracy_ci_high) == pytest.approx(
        (0.82 - half, 0.82 + half))
    assert cts5.test_accuracy_mean == pytest.approx(0.81) and cts5.val_accuracy_mean == pytest.approx(0.84)
    assert cts5.sparsity == pytest.approx((0.5001 + 0.4999 + 0.5004) / 3)
    assert cts5.standalone_seconds_mean == pytest.approx(12.0)
    assert cts5.search_seconds_mean == pytest.approx(4.0)

    ltr9 = rows[("ltr", 0.9)]
    assert ltr9.selected_test_accuracy_mean == pytest.approx(0.63)
    assert ltr9.selected_test_accuracy_std == pytest.approx(0.03)
    assert ltr9.marginal_seconds_mean == pytest.approx(2.0)
    assert math.isnan(ltr9.search_seconds_mean)

    dense = rows[("dense", 0.0)]
    assert dense.selected_test_accuracy_mean == pytest.approx(0.91)
    assert dense.selected_test_accuracy_std == pytest.approx(0.01)
    assert dense.dense_test_accuracy_mean == pytest.approx(0.91)
    assert ("ltr", 0.7) not in rows


def test_all_levels_keeps_intermediate_level_with_nan_std(points):
    rows = _by_key(frontier(points, all_levels=True))
    level = rows[("ltr", 0.7)]
    assert level.n == 1 and level.selected_test_accuracy_mean == pytest.approx(0.77)
    assert math.isnan(level.selected_test_accuracy_std) and math.isnan(level.selected_test_accuracy_ci_low)
    assert "77.0 ± —" in format_frontier(frontier(points, all_levels=True))


def test_frontier_of_nothing_is_empty_with_columns(points):
    fr = frontier(points[points["status"] == "failed"])
    assert fr.empty and "selected_test_accuracy_mean" in fr.columns
    assert format_frontier(fr) == "no finished points"


def test_format_frontier_text_and_markdown(points):
    fr = frontier(points)
    text = format_frontier(fr)
    lines = text.splitlines()
    assert lines[0] == f"sweep: {SWEEP}"
    assert "method" in lines[1] and set(lines[2]) <= {"-", " "}
    cts9 = next(line for line in lines if line.startswith("cts-kl") and "0.9000" in line)
    assert "72.0 ± 2.0" in cts9 and "[67.0, 77.0]" in cts9 and "71.0" in cts9 and "74.0" in cts9
    assert "20.0" in cts9 and "91.0" in cts9
    assert len({len(line) for line in lines[1:]}) <= 2  # fixed width (last column right-aligned)

    md = format_frontier(fr, markdown=True).splitlines()
    assert all(line.startswith("| ") and line.endswith(" |") for line in md)
    assert set(md[1]) <= {"|", "-", ":", " "}
    assert len(md) == 2 + len(fr)
    assert any("63.0 ± 3.0" in line for line in md)


def test_format_frontier_names_sweeps_when_several(points):
    other = points.assign(sweep="other")
    text = format_frontier(frontier(pd.concat([points, other], ignore_index=True)))
    assert text.splitlines()[0].split()[0] == "sweep"
    assert sum(line.startswith("other") for line in text.splitlines()) == 5


def test_cost_summary_counts_every_paid_level(points):
    cost = cost_summary(points).set_index("method")
    assert cost.loc["cts-kl", "points"] == 6 and cost.loc["cts-kl", "marginal_seconds"] == pytest.approx(6.0)
    assert cost.loc["ltr", "points"] == 7 and cost.loc["ltr", "requested_points"] == 6
    assert cost.loc["ltr", "marginal_seconds"] == pytest.approx(14.0)
    assert cost.loc["dense", "marginal_seconds"] == pytest.approx(15.0)


def test_plot_frontier_writes_png(points, tmp_path):
    out = tmp_path / "frontier.png"
    plot_frontier(frontier(points, all_levels=True), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(ValueError, match="no finished points to plot"):
        plot_frontier(frontier(points.iloc[:0]), tmp_path / "empty.png")


def test_frontier_reads_back_from_store_both_ways(points, store_dir):
    via_store = ResultsStore(str(store_dir)).read("points", SWEEP)
    via_pandas = pd.read_parquet(store_dir / "points")
    assert isinstance(via_pandas["method"].dtype, pd.CategoricalDtype)
    assert len(via_store) == len(via_pandas) == len(points)

    expected = frontier(points)
    for frame in (via_store, via_pandas):
        got = frontier(frame)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_plot_density_axis_has_percent_ticks_at_the_requested_densities_and_the_legend_outside(points, tmp_path):
    fig = plot_frontier(frontier(points), tmp_path / "f.png")
    left = fig.axes[0]
    fig.canvas.draw()
    major = [t.get_text() for t in left.get_xticklabels() if t.get_text()]
    assert major == ["50%", "10%"]  # targets 0.5 and 0.9, densest first (the axis runs to sparser on the right)
    assert [t.get_text() for t in left.get_xticklabels(minor=True) if t.get_text()] == []
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert fig.legends[0].get_texts()[0].get_text().startswith("cts-kl")
    assert left.get_xlim()[0] > left.get_xlim()[1]  # inverted


def test_density_ticks_thin_a_long_ladder_without_repeating_labels():
    ladder = [0.8 ** k for k in range(1, 23)]
    kept = density_ticks(ladder)
    labels = [percent_label(d) for d in kept]
    assert labels == ["80%", "41%", "21%", "10.7%", "5.5%", "2.81%", "1.44%", "0.738%"]
    assert len(set(labels)) == len(labels)
    assert density_ticks([0.5, 0.2, 0.1, 0.05, 0.02, 0.01]) == [0.5, 0.2, 0.1, 0.05, 0.02, 0.01]
    assert density_ticks([0.5, 0.5000000001]) == [0.5000000001]  # the same label once
    assert [percent_label(d) for d in (0.5, 0.01, 0.512, 0.0073787)] == ["50%", "1%", "51.2%", "0.738%"]


EXPORTED = [c + "_pct" if c in FRONTIER_PERCENT else c for c in FRONTIER_COLUMNS]


def test_export_csv_and_json_carry_the_frontier_columns(points):
    import io
    import json

    fr = frontier(points)
    csv = export_frontier(fr, "csv")
    back = pd.read_csv(io.StringIO(csv))
    assert list(back.columns) == EXPORTED
    row = back[(back["method"] == "cts-kl") & (back["target_sparsity"] == 0.9)].iloc[0]
    # accuracies in percent, as the table shows them, and the unit in the name
    assert row["selected_test_accuracy_mean_pct"] == pytest.approx(72.0) and row["n"] == 3
    assert row["dense_test_accuracy_mean_pct"] == pytest.approx(91.0) and row["sparsity"] == pytest.approx(0.9)
    assert row["standalone_seconds_mean"] == pytest.approx(20.0)
    dense = back[back["method"] == "dense"].iloc[0]
    assert math.isnan(dense["search_seconds_mean"])  # missing stays missing, not 0
    records = json.loads(export_frontier(fr, "json"))
    assert len(records) == len(fr) and list(records[0]) == EXPORTED
    ltr = next(r for r in records if r["method"] == "ltr" and r["target_sparsity"] == 0.5)
    assert ltr["selected_test_accuracy_mean_pct"] == pytest.approx(83.0)
    assert ltr["selected_test_accuracy_std_pct"] == pytest.approx(2.0)
    assert ltr["sweep"] == SWEEP and isinstance(ltr["n"], int)
    assert next(r for r in records if r["method"] == "dense")["search_seconds_mean"] is None
    assert export_frontier(fr, "markdown") == format_frontier(fr, markdown=True)
    assert export_frontier(fr, "table") == format_frontier(fr)
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        export_frontier(fr, "xml")


# ---------------------------------------------------------------- the `results` verb

@pytest.fixture
def store_dir(points, tmp_path):
    store = ResultsStore(str(tmp_path / "store"))
    for row in _rows():
        point = {k: v for k, v in row.items() if k not in ("stage_key", "attempt")}
        stage = {"kind": "train", "label": row["stage_key"], "seed": row["seed"], "status": row["status"]}
        store.commit(SWEEP, row["stage_key"], row["attempt"], stage, [point], [])
    return tmp_path / "store"


def test_results_formats_and_output_file(store_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from orchestrator.cli import main

    run = CliRunner().invoke
    base = ["results", "--store", str(store_dir)]
    table = run(main, base)
    assert table.exit_code == 0 and table.output.startswith(f"sweep: {SWEEP}\nmethod")
    md = run(main, base + ["--markdown"])
    assert md.exit_code == 0 and md.output == run(main, base + ["--format", "markdown"]).output
    assert md.output.startswith("| method")
    js = run(main, base + ["--format", "json"])
    records = json.loads(js.output)
    assert [(r["method"], r["target_sparsity"]) for r in records] == [
        ("dense", 0.0), ("cts-kl", 0.5), ("cts-kl", 0.9), ("ltr", 0.5), ("ltr", 0.9)]
    out = tmp_path / "frontier.csv"
    r = run(main, base + ["--format", "csv", "-o", str(out)])
    assert r.exit_code == 0 and r.output.strip() == f"wrote {out}"
    back = pd.read_csv(out)
    assert list(back.columns) == EXPORTED
    assert back.loc[back["method"] == "ltr", "selected_test_accuracy_mean_pct"].tolist() == pytest.approx([83.0, 63.0])
    every = pd.read_csv(__import__("io").StringIO(run(main, base + ["--format", "csv", "--all-levels"]).output))
    assert 0.7 in every.loc[every["method"] == "ltr", "target_sparsity"].tolist()  # the intermediate level


@pytest.mark.parametrize("args, expected", [
    (["--markdown", "--format", "csv"], "--markdown conflicts with --format csv"),
    (["-o", "{tmp}/nowhere/f.csv"], "-o {tmp}/nowhere/f.csv: no such directory {tmp}/nowhere"),
    (["-o", "{tmp}"], "-o {tmp}: is a directory, expected a file name"),
    (["--sweep", "tinny"], "store {store}: no results for sweep tinny; did you mean 'tiny'?"),
])
def test_results_bad_arguments_exit_2_on_one_line(store_dir, tmp_path, args, expected):
    from click.testing import CliRunner

    from orchestrator.cli import main

    fill = {"tmp": tmp_path, "store": store_dir}
    r = CliRunner().invoke(main, ["results", "--store", str(store_dir)] + [a.format(**fill) for a in args])
    assert r.exit_code == 2
    assert r.output.strip() == expected.format(**fill)


def test_version_names_the_package_ray_and_torch():
    from importlib.metadata import version

    from click.testing import CliRunner

    from orchestrator.cli import main

    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0
    assert r.output.startswith(f"ticketsweep {version('ticketsweep')} (ray {version('ray')}, "
                               f"torch {version('torch')}, python ")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_text_files_follow_the_umask_like_any_other_file(store_dir, tmp_path, umask, mode):
    from click.testing import CliRunner

    from orchestrator.cli import main

    out = tmp_path / "frontier.md"
    old = os.umask(umask)
    try:
        r = CliRunner().invoke(main, ["results", "--store", str(store_dir), "--markdown", "-o", str(out)])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_status_of_a_spec_without_a_store_says_where_it_looked(tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    from orchestrator.cli import main

    spec = tmp_path / "specs" / "s.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump({
        "name": "nowhere", "model": {"name": "mlp", "options": {"hidden": [8]}}, "dataset": {"name": "synthetic"},
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.1}, "methods": [{"kind": "oneshot", "criterion": "random"}],
        "sparsities": [0.5], "seeds": [0]}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = CliRunner().invoke(main, ["status", str(spec)])
    assert r.exit_code == 0, r.output
    assert (f"store ./ticketsweep-store relative to the working directory ({elsewhere}): nothing stored; "
            "the spec names no store") in r.output
    named = spec.with_name("named.yaml")
    named.write_text(spec.read_text() + "store: ./here\n")
    r = CliRunner().invoke(main, ["status", str(named)])
    assert r.exit_code == 0 and "relative to the working directory" not in r.output


# ---------------------------------------------------------------- costs in work units

def _with_work(points: pd.DataFrame) -> pd.DataFrame:
    """The fixture's rows with counted work: each point's epochs and FLOPs a function of its seed."""
    out = points.copy()
    out["train_epochs"], out["search_epochs"] = 2.0, out["seed"] * 0.5
    out["train_flops"], out["search_flops"] = 1000, out["seed"] * 10
    out["standalone_epochs"] = 3.0 + out["seed"]
    out["standalone_flops"] = 2000 + 100 * out["seed"]
    return out


@pytest.mark.parametrize("cost, unit", [("epochs", "ep"), ("flops", "FLOPs")])
def test_the_frontier_in_work_units_keeps_the_standalone_seconds_beside(points, cost, unit):
    fr = frontier(_with_work(points), cost=cost)
    row = _by_key(fr)[("cts-kl", 0.9)]                                  # seeds 0, 1, 2
    standalone = {"epochs": 4.0, "flops": 2100.0}[cost]
    assert getattr(row, f"standalone_{cost}_mean") == pytest.approx(standalone)
    assert getattr(row, f"search_{cost}_mean") == pytest.approx({"epochs": 0.5, "flops": 10.0}[cost])
    assert getattr(row, f"marginal_{cost}_mean") == pytest.approx({"epochs": 2.5, "flops": 1010.0}[cost])
    assert row.standalone_seconds_mean == pytest.approx(20.0)
    pd.testing.assert_frame_equal(fr[FRONTIER_COLUMNS[:-4]], frontier(points)[FRONTIER_COLUMNS[:-4]])
    text = format_frontier(fr, cost=cost)
    header = text.splitlines()[1]
    assert f"search {unit}" in header and f"standalone {unit}" in header and header.rstrip().endswith("standalone s")
    line = next(r for r in text.splitlines() if r.startswith("cts-kl") and "0.9000" in r)
    cells = line.split()
    assert cells[-1] == "20.0" and cells[-2] == {"epochs": "4.00", "flops": "2100"}[cost]
    csv = pd.read_csv(__import__("io").StringIO(export_frontier(fr, "csv", cost)))
    assert list(csv.columns)[-5:] == [f"standalone_{cost}_mean", f"marginal_{cost}_mean", f"search_{cost}_mean",
                                      "standalone_seconds_mean", "dense_test_accuracy_mean_pct"]


def test_points_without_a_count_are_missing_never_zero(points, tmp_path):
    # Rows stored before the counts existed have no work columns at all: every work mean is missing.
    fr = frontier(points, cost="flops")
    assert fr["standalone_flops_mean"].isna().all() and fr["search_flops_mean"].isna().all()
    line = next(r for r in format_frontier(fr, cost="flops").splitlines() if r.startswith("ltr") and "0.9000" in r)
    assert line.split()[-4:] == ["—", "—", "—", "60.0"]
    # A point whose seeds are partly counted shows no mean: a mean over the counted ones would pass for all n.
    mixed = _with_work(points)
    mixed.loc[(mixed["method"] == "ltr") & (mixed["seed"] == 1), "standalone_flops"] = None
    rows = _by_key(frontier(mixed, cost="flops"))
    assert math.isnan(rows[("ltr", 0.9)].standalone_flops_mean)
    assert rows[("cts-kl", 0.9)].standalone_flops_mean == pytest.approx(2100.0)
    # The same through a store written without the columns (its files lack them): they read as null.
    store = ResultsStore(str(tmp_path / "store"))
    for row in _rows()[:3]:
        point = {k: v for k, v in row.items() if k not in ("stage_key", "attempt")}
        store.commit(SWEEP, row["stage_key"], row["attempt"], {"kind": "dense", "status": "ok"}, [point], [])
    read = store.read("points", SWEEP)
    assert read["standalone_flops"].isna().all() and read["train_epochs"].isna().all()
    assert store.read("stages", SWEEP)["train_flops"].isna().all()


def test_an_unknown_cost_unit_is_refused(points):
    with pytest.raises(ValueError, match="unknown cost unit 'joules'; known: seconds, epochs, flops"):
        frontier(points, cost="joules")


def test_results_cost_option_is_checked_by_click(store_dir):
    from click.testing import CliRunner

    from orchestrator.cli import main

    r = CliRunner().invoke(main, ["results", "--store", str(store_dir), "--cost", "joules"])
    assert r.exit_code == 2 and "'joules' is not one of 'seconds', 'epochs', 'flops'" in r.output
    flops = CliRunner().invoke(main, ["results", "--store", str(store_dir), "--cost", "flops"])
    assert flops.exit_code == 0 and "standalone FLOPs" in flops.output and "—" in flops.output
