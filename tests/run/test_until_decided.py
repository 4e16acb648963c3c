"""`submit --until-decided` (orchestrator/run/until_decided.py): the spec section, the look-by-look loop on a store
(decisions, frozen comparisons, methods dropped once decided, resume, a changed result caught), and a real
driver killed with SIGKILL mid-look and submitted again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.analysis import decision_log as dlog
from orchestrator.cli import main
from orchestrator.run.scheduler import RunSummary
from orchestrator.spec.sweep_spec import SpecError, parse_spec
from orchestrator.store.results_store import ResultsStore
from orchestrator.run.until_decided import idle_looks, look_plan, run

BASE = {
    "name": "ud",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 160, "n_test": 64}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "magnitude"}, {"kind": "oneshot", "criterion": "random"},
                {"kind": "oneshot", "criterion": "snip"}],
    "sparsities": [0.5, 0.9],
    "seeds": list(range(10)),
    # alpha 0.2 over 4 comparisons: 0.05 each, so 8 seeds can decide (at 6 the spent alpha is below 2/2^6)
    "until_decided": {"reference": "magnitude", "methods": ["random", "snip"], "looks": [6, 8, 10], "alpha": 0.2},
}


# ------------------------------------------------------------------------------------------ the spec

@pytest.mark.parametrize("change, field", [
    ({"reference": "ltr"}, "until_decided.reference: no method 'ltr'"),
    ({"methods": ["random", "synflow"]}, "until_decided.methods.1: no method 'synflow'"),
    ({"methods": ["magnitude"]}, "until_decided.methods: 'magnitude' is the reference"),
    ({"looks": [6, 8]}, "until_decided.looks: the last look (8) is the seed budget"),
    ({"looks": [8, 6, 10]}, "looks must be increasing"),
    ({"looks": [6, 61]}, "until_decided.looks.1"),
    ({"sparsities": [0.7]}, "until_decided.sparsities.0: 0.7 is not a target sparsity"),
    ({"alpha": 1.5}, "until_decided.alpha"),
])
def test_a_bad_until_decided_section_names_its_field(change, field):
    with pytest.raises(SpecError, match=field.replace("(", r"\(").replace(")", r"\)")):
        parse_spec({**BASE, "until_decided": {**BASE["until_decided"], **change}})


def test_submit_until_decided_without_the_section_is_one_line_exit_2_and_writes_nothing(tmp_path):
    spec = {k: v for k, v in BASE.items() if k != "until_decided"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "store": str(tmp_path / "store")}))
    out = CliRunner().invoke(main, ["submit", str(path), "--until-decided"])
    assert out.exit_code == 2
    assert "until_decided: --until-decided needs this section" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()


def test_looks_that_can_never_decide_are_named():
    assert [n for n, _ in idle_looks([6, 10, 15, 20], 0.05 / 6)] == [6, 10]
    assert [n for n, _ in idle_looks([6, 8, 10], 0.05)] == [6]


# ------------------------------------------------------------------------------------------ the loop, on a store

def counts(method: str, target: float, seed: int) -> int:
    """Correct examples of 64: random far worse everywhere; snip better than the reference at 50 % on seeds 0-7
    and far worse on seeds 8-9 (the data turn after its decision); no difference at 90 %."""
    noise = (seed * 7 + int(target * 10) * 3) % 5
    base = 40 + noise
    if method == "random":
        return base - 12 - seed % 3
    if method == "snip" and target == 0.5:
        return base + 6 + seed % 2 if seed < 8 else base - 20
    if method == "snip":
        return base + (1 if seed % 2 else -1) * (1 + seed % 3)
    return base


class FakeRunner:
    """Stands in for the Ray scheduler: commits an ok row for every missing stage of the plan, with the
    accuracy `counts` gives; `stop_after` stages, it raises KeyboardInterrupt as a killed driver would stop."""

    def __init__(self, store: ResultsStore, sweep: str, stop_after: int | None = None):
        self.store, self.sweep, self.stop_after, self.plans, self.committed = store, sweep, stop_after, [], 0

    def __call__(self, plan):
        self.plans.append(plan)
        done, ran = self.store.done_keys(self.sweep), 0
        for key, stage in plan.stages.items():
            if key in done:
                continue
            if self.stop_after is not None and self.committed >= self.stop_after:
                raise KeyboardInterrupt
            points = []
            if stage.produces_point:
                target = stage.params.get("target_sparsity")
                method = stage.meta["method"]
                acc = counts(method, target, stage.seed) / 64 if target is not None else 0.5
                points = [{"method": method, "seed": stage.seed, "target_sparsity": target, "requested": True,
                           "status": "ok", "selected_test_accuracy": acc, "point_key": key}]
            self.store.commit(self.sweep, key, 1, {"kind": stage.kind, "status": "ok", "seed": stage.seed,
                                                   "method": stage.meta.get("method"), "finished_at": None},
                              points, [])
            ran += 1
            self.committed += 1
        return RunSummary(planned=len(plan.stages), skipped_done=len(plan.stages) - ran, ran=ran)


def _log(store: ResultsStore, sweep: str) -> list[dict]:
    return [{k: v for k, v in look.items() if k != "written_at"} for look in dlog.read_looks(store, sweep)]


def test_looks_decide_freeze_drop_decided_methods_and_stop_at_the_budget(tmp_path):
    spec = parse_spec({**BASE, "store": str(tmp_path / "store")})
    store = ResultsStore(spec.store)
    runner = FakeRunner(store, spec.name)
    outcome = run(spec, store, runner, echo=lambda *_: None)
    looks = dlog.read_looks(store, spec.name)
    assert [look["seeds_used"] for look in looks] == [6, 8, 10]
    latest = outcome.log.latest
    # look 1 (6 seeds) cannot decide; at 8 seeds random (both sparsities) and snip at 50 % are decided
    assert all(r["status"] == dlog.UNDECIDED for r in looks[0]["comparisons"])
    random50 = latest[("magnitude", "random", 0.5)]
    assert (random50["look"], random50["verdict"]) == (2, "A better")
    assert latest[("magnitude", "random", 0.9)]["verdict"] == "A better"
    snip50 = latest[("magnitude", "snip", 0.5)]
    assert (snip50["look"], snip50["status"], snip50["verdict"]) == (2, dlog.DECIDED, "B better")
    assert latest[("magnitude", "snip", 0.9)]["status"] == dlog.AT_BUDGET
    # frozen: look 3 analyses only the undecided comparison, although snip's data at 50 % then turn
    assert [dlog.comparison_id(r) for r in looks[2]["comparisons"]] == [("magnitude", "snip", 0.9)]
    # random was decided everywhere: it gets no seeds after look 2; the reference and snip do
    assert looks[2]["methods_run"] == ["magnitude", "snip"]
    last = runner.plans[-1]
    assert {s.seed for s in last.stages.values() if s.meta.get("method") == "random"} == set(range(8))
    assert {s.seed for s in last.stages.values() if s.meta.get("method") == "snip"} == set(range(10))
    assert sorted(dlog.comparison_id(r) for r in outcome.log.latest.values()) == sorted(latest)
    assert outcome.log.finished

    # submitting again decides nothing new, runs nothing, changes nothing
    before = _log(store, spec.name)
    again = FakeRunner(store, spec.name)
    outcome = run(spec, store, again, echo=lambda *_: None)
    assert outcome.looks_run == [] and again.plans == [] and _log(store, spec.name) == before

    # the text `compare` and `report` print
    text = dlog.format_decisions(outcome.log)
    assert "undecided at budget" in text and "snip better" in text and "magnitude better" in text
    assert "Bonferroni: α = 0.05 each" in text


def test_an_interrupted_look_resumes_to_the_same_decisions_each_stage_committed_once(tmp_path):
    whole = parse_spec({**BASE, "store": str(tmp_path / "whole")})
    run(whole, ResultsStore(whole.store), FakeRunner(ResultsStore(whole.store), whole.name), echo=lambda *_: None)
    spec = parse_spec({**BASE, "store": str(tmp_path / "cut")})
    store = ResultsStore(spec.store)
    # look 1 has 54 stages (6 seeds x 3 shared stages and 6 points): stop inside it, then inside look 2
    for stop_after, looks_stored in ((20, 0), (40, 1)):
        with pytest.raises(KeyboardInterrupt):
            run(spec, store, FakeRunner(store, spec.name, stop_after=stop_after), echo=lambda *_: None)
        assert len(dlog.read_looks(store, spec.name)) == looks_stored
    run(spec, store, FakeRunner(store, spec.name), echo=lambda *_: None)
    assert _log(store, spec.name) == _log(ResultsStore(whole.store), whole.name)
    commits = store.read("stages", spec.name)
    assert commits.groupby("stage_key").size().eq(1).all()


def test_a_result_that_changed_under_a_stored_decision_stops_the_run(tmp_path):
    spec = parse_spec({**BASE, "store": str(tmp_path / "store")})
    store = ResultsStore(spec.store)
    run(spec, store, FakeRunner(store, spec.name), echo=lambda *_: None)
    plan = look_plan(spec, [(6, ["magnitude", "random", "snip"])])
    key = next(k for k, s in plan.stages.items() if s.meta.get("method") == "random" and s.seed == 3
               and s.params.get("target_sparsity") == 0.5)
    # a newer attempt of one stage now says random was better at seed 3: the first look holding seed 3 no longer
    # follows from the store (its sum changed; look 2's decision with it)
    store.commit(spec.name, key, 2, {"kind": "prune", "status": "ok", "seed": 3, "method": "random",
                                     "finished_at": None},
                 [{"method": "random", "seed": 3, "target_sparsity": 0.5, "requested": True, "status": "ok",
                   "selected_test_accuracy": 60 / 64, "point_key": key}], [])
    with pytest.raises(dlog.DecisionLogError, match="look-1.json: the stored results no longer give"):
        run(spec, store, FakeRunner(store, spec.name), echo=lambda *_: None)


def test_a_log_made_under_another_design_is_not_continued(tmp_path):
    spec = parse_spec({**BASE, "store": str(tmp_path / "store")})
    store = ResultsStore(spec.store)
    run(spec, store, FakeRunner(store, spec.name), echo=lambda *_: None)
    other = parse_spec({**BASE, "store": spec.store, "until_decided": {**BASE["until_decided"], "alpha": 0.1}})
    with pytest.raises(dlog.DecisionLogError, match="another until_decided design"):
        run(other, store, FakeRunner(store, spec.name), echo=lambda *_: None)


def test_accuracies_that_are_not_counts_are_refused(tmp_path):
    from orchestrator.run.until_decided import NotDecidable, comparisons, paired_differences

    spec = parse_spec({**BASE, "store": str(tmp_path / "store")})
    store = ResultsStore(spec.store)
    runner = FakeRunner(store, spec.name)
    plan = look_plan(spec, [(6, ["magnitude", "random", "snip"])])
    runner(plan)
    points = store.read("points", spec.name)
    family = comparisons(spec)
    # rows without count columns: round(accuracy x the dataset's 64 test examples), where that is exact
    pairs = paired_differences(points, plan, spec, family, 6)
    assert pairs.units.tolist() == [64] * 4
    assert pairs.diffs[0].tolist() == [counts("random", 0.5, s) - counts("magnitude", 0.5, s) for s in range(6)]
    # the store's own count column wins where present (issue 25's selected_test_correct)
    counted = points.assign(selected_test_correct=7, test_examples=64)
    assert not paired_differences(counted, plan, spec, family, 6).diffs.any()
    bad = points.copy()
    bad.loc[(bad["method"] == "snip") & (bad["seed"] == 2), "selected_test_accuracy"] = 0.5001
    with pytest.raises(NotDecidable, match="snip vs magnitude at 0.5: test on float accuracies: they are not whole "
                                           "counts"):
        paired_differences(bad, plan, spec, family, 6)


# ------------------------------------------------------------------------------------------ failures count

FAIL = {**BASE, "name": "udfail", "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "snip"}],
        "until_decided": {"reference": "ltr", "methods": ["snip"], "looks": [6, 8, 10], "alpha": 0.2}}
CLASSES = 10  # synthetic's default: chance is 6.4 of 64 examples, so counts with a failure are out of 320


def fail_counts(method: str, target: float, seed: int) -> int:
    """snip 5-6 examples better than LTR wherever both finish."""
    base = 38 + (seed * 5 + int(target * 10)) % 7
    return base + 5 + seed % 2 if method == "snip" else base


class RecordingRunner:
    """Stands in for the Ray scheduler, committing through the real Recorder (the rows a real run writes: counts,
    num_classes, and failed/diverged/skipped point rows): the stages labelled in `diverge` diverge, their dependants are
    skipped as the scheduler skips them."""

    def __init__(self, store: ResultsStore, spec, diverge: set[str]):
        self.store, self.spec, self.diverge = store, spec, diverge

    def __call__(self, plan):
        from orchestrator.run.recorder import Recorder
        from orchestrator.store.health import inspect
        from orchestrator.run.scheduler import descendants

        state = inspect(self.store, plan, plan.sweep, False)
        recorder = Recorder(plan, self.spec, self.store, state, {})
        done, children = self.store.done_keys(plan.sweep), plan.children()
        # as the driver: a stage that diverged in an earlier submit is not run again, nor what depends on it
        dead = set().union(*[{k} | descendants(k, children) for k in state.diverged & set(plan.stages)])
        summary = RunSummary(planned=len(plan.stages), skipped_done=0, not_retried=len(dead))
        for key, stage in plan.stages.items():
            if key in done:
                summary.skipped_done += 1
                continue
            if key in dead:
                continue
            method, target = stage.meta.get("method"), stage.params.get("target_sparsity")
            if stage.label in self.diverge:
                recorder.record(key, {"status": "diverged", "error_type": "diverged", "error": "loss is nan",
                                      "seconds": 1.0})
                summary.diverged += 1
                for d in sorted(descendants(key, children) - done - dead):
                    recorder.skipped(d, key, "diverged")
                    dead.add(d)
                    summary.skipped_after_failure += 1
                continue
            point = None
            if stage.produces_point:
                c = fail_counts(method, target, stage.seed) if method != "dense" else 50
                point = {"sparsity": target or 0.0, "test_accuracy": c / 64, "selected_test_accuracy": c / 64,
                         "test_correct": c, "selected_test_correct": c, "test_examples": 64, "num_classes": CLASSES}
            recorder.record(key, {"status": "ok", "seconds": 1.0, "point": point})
            summary.ran += 1
        return summary


def _fail_run(tmp_path, failures: str):
    block = FAIL["until_decided"] if failures == "chance" else {**FAIL["until_decided"], "failures": failures}
    spec = parse_spec({**FAIL, "store": str(tmp_path / failures), "until_decided": block})  # chance: the default
    store = ResultsStore(spec.store)
    # seed 2: snip at 50 % diverges; seed 4: LTR's level 2 diverges, so its levels up to 90 % are skipped
    diverge = {"snip s=2 sp=0.5000", "ltr s=4 L=2"}
    lines: list[str] = []
    outcome = run(spec, store, RecordingRunner(store, spec, diverge), echo=lines.append)
    return spec, store, outcome, lines


def test_a_diverged_seed_counts_at_chance_in_the_decisions_as_compare_counts_it(tmp_path):
    from orchestrator.analysis.compare import compare_methods

    spec, store, outcome, lines = _fail_run(tmp_path, "chance")
    looks = dlog.read_looks(store, spec.name)
    assert looks[0]["design"]["failures"] == "chance"
    assert any("2 stage(s) diverged" in line and "counted at chance accuracy" in line for line in lines)
    first = {r["target_sparsity"]: r for r in looks[0]["comparisons"]}
    # by hand, look 1 (seeds 0-5) in units of 1/320 of the test set (5 x 64; chance is 32 of them)
    d = lambda t, s: 5 * (fail_counts("snip", t, s) - fail_counts("ltr", t, s))  # noqa: E731
    at50 = [d(0.5, s) for s in (0, 1, 3, 5)] + [32 - 5 * fail_counts("ltr", 0.5, 2),
                                                 5 * fail_counts("snip", 0.5, 4) - 32]
    at90 = [d(0.9, s) for s in (0, 1, 2, 3, 5)] + [5 * fail_counts("snip", 0.9, 4) - 32]
    assert (first[0.5]["sum_diff"], first[0.5]["test_examples"]) == (sum(at50), 320)
    assert (first[0.5]["failed_a"], first[0.5]["failed_b"]) == (1, 1)
    assert (first[0.9]["sum_diff"], first[0.9]["failed_a"], first[0.9]["failed_b"]) == (sum(at90), 1, 0)
    assert first[0.5]["mean_diff"] == pytest.approx(sum(at50) / 6 / 320)
    # the same seeds in `compare`: the same failed counts and the same mean difference
    points = store.read("points", spec.name)
    table = compare_methods(points[points["seed"] < 6], "ltr", "snip").set_index("target_sparsity")
    assert (table.loc[0.5, "failed_a"], table.loc[0.5, "failed_b"], table.loc[0.5, "n"]) == (1, 1, 6)
    assert table.loc[0.5, "mean_diff"] == pytest.approx(first[0.5]["mean_diff"])
    # the diverged seeds stay in the decision: snip at 50 % is not declared better on its finished seeds alone
    latest = outcome.log.latest
    assert latest[("ltr", "snip", 0.5)]["status"] == dlog.AT_BUDGET
    assert latest[("ltr", "snip", 0.9)]["verdict"] == "B better"
    assert "failed A/B" in dlog.format_decisions(outcome.log)


def test_failures_exclude_leaves_the_diverged_seeds_out_as_compare_does(tmp_path):
    from orchestrator.analysis.compare import compare_methods

    spec, store, outcome, _ = _fail_run(tmp_path, "exclude")
    first = {r["target_sparsity"]: r for r in dlog.read_looks(store, spec.name)[0]["comparisons"]}
    by_hand = sum(fail_counts("snip", 0.5, s) - fail_counts("ltr", 0.5, s) for s in (0, 1, 3, 5))
    assert (first[0.5]["sum_diff"], first[0.5]["test_examples"]) == (by_hand, 64)
    assert (first[0.5]["failed_a"], first[0.5]["failed_b"]) == (1, 1)
    points = store.read("points", spec.name)
    table = compare_methods(points[points["seed"] < 6], "ltr", "snip", failures="exclude").set_index(
        "target_sparsity")
    assert table.loc[0.5, "n"] == 4 and table.loc[0.5, "mean_diff"] == pytest.approx(by_hand / 4 / 64)
    # on the finished seeds alone snip is better at 50 % too: the question `exclude` answers
    assert outcome.log.latest[("ltr", "snip", 0.5)]["verdict"] == "B better"
    # a log made under the other policy is not continued
    other = parse_spec({**FAIL, "store": spec.store})
    with pytest.raises(dlog.DecisionLogError, match="another until_decided design"):
        run(other, store, RecordingRunner(store, other, set()), echo=lambda *_: None)


def test_a_stage_that_failed_with_an_error_decides_nothing(tmp_path):
    from orchestrator.run.until_decided import NotDecidable

    spec = parse_spec({**FAIL, "store": str(tmp_path / "store")})
    store = ResultsStore(spec.store)

    def erring(plan):
        return RunSummary(planned=len(plan.stages), skipped_done=0, failed=1,
                          failures=["snip s=2 sp=0.5000: failed (error): boom"])
    with pytest.raises(NotDecidable, match="look 1 \\(6 seeds\\): 1 stage\\(s\\) failed with an error.*\n  snip s=2"):
        run(spec, store, erring, echo=lambda *_: None)
    assert dlog.read_looks(store, spec.name) == []


def test_submit_until_decided_exits_1_after_a_divergence_with_its_decisions(tmp_path, monkeypatch):
    import orchestrator.run.until_decided as ud

    spec_dict = {**FAIL, "store": str(tmp_path / "store")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    spec = parse_spec(spec_dict)
    store = ResultsStore(spec.store)
    outcome = run(spec, store, RecordingRunner(store, spec, {"snip s=2 sp=0.5000"}), echo=lambda *_: None)
    assert outcome.diverged == 1
    monkeypatch.setattr(ud, "run", lambda *args, **kwargs: outcome)  # the looks ran above, without Ray
    out = CliRunner().invoke(main, ["submit", str(path), "--until-decided", "--no-progress", "--no-dashboard"])
    assert out.exit_code == 1
    assert "sequential decisions" in out.output and "1 stage(s) diverged in this submit" in out.output


# ------------------------------------------------------------------------------------------ a real driver, killed

REAL = {**BASE, "name": "udreal", "seeds": list(range(8)), "sparsities": [0.5],
        "until_decided": {"reference": "magnitude", "methods": ["random", "snip"], "looks": [4, 6, 8], "alpha": 0.2},
        # One trial actor (kept from look to look): its stages take a fraction of a second actor's start.
        "resources": {"cpus_per_trial": 1, "max_concurrent": 1}}


def _submit_args(tmp_path: Path, store: Path, address: str) -> list[str]:
    """A driver joining the session's cluster: the cluster outlives the killed driver, which Ray cleans up after."""
    path = tmp_path / f"{store.name}.yaml"
    path.write_text(yaml.safe_dump({**REAL, "store": str(store)}))
    return [sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--until-decided", "--no-progress",
            "--address", address]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


@pytest.mark.slow
def test_a_driver_killed_mid_look_resumes_to_the_same_decisions(ray_address, tmp_path):
    whole = subprocess.run(_submit_args(tmp_path, tmp_path / "whole", ray_address), env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    store = tmp_path / "cut"
    driver = subprocess.Popen(_submit_args(tmp_path, store, ray_address), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    first_look = store / "decisions" / "sweep=udreal" / "look-1.json"
    second_look = store / "decisions" / "sweep=udreal" / "look-2.json"
    deadline, mid_look = time.monotonic() + 600, False
    while time.monotonic() < deadline and driver.poll() is None and not second_look.exists():
        # The driver is stopped while we look, so what we see is where it is when it is killed: on a loaded
        # machine the look itself takes long enough for the driver to finish look 2 meanwhile.
        os.kill(driver.pid, signal.SIGSTOP)
        if first_look.exists() and not second_look.exists():
            looked = len(json.loads(first_look.read_text())["seeds"])
            stored = ResultsStore(str(store)).read("points", "udreal")
            mid_look = bool((stored["seed"] >= looked).any())  # look 2 has stored some of its stages
        if mid_look:
            break
        os.kill(driver.pid, signal.SIGCONT)
        time.sleep(0.05)  # short: on the actors kept from look 1, look 2's tiny stages take a fraction of a second
    assert mid_look, "the driver finished look 2 before it could be killed mid-look"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not second_look.exists()
    again = subprocess.run(_submit_args(tmp_path, store, ray_address), env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _log(ResultsStore(str(store)), "udreal") == _log(ResultsStore(str(tmp_path / "whole")), "udreal")
    # no seed lost or duplicated: one finished row per (method, target, seed), the same rows as unkilled
    from orchestrator.analysis.frontier import finished

    def rows(location):
        df = finished(ResultsStore(str(location)).read("points", "udreal"), all_levels=False)
        keys = df[["method", "target_sparsity", "seed"]].astype(str).agg("/".join, axis=1)
        assert not keys.duplicated().any()
        return dict(zip(keys, df["selected_test_accuracy"]))
    assert rows(store) == rows(tmp_path / "whole")


def test_compare_and_report_show_the_same_decisions(tmp_path):
    spec_dict = {**BASE, "store": str(tmp_path / "store")}
    spec = parse_spec(spec_dict)
    store = ResultsStore(spec.store)
    run(spec, store, FakeRunner(store, spec.name), echo=lambda *_: None)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    compared = CliRunner().invoke(main, ["compare", str(path), "--reference", "magnitude", "--all"])
    assert compared.exit_code == 0, compared.output
    assert "sequential decisions (submit --until-decided), after look 3 (10 seeds)" in compared.output
    header, rows, _ = dlog.decision_cells(dlog.state(dlog.read_looks(store, spec.name)))
    for row in rows:  # every decision row, cell for cell, in the compare table
        assert any(all(cell in line for cell in row) for line in compared.output.splitlines()), row
    reported = CliRunner().invoke(main, ["report", str(path), "-o", str(tmp_path / "report")])
    assert reported.exit_code == 0, reported.output
    md = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    assert "## Sequential decisions (submit --until-decided)" in md and 'id="decisions"' in html
    section = md[md.index("## Sequential decisions"):md.index("## Stages")]
    table = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines()
             if line.startswith("|")]
    assert table[0] == header and table[2:] == rows  # the same cells as compare prints


def test_validate_names_the_until_decided_design():
    spec = Path(__file__).resolve().parents[2] / "specs" / "until_decided.yaml"
    out = CliRunner().invoke(main, ["validate", str(spec), "--skip-data"])
    assert out.exit_code == 0, out.output
    assert ("until decided (submit --until-decided): 6 comparison(s) of cts_reverse_kl, snip against ltr, looks at "
            "6, 10, 15, 20 seeds, family-wise alpha 0.05") in out.output
