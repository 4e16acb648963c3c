"""End to end on a real local Ray: submit a tiny spec, read the Parquet back with pandas, resume."""
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from tests.helpers.in_process_sweeps import submit

pytestmark = pytest.mark.slow  # sweeps on a real Ray, and `submit` checking its data in a child process

TINY = {
    "name": "tiny",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 128, "n_test": 64}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "2it"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "magnitude", "score_at": "trained"},
                {"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.8],
    "seeds": [0],
    # One trial actor: a second is one more process start importing torch, dearer than these tiny stages.
    "resources": {"max_concurrent": 1},
}


def test_submit_resume_and_add_seed(ray_cluster, tmp_path):
    store = tmp_path / "store"
    first = submit(TINY, store)
    plan = build_plan(parse_spec(TINY))
    assert first.failed == 0 and first.ran == len(plan.stages)

    points = pd.read_parquet(store / "points")
    assert set(points["status"]) == {"ok"}
    assert set(points["method"].astype(str)) == {"dense", "ltr", "magnitude[score_at=trained]", "random"}
    assert set(points["sweep"].astype(str)) == {"tiny"}
    requested = points[points["requested"]]
    for _, row in requested[requested["method"] != "dense"].iterrows():
        assert row["sparsity"] == pytest.approx(row["target_sparsity"], abs=0.01)
    assert points["dense_test_accuracy"].notna().all()
    ltr = points[points["method"] == "ltr"].sort_values("target_sparsity")
    # LTR's standalone cost includes the whole chain: it grows with the level
    assert ltr["standalone_seconds"].is_monotonic_increasing
    assert (ltr["standalone_seconds"] > ltr["marginal_seconds"]).all()
    assert pd.read_parquet(store / "stages")["status"].eq("ok").all()
    curves = pd.read_parquet(store / "curves")
    assert len(curves) > 0 and curves["label"].notna().all()
    assert curves.loc[~curves["label"].str.startswith("warmup"), "method"].notna().all()  # warm-up: shared
    assert set(curves["method"]) >= {"ltr", "random"}  # joinable to results without the stages table
    assert (points["peak_rss_mb"] > 50).all()  # the trial process's peak resident memory, in MB
    assert points["cuda_peak_mb"].isna().all()  # no GPU here
    files_before = sorted(p.name for p in store.rglob("*.parquet"))

    again = submit(TINY, store)
    assert again.ran == 0 and again.skipped_done == len(plan.stages)
    assert sorted(p.name for p in store.rglob("*.parquet")) == files_before

    more = submit({**TINY, "seeds": [0, 1]}, store)
    new_plan = build_plan(parse_spec({**TINY, "seeds": [0, 1]}))
    seed1 = [s for s in new_plan.stages.values() if s.seed == 1]
    assert more.ran == len(seed1)
    points = pd.read_parquet(store / "points")
    assert set(points["seed"]) == {0, 1}


def test_failing_stage_writes_failure_row_and_others_continue(ray_cluster, tmp_path):
    spec = {**TINY, "name": "failing", "sparsities": [0.5],
            "methods": [{"kind": "oneshot", "criterion": "snip", "samples_per_class": 1000,
                         "sanity_checks": ["shuffle"]},
                        {"kind": "oneshot", "criterion": "random"}]}
    summary = submit(spec, tmp_path / "store")
    assert summary.failed == 1 and summary.skipped_after_failure == 1
    points = pd.read_parquet(tmp_path / "store" / "points")
    failed = points[points["status"] == "failed"]
    assert list(failed["method"].astype(str)) == ["snip[samples_per_class=1000]"]
    assert failed["error_type"].iloc[0] == "error"  # an exception in the code: not retried
    assert failed["error"].iloc[0].startswith("ValueError: ")
    log = next((tmp_path / "store" / "logs" / "sweep=failing").glob(failed["stage_key"].iloc[0] + "-1.log"))
    assert "Traceback" in log.read_text() and "ValueError" in log.read_text()
    assert points.loc[points["method"] == "random", "status"].eq("ok").all()
    # The skipped dependant (the sanity check of the failed method) has a point row too, so that a comparison
    # can count its seed as failed instead of losing it (issue 25).
    skipped = points[points["status"] == "skipped"]
    assert list(skipped["method"].astype(str)) == ["snip[samples_per_class=1000]+shuffle"]
    assert skipped["error_type"].iloc[0] == "parent_failed" and skipped["selected_test_accuracy"].isna().all()
    stages = pd.read_parquet(tmp_path / "store" / "stages")
    assert (stages["status"] == "skipped").sum() == 1
    assert set(stages.loc[stages["status"] == "skipped", "error_type"]) == {"parent_failed"}


def test_cli_submit_results_plot(ray_cluster, tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**TINY, "name": "cli", "seeds": [3], "methods": [{"kind": "oneshot", "criterion": "random"}]}))
    store = tmp_path / "store"
    runner = CliRunner()
    r = runner.invoke(main, ["submit", str(spec_path), "--store", str(store), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "0 failed" in r.output
    r = runner.invoke(main, ["results", "--store", str(store)])
    assert r.exit_code == 0, r.output
    assert "random" in r.output and "dense" in r.output
    out = tmp_path / "f.png"
    r = runner.invoke(main, ["plot", "--store", str(store), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(main, ["plan", str(spec_path), "--store", str(store)])
    assert r.exit_code == 0 and "0 stage(s) to run" in r.output


def test_bad_data_root_exits_2_and_writes_nothing(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**TINY, "dataset": {"name": "mnist", "root": str(tmp_path / "nodata")}}))
    store = tmp_path / "store"
    r = CliRunner().invoke(main, ["submit", str(spec_path), "--store", str(store)])
    assert r.exit_code == 2
    assert str(tmp_path / "nodata") in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not store.exists()


def test_store_that_is_a_file_exits_2(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(TINY))
    bad = tmp_path / "file"
    bad.write_text("x")
    r = CliRunner().invoke(main, ["submit", str(spec_path), "--store", str(bad)])
    assert r.exit_code == 2 and str(bad) in r.output
    assert bad.read_text() == "x"


def test_more_gpus_than_the_cluster_has_exits_2(ray_cluster, tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**TINY, "resources": {"gpus_per_trial": 0.5}}))
    r = CliRunner().invoke(main, ["submit", str(spec_path), "--store", str(tmp_path / "store")])
    assert r.exit_code == 2
    assert "resources.gpus_per_trial" in r.output
    assert not (tmp_path / "store").exists()


def test_submit_compacts_a_deep_sweep_and_resumes_from_it(ray_cluster, tmp_path, monkeypatch):
    from orchestrator.run import driver

    monkeypatch.setattr(driver, "AUTO_COMPACT_FILES", 3)
    spec = {**TINY, "name": "deep", "methods": [{"kind": "oneshot", "criterion": "random"}]}
    store = tmp_path / "store"
    first = submit(spec, store)
    plan = build_plan(parse_spec(spec))
    assert first.ran == len(plan.stages)
    assert [p.name[:10] for p in (store / "stages" / "sweep=deep").iterdir()] == ["compacted-"]
    points = pd.read_parquet(store / "points")
    assert len(points) == len(plan.points()) and points["point_key"].is_unique
    assert submit(spec, store).ran == 0


def test_adding_a_sparsity_gives_the_frontier_of_the_current_plan(ray_cluster, tmp_path):
    """An inserted sparsity gives the rest of the LTR chain new keys: the old chain's rows stay in the store but
    are superseded, so results show n = seeds at every point and the README's pandas read has no duplicates."""
    spec = {**TINY, "name": "grown", "seeds": [0, 1], "sparsities": [0.5, 0.8, 0.9, 0.95]}
    store = tmp_path / "store"
    submit(spec, store)
    grown = {**spec, "sparsities": [0.5, 0.7, 0.8, 0.9, 0.95]}
    more = submit(grown, store)
    assert more.ran > 0
    points = pd.read_parquet(store / "points")
    ltr = points[(points["method"] == "ltr") & points["requested"] & (points["status"] == "ok")]
    assert (ltr.groupby("target_sparsity").size() > 2).any()   # the old chain's rows are still stored

    path = tmp_path / "grown.yaml"
    path.write_text(yaml.safe_dump({**grown, "store": str(store)}))
    r = CliRunner().invoke(main, ["results", "--spec", str(path), "--format", "csv"])
    assert r.exit_code == 0, r.output
    frontier = pd.read_csv(__import__("io").StringIO(r.output))
    assert (frontier["n"] == 2).all() and 0.7 in frontier["target_sparsity"].tolist()
    without_spec = CliRunner().invoke(main, ["results", "--store", str(store), "--sweep", "grown", "--format", "csv"])
    assert without_spec.output == r.output      # the newest recorded plan says the same
    status = CliRunner().invoke(main, ["status", str(path)])
    assert "no longer in this spec's plan" in status.output

    plans = pd.read_parquet(store / "plans")      # the README's recipe for a raw pandas read
    current = plans[plans["planned_at"] == plans.groupby("sweep")["planned_at"].transform("max")]
    ok = points[(points["status"] == "ok") & points["requested"] & points["stage_key"].isin(current["stage_key"])]
    assert (ok.groupby(["method", "target_sparsity"]).size() == 2).all()


def test_trial_actors_kept_between_runs_are_reused_and_a_dead_one_costs_no_retry(ray_cluster, tmp_path):
    """`submit --until-decided` hands one look's idle trial actors to the next (scheduler.KeptActors); one that
    died in between is replaced before any stage is handed to it, so no stage records a lost attempt for it."""
    import ray

    from orchestrator.run import driver
    from orchestrator.run.scheduler import KeptActors
    from orchestrator.store.results_store import ResultsStore

    spec = {**TINY, "name": "kept", "methods": [{"kind": "oneshot", "criterion": "random"}],
            "resources": {"max_concurrent": 2}}
    store, kept = ResultsStore(str(tmp_path / "store")), KeptActors()

    def run(seeds):
        s = parse_spec({**spec, "seeds": seeds})
        return driver.run_plan(build_plan(s), s, store, progress=False, echo=lambda *_: None, kept=kept)

    assert run([0]).failed == 0
    first = [a for actors in kept.idle.values() for a in actors]
    made = kept.made
    assert first and made == len(first)  # every actor the run made is idle and kept
    ray.kill(first[0])                    # dies while kept, between the runs
    assert run([0, 1]).failed == 0
    again = [a for actors in kept.idle.values() for a in actors]
    assert first[0] not in again and set(first[1:]) <= set(again)  # the dead one replaced, the others reused
    assert kept.made <= made + len(first)
    stages = store.read("stages", "kept")
    assert (stages["attempt"] == 1).all() and stages["status"].eq("ok").all(), stages[["label", "attempt", "status"]]
    kept.close()
