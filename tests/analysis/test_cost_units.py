"""Costs a reviewer can reproduce: the same tiny sweep run through the CLI on an idle machine and beside two
CPU hogs stores exactly the same work (epochs, passes, FLOPs) while its seconds differ, so a cost ratio in
work units is the same on both; each stage records the machine it ran on."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.store.schemas import WORK_COLUMNS
from orchestrator.store.results_store import ResultsStore

pytestmark = pytest.mark.slow  # real sweeps through the CLI, one of them beside CPU hogs

SPEC = {
    "name": "costs",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 160, "n_test": 64}, "validation": 0.2},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "2it"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "snip"},
                {"kind": "cts", "objective": "reverse_kl"}],
    "sparsities": [0.5],
    "seeds": [0, 1],
    # One trial actor: a second is one more process start importing torch, dearer than these tiny stages.
    "resources": {"max_concurrent": 1},
}
POINT_WORK = [*WORK_COLUMNS, "standalone_epochs", "standalone_flops"]


def _submit(folder, name: str) -> str:
    spec = folder / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "store": str(folder / name)}))
    r = CliRunner().invoke(main, ["submit", str(spec), "--no-progress", "--no-dashboard"])
    assert r.exit_code == 0, r.output
    return str(spec)


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("costs")
    idle = _submit(folder, "idle")
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(2)]
    try:
        loaded = _submit(folder, "loaded")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return folder, idle, loaded


def _by_stage(frame, columns):
    return {r["stage_key"]: {c: r[c] for c in columns} for r in frame.to_dict("records")}


def test_work_is_stored_identically_on_an_idle_and_a_loaded_machine_and_seconds_are_not(runs):
    folder, _, _ = runs
    points = {name: ResultsStore(str(folder / name)).read("points", "costs") for name in ("idle", "loaded")}
    idle, loaded = (_by_stage(points[n], POINT_WORK + ["marginal_seconds", "method"]) for n in ("idle", "loaded"))
    assert set(idle) == set(loaded) and len(idle) == 2 * (1 + 4 + 1 + 1)  # dense, 4 LTR levels, SNIP, CTS
    for key, row in idle.items():
        assert all(row[c] is not None and row[c] == row[c] for c in POINT_WORK), row  # counted, not null
        assert {c: row[c] for c in POINT_WORK} == {c: loaded[key][c] for c in POINT_WORK}, row["method"]
        assert row["train_flops"] > 0 and row["standalone_flops"] >= row["train_flops"] + row["search_flops"]
    assert [idle[k]["marginal_seconds"] for k in sorted(idle)] != [loaded[k]["marginal_seconds"] for k in sorted(idle)]
    by_method = {}
    for row in idle.values():
        by_method.setdefault(row["method"], []).append(row)
    # Searches and scoring are search work; LTR has none; CTS searched as many epochs as it trains.
    assert all(r["search_flops"] > 0 and r["search_epochs"] == 2.0 for r in by_method["cts_reverse_kl"])
    assert all(r["search_flops"] > 0 and r["search_epochs"] == 0.0 for r in by_method["snip"])
    assert all(r["search_flops"] == 0 for r in by_method["ltr"])
    stages = {n: ResultsStore(str(folder / n)).read("stages", "costs") for n in ("idle", "loaded")}
    assert _by_stage(stages["idle"], WORK_COLUMNS) == _by_stage(stages["loaded"], WORK_COLUMNS)


def test_each_stage_records_its_machine(runs):
    folder, _, _ = runs
    stages = ResultsStore(str(folder / "idle")).read("stages", "costs")
    assert len(stages) == 2 * (3 + 4 + 1 + 1)  # init, warm-up and dense per seed too
    assert stages["cpu_model"].notna().all() and (stages["logical_cores"] == os.cpu_count()).all()
    assert (stages["torch_threads"] == 1).all() and stages["gpu_model"].isna().all()  # one CPU per trial
    assert stages["load_start"].notna().all() and stages["load_end"].notna().all()
    assert stages["host"].notna().all()


@pytest.mark.parametrize("cost", ["epochs", "flops"])
def test_a_cost_ratio_in_work_units_is_the_same_on_both_runs(runs, cost):
    _, idle, loaded = runs
    ratios = []
    for spec in (idle, loaded):
        r = CliRunner().invoke(main, ["compare", spec, "--reference", "ltr", "--all", "--cost", cost,
                                      "--format", "json"])
        assert r.exit_code == 0, r.output
        rows = json.loads(r.output)
        assert all(row["cost_unit"] == cost and row["cost_pairs"] == 2 for row in rows)
        ratios.append([(row["method_b"], row["cost_ratio"], row["cost_ratio_low"], row["cost_ratio_high"])
                       for row in rows])
    assert ratios[0] == ratios[1]
    text = CliRunner().invoke(main, ["compare", idle, "ltr", "snip", "--cost", cost]).output
    assert f"cost B/A ({cost})" in text


def test_results_in_each_unit_keep_seconds_beside_work(runs):
    _, idle, loaded = runs
    for cost, header in (("epochs", "standalone ep"), ("flops", "standalone FLOPs")):
        tables = [CliRunner().invoke(main, ["results", "--spec", s, "--cost", cost, "--format", "csv"]).output
                  for s in (idle, loaded)]
        # Every cell but the standalone seconds (the second column from the end).
        work = [[line.split(",")[:-2] + line.split(",")[-1:] for line in t.splitlines()] for t in tables]
        header_line = tables[0].splitlines()[0].split(",")
        assert header_line[-5:] == [f"standalone_{cost}_mean", f"marginal_{cost}_mean", f"search_{cost}_mean",
                                    "standalone_seconds_mean", "dense_test_accuracy_mean_pct"]
        assert work[0] == work[1]  # every column but the seconds is the same on both runs
        table = CliRunner().invoke(main, ["results", "--spec", idle, "--cost", cost]).output
        assert header in table and "standalone s" in table
    default = CliRunner().invoke(main, ["results", "--spec", idle]).output
    assert "standalone s" in default and "FLOPs" not in default and " ep" not in default


def test_the_report_names_the_machines(runs):
    folder, idle, _ = runs
    out = folder / "report"
    r = CliRunner().invoke(main, ["report", idle, "-o", str(out), "--cost", "flops"])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    stages = ResultsStore(str(folder / "idle")).read("stages", "costs")
    assert "## Machines" in md and stages["cpu_model"].iloc[0] in md and stages["host"].iloc[0] in md
    machines = [line for line in md.split("## Machines")[1].splitlines() if line.startswith("| ")][2:]
    assert len(machines) == 1 and f" {len(stages)} |" in machines[0]  # every stage on this one machine
    assert "standalone FLOPs" in md and "FLOPs" in md.split("## Stages")[1]
