"""`submit --until-decided` (orchestrator/until_decided.py): the spec section, the look-by-look loop on a store
(decisions, frozen comparisons, methods dropped once decided, resume, a changed result caught), and a real
driver killed with SIGKILL mid-look and submitted again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from click.testing import CliRunner

from orchestrator import decision_log as dlog
from orchestrator.cli import main
from orchestrator.scheduler import RunSummary
from orchestrator.spec import SpecError, parse_spec
from orchestrator.store import ResultsStore
from orchestrator.until_decided import idle_looks, look_plan, run

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
    from orchestrator.until_decided import NotDecidable, correct_counts

    spec = parse_spec(BASE)
    rows = pd.DataFrame({"selected_test_accuracy": [33 / 64, 0.5001], "stage_key": ["a", "b"]})
    with pytest.raises(NotDecidable, match="0.5001 of 64 test examples is not a count"):
        correct_counts(rows, spec)
    assert correct_counts(rows.iloc[:1], spec).tolist() == [33]
    # the store's own count column wins where present (issue 25's selected_test_correct)
    assert correct_counts(rows.assign(selected_test_correct=[7, 8]), spec).tolist() == [7, 8]


# ------------------------------------------------------------------------------------------ a real driver, killed

REAL = {**BASE, "name": "udreal", "seeds": list(range(8)),
        "until_decided": {"reference": "magnitude", "methods": ["random", "snip"], "looks": [4, 6, 8], "alpha": 0.2},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2}}


def _submit_args(tmp_path: Path, store: Path) -> list[str]:
    path = tmp_path / f"{store.name}.yaml"
    path.write_text(yaml.safe_dump({**REAL, "store": str(store)}))
    return [sys.executable, "-m", "orchestrator.cli", "submit", str(path), "--until-decided", "--no-progress",
            "--no-dashboard"]


def _env(ray_tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


@pytest.mark.slow
def test_a_driver_killed_mid_look_resumes_to_the_same_decisions(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="tsud-", dir="/tmp")  # short: Ray's socket paths must fit
    seen: list[psutil.Process] = []
    try:
        whole = subprocess.run(_submit_args(tmp_path, tmp_path / "whole"), env=_env(ray_tmp), capture_output=True,
                               text=True, timeout=600)
        assert whole.returncode == 0, whole.stderr[-3000:]
        store = tmp_path / "cut"
        driver = subprocess.Popen(_submit_args(tmp_path, store), env=_env(ray_tmp), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        first_look = store / "decisions" / "sweep=udreal" / "look-1.json"
        second_look = store / "decisions" / "sweep=udreal" / "look-2.json"
        deadline, mid_look = time.monotonic() + 600, False
        while time.monotonic() < deadline and driver.poll() is None and not second_look.exists():
            seen.extend(psutil.Process(driver.pid).children(recursive=True))
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
            time.sleep(0.2)
        assert mid_look, "the driver finished look 2 before it could be killed mid-look"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert not second_look.exists()
        again = subprocess.run(_submit_args(tmp_path, store), env=_env(ray_tmp), capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _log(ResultsStore(str(store)), "udreal") == _log(ResultsStore(str(tmp_path / "whole")), "udreal")
        # no seed lost or duplicated: one finished row per (method, target, seed), the same rows as unkilled
        from orchestrator.report import finished

        def rows(location):
            df = finished(ResultsStore(str(location)).read("points", "udreal"), all_levels=False)
            keys = df[["method", "target_sparsity", "seed"]].astype(str).agg("/".join, axis=1)
            assert not keys.duplicated().any()
            return dict(zip(keys, df["selected_test_accuracy"]))
        assert rows(store) == rows(tmp_path / "whole")
    finally:
        for p in {p.pid: p for p in seen}.values():  # the killed driver's Ray processes, by id
            try:
                p.kill()
            except psutil.Error:
                pass
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


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
