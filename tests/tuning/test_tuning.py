"""Fair tuning with Ray Tune, on real processes: spec checks, the tune stage in the DAG, ASHA stopping weak
configurations, a bad default recovered by tuning, the test set never read while tuning, idempotence, and a
driver killed mid-tuning."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import SpecError, parse_spec
from orchestrator.store.results_store import ResultsStore
from tests.helpers.in_process_sweeps import submit, submitted

SPEC = {
    "name": "tuned",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 256, "n_test": 64}},
    # A learning rate far too small: the untuned method barely trains in 6 epochs.
    "training": {"epochs": 6, "batch_size": 32, "lr": 0.0005, "rewind": "2it"},
    "methods": [{"kind": "oneshot", "criterion": "magnitude"},
                {"kind": "oneshot", "criterion": "magnitude", "tune": {"training.lr": {"loguniform": [0.0005, 0.5]}}}],
    "sparsities": [0.8],
    "seeds": [0, 1],
    "tuning": {"configurations": 5, "grace_period": 1, "reduction_factor": 2, "sparsities": [0.8]},
    # One trial actor: each is a process of its own (importing torch), which costs these tiny stages more than
    # running two at once gains them.
    "resources": {"max_concurrent": 1},
}


# ---------------------------------------------------------------- the spec

@pytest.mark.parametrize("change, message", [
    ({"tune": {"lrr": {"uniform": [0, 1]}}}, "methods.1: tune.lrr: oneshot has no knob 'lrr'"),
    ({"tune": {"samples_per_class": {"uniform": [5, 5]}}}, "uniform [5, 5] is an empty range"),
    ({"criterion": "snip", "tune": {"samples_per_class": {"uniform": [5, 20]}}},
     "not a valid samples_per_class (Input should be a valid integer, got a number with a fractional part); "
     "a whole-number knob takes {choice: [...]}"),
    ({"tune": {"samples_per_class": {"choice": [0, 5]}}}, "tune.samples_per_class: 0 is not a valid samples_per_class"),
    ({"tune": {"training.epochs": {"choice": [2, 4]}}}, "methods.1.tune.training.epochs: not a tunable recipe knob"),
    ({"tune": {"training.lr": {"loguniform": [0, 1]}}}, "loguniform needs low > 0"),
    ({"tune": {"samples_per_class": {"choice": [1, 2, 10]}}}, "tuning.configurations: 5 configurations, but "
                                                             "methods.1's search space holds only 3"),
    ({"tune": {"training.lr": {"loguniform": [0.01, 0.5]}}}, "methods.1.tune.training.lr: the untuned value 0.0005 is "
                                                            "outside the search range"),
    ({"tune": {"samples_per_class": {"choice": [5, 20]}}}, "the untuned value 10 is outside the search range"),
])
def test_bad_search_spaces_are_one_line_errors_naming_the_knob(change, message):
    methods = [SPEC["methods"][0], {**SPEC["methods"][1], **change}]
    with pytest.raises(SpecError) as err:
        parse_spec({**SPEC, "methods": methods})
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_tuning_needs_a_validation_split_and_distinct_tuning_seeds():
    for change, message in (({"dataset": {**SPEC["dataset"], "validation": 0}}, "dataset.validation: 0 leaves nothing"),
                            ({"tuning": {**SPEC["tuning"], "seeds": [7, 7]}}, "tuning seeds must be distinct")):
        with pytest.raises(SpecError, match=message):
            parse_spec({**SPEC, **change})


def test_a_budget_that_makes_no_sense_is_refused_and_nothing_is_written(tmp_path):
    for tuning, message in (({**SPEC["tuning"], "grace_period": 6}, "tuning.grace_period: 6 epochs is not below"),
                            (None, "methods.1.tune needs a `tuning` section")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**SPEC, "tuning": tuning, "store": str(tmp_path / "store")}))
        r = CliRunner().invoke(main, ["submit", str(path)])
        assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "store").exists()


def test_run_dependent_defaults_are_resolved_for_the_untuned_configuration():
    cts = {"kind": "cts", "tune": {"lr": {"loguniform": [0.0001, 0.1]}}}    # lr None: the training lr, 0.0005
    spec = parse_spec({**SPEC, "methods": [cts]})
    assert spec.methods[0].resolved(spec.training.model_dump())["lr"] == 0.0005
    with pytest.raises(SpecError, match="untuned value 0.0005 is outside"):
        parse_spec({**SPEC, "methods": [{**cts, "tune": {"lr": {"loguniform": [0.01, 0.1]}}}]})
    with pytest.raises(SpecError, match="tune.every: its default is decided by the run"):
        parse_spec({**SPEC, "methods": [{"kind": "gmp", "tune": {"every": {"choice": [1, 2, 3, 4, 5]}}}]})


def test_the_tune_stage_in_the_dag():
    plan = build_plan(parse_spec(SPEC))
    tune = [s for s in plan.stages.values() if s.kind == "tune"]
    assert len(tune) == 1 and tune[0].meta["method"] == "magnitude[tuned]"
    tuned = [s for s in plan.stages.values() if s.meta.get("method") == "magnitude[tuned]" and s.kind == "oneshot"]
    assert len(tuned) == 2 and all(s.parents["tuned"] == tune[0].key and "tuned" in s.inputs for s in tuned)
    # its standalone cost includes the search, and the search's includes the tuning seed's shared training
    assert tune[0].key in plan.ancestors_for_cost(tuned[0].key)
    assert {plan.stages[k].kind for k in plan.ancestors_for_cost(tune[0].key)} == {"warmup", "dense", "init"}
    # the tuning seed's dense run gives no requested row; the evaluation seeds' do
    assert {(s.seed, s.meta["requested"]) for s in plan.stages.values() if s.kind == "dense"} == \
        {(0, True), (1, True), (1_000_000, False)}
    untuned = [s for s in plan.stages.values() if s.meta.get("method") == "magnitude" and s.kind == "oneshot"]
    assert not {s.key for s in untuned} & {s.key for s in tuned}
    # the search's key follows its space and budget, not how many trials run at once
    key = lambda spec: next(k for k, s in build_plan(parse_spec(spec)).stages.items() if s.kind == "tune")
    assert key({**SPEC, "tuning": {**SPEC["tuning"], "max_concurrent": 2}}) == tune[0].key
    assert key({**SPEC, "tuning": {**SPEC["tuning"], "configurations": 6}}) != tune[0].key
    assert key({**SPEC, "prune_output": True}) != tune[0].key   # its trials prune under that rule


def test_the_summary_shows_each_search_s_work_from_its_latest_attempt_and_missing_counts_as_missing():
    """Two searches by hand: one whose stage was run twice (the counts of its latest attempt are shown), one
    stored before trials counted work (shown as missing, never as 0)."""
    from orchestrator.store.schemas import WORK_COLUMNS
    from orchestrator.tuning.summary import format_summary, summarize

    def trial(key, attempt, n):
        return {"sweep": "s", "method": f"{key}[tuned]", "stage_key": key, "attempt": attempt, "trial": n,
                "config": "{}", "reports": "[[1, 0.5]]", "epochs": 1.0, "max_epochs": 2.0, "seconds": 1.0,
                "work_seconds": 1.0, "score": 0.5, "completed": True, "diverged": False, "chosen": n == 0}

    counted = {"train_epochs": 2.75, "search_epochs": 0.5, "forward_examples": 10, "backward_examples": 10,
               "eval_examples": 4, "train_flops": 3 * 10**15 + 1, "search_flops": 20, "eval_flops": 5}
    trials = pd.DataFrame([trial("a", attempt, n) for attempt in (0, 1) for n in (0, 1)] + [trial("b", 0, 0)])
    stages = pd.DataFrame([{"stage_key": "a", "attempt": 0, **dict.fromkeys(WORK_COLUMNS, 1)},
                           {"stage_key": "a", "attempt": 1, **counted},
                           {"stage_key": "b", "attempt": 0, **dict.fromkeys(WORK_COLUMNS)}])
    frame = summarize(trials, stages)
    a, b = frame.to_dict("records")
    assert {c: a[c] for c in WORK_COLUMNS} == counted and all(b[c] is None for c in WORK_COLUMNS)
    (json_a, json_b) = json.loads(format_summary(frame, "json"))
    assert json_a["train_flops"] == 3 * 10**15 + 1 and json_b["train_epochs"] is None
    header, _, row_a, row_b = format_summary(frame).splitlines()[1:]
    assert "work ep" in header and "work FLOPs" in header
    assert row_a.split()[-7:-5] == ["3.25", "3e+15"]  # 2.75 + 0.5 epochs; train + search FLOPs, 4 digits
    assert row_b.split()[-7:-5] == ["—", "—"]


# ---------------------------------------------------------------- on a real cluster

@pytest.fixture(scope="module")
def tuned_store(ray_cluster, tmp_path_factory):
    return submitted(SPEC, tmp_path_factory, "tuned")


@pytest.mark.slow
def test_asha_stops_weak_configurations_and_the_bad_default_recovers(tuned_store):
    trials = pd.read_parquet(tuned_store / "tuning")
    assert len(trials) == 5 and trials["chosen"].sum() == 1
    assert json.loads(trials.loc[trials["trial"] == 0, "config"].iloc[0]) == {"training.lr": 0.0005}  # the default
    assert trials["epochs"].sum() < trials["max_epochs"].sum()   # ASHA stopped some early
    assert (~trials["completed"]).any()
    points = pd.read_parquet(tuned_store / "points")
    ok = points[(points["status"] == "ok") & points["requested"]]
    acc = ok.groupby(ok["method"].astype(str))["selected_test_accuracy"].mean()
    assert acc["magnitude[tuned]"] > acc["magnitude"] + 0.2
    chosen = json.loads(trials.loc[trials["chosen"], "config"].iloc[0])
    settings = json.loads(ok.loc[ok["method"] == "magnitude[tuned]", "settings"].iloc[0])
    assert settings["training.lr"] == chosen["training.lr"] != 0.0005   # the row says what it ran with


@pytest.mark.slow
def test_each_configuration_counts_what_it_ran_and_the_tune_stage_their_sum(tuned_store):
    """256 examples less 26 for validation: 230 to train on, 8 batches an epoch (the last of 6). Retraining
    starts at iteration 2 (`rewind: 2it`), and ASHA's clock is the epochs a trial has reached, so a trial with
    clock c, completed or stopped at c, ran iterations 2 to 8c: (8c - 2) / 8 epochs, 230c - 2 * 32 examples."""
    from orchestrator.store.schemas import WORK_COLUMNS

    trials = pd.read_parquet(tuned_store / "tuning")
    stopped = trials[~trials["completed"]]
    assert len(stopped) and (stopped["epochs"] < trials["epochs"].max()).all()  # ASHA stopped some early
    for t in trials.to_dict("records"):
        assert t["train_epochs"] == (8 * t["epochs"] - 2) / 8 and t["search_epochs"] == 0.0, t
        assert t["forward_examples"] == t["backward_examples"] == 230 * t["epochs"] - 64, t
        assert t["eval_examples"] == 26 * t["epochs"], t  # one evaluation per epoch, no test split
    stages = ResultsStore(str(tuned_store)).read("stages", "tuned")
    (tune,) = stages[stages["kind"] == "tune"].to_dict("records")
    for c in WORK_COLUMNS:
        assert tune[c] == trials[c].sum(), c
    points = ResultsStore(str(tuned_store)).read("points", "tuned")
    tuned = points[points["method"] == "magnitude[tuned]"]
    assert tuned["standalone_epochs"].notna().all() and (tuned["standalone_epochs"] > tune["train_epochs"]).all()


@pytest.mark.slow
def test_submitting_again_tunes_nothing(tuned_store):
    again = submit(SPEC, tuned_store)
    assert again.ran == 0


def tuning_verb(store, tmp_path, *options) -> str:
    """`orchestrate tuning` on SPEC stored in `store`: its output, once it exited 0."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "store": str(store)}))
    r = CliRunner().invoke(main, ["tuning", str(spec), *options])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.slow
def test_the_tuning_verb_reports_choice_budget_and_sensitivity(tuned_store, tmp_path):
    (row,) = json.loads(tuning_verb(tuned_store, tmp_path, "--format", "json"))
    trials = pd.read_parquet(tuned_store / "tuning")
    assert row["method"] == "magnitude[tuned]" and row["configurations"] == 5
    assert row["epochs_run"] == trials["epochs"].sum() and row["epochs_budget"] == trials["max_epochs"].sum()
    assert row["best_minus_default_first_pct"] > 0 and row["first_val_iqr_pct"] >= 0  # percent, as in the table
    table = tuning_verb(tuned_store, tmp_path)
    assert "magnitude[tuned]" in table and "training.lr" in table


@pytest.mark.slow
def test_the_tuning_verb_shows_each_search_s_work_beside_its_seconds(tuned_store, tmp_path):
    """The counts are the tune stage's row (the sum over its configurations, ASHA-stopped ones included)."""
    from orchestrator.analysis.frontier import cost_text
    from orchestrator.store.schemas import WORK_COLUMNS

    (row,) = json.loads(tuning_verb(tuned_store, tmp_path, "--format", "json"))
    stages = ResultsStore(str(tuned_store)).read("stages", "tuned")
    (tune,) = stages[stages["kind"] == "tune"].to_dict("records")
    assert tune["train_epochs"] > 0 and tune["train_flops"] > 0
    assert {c: row[c] for c in WORK_COLUMNS} == {c: tune[c] for c in WORK_COLUMNS}
    (line,) = [x for x in tuning_verb(tuned_store, tmp_path).splitlines() if x.startswith("magnitude[tuned]")]
    epochs = cost_text(tune["train_epochs"] + tune["search_epochs"], "epochs")
    flops = cost_text(tune["train_flops"] + tune["search_flops"], "flops")
    cells = f"{row['trial_seconds']:.1f} ({row['work_seconds']:.1f}) {epochs} {flops}"
    assert cells in " ".join(line.split()), line  # side by side, in that order


@pytest.mark.slow
def test_the_test_set_is_never_read_while_tuning_and_a_loaded_rerun_counts_the_same_work(ray_cluster, tuned_store,
                                                                                          tmp_path):
    """Another test set (the synthetic generator draws the training set first, so it is unchanged) leaves every
    configuration tried, every validation report and the choice bit-identical; run beside two CPU hogs, so is
    the work every configuration counted (stopped ones included), the tune stage's sum, and the tuned points'
    standalone work, while the seconds differ."""
    from orchestrator.store.schemas import WORK_COLUMNS

    other = {**SPEC, "dataset": {**SPEC["dataset"], "options": {"n_train": 256, "n_test": 96}}}
    other["methods"] = [SPEC["methods"][1]]
    store = tmp_path / "store"
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(2)]
    try:
        assert submit(other, store).failed == 0
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    a, b = (pd.read_parquet(s / "tuning").sort_values("trial") for s in (tuned_store, store))
    assert a[list(WORK_COLUMNS)].notna().all(axis=None)  # counted, so equal counts are equal numbers
    for column in ("config", "reports", "epochs", "score", "completed", "chosen", *WORK_COLUMNS):
        assert a[column].fillna(-1).tolist() == b[column].fillna(-1).tolist(), column
    assert a["seconds"].tolist() != b["seconds"].tolist()
    stages = [ResultsStore(str(s)).read("stages", "tuned") for s in (tuned_store, store)]
    tune = [st.loc[st["kind"] == "tune", list(WORK_COLUMNS)].to_dict("records") for st in stages]
    assert len(tune[0]) == 1 and all(pd.notna(v) for v in tune[0][0].values()) and tune[0] == tune[1]
    points = [ResultsStore(str(s)).read("points", "tuned") for s in (tuned_store, store)]
    standalone = [p.loc[p["method"] == "magnitude[tuned]"].sort_values("seed")
                  [["standalone_epochs", "standalone_flops"]].to_dict("records") for p in points]
    assert len(standalone[0]) == 2 and standalone[0] == standalone[1]
    assert all(pd.notna(v) for row in standalone[0] for v in row.values())


KILLED_DRIVER = textwrap.dedent('''
    import os, sys
    from orchestrator.run import recorder
    record = recorder.Recorder.record

    def dying(self, key, meta):
        if self.plan.stages[key].kind == "tune":
            os._exit(9)  # the driver dies with the search finished and not committed, like kill -9
        return record(self, key, meta)

    recorder.Recorder.record = dying
    from orchestrator.cli import main
    main(sys.argv[1:])
''')


@pytest.mark.slow
def test_a_driver_killed_during_tuning_resumes_and_tunes_once(ray_address, tmp_path):
    spec = {**SPEC, "methods": [SPEC["methods"][1]], "name": "killed", "seeds": [0],
            "tuning": {**SPEC["tuning"], "configurations": 3}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    store = tmp_path / "store"
    out = subprocess.run([sys.executable, "-c", KILLED_DRIVER, "submit", str(path), "--store", str(store),
                          "--no-progress", "--address", ray_address], capture_output=True, text=True, timeout=300)
    assert out.returncode == 9, out.stderr[-2000:]
    assert not (store / "tuning").exists()
    before = ResultsStore(str(store)).read("stages", "killed")
    finished = set(before.loc[before["status"] == "ok", "stage_key"])
    assert "tune" not in set(before["kind"])
    summary = submit(spec, store)
    plan = build_plan(parse_spec(spec))
    assert summary.failed == 0 and summary.ran == len(plan.stages) - len(finished)  # nothing finished runs again
    stages = ResultsStore(str(store)).read("stages", "killed")
    assert (stages.loc[stages["kind"] == "tune", "status"] == "ok").sum() == 1
    assert pd.read_parquet(store / "tuning")["chosen"].sum() == 1
