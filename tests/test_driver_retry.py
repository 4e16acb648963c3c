"""A trial actor that dies mid-stage is replaced and the stage retried; a stage that keeps killing it fails alone."""
import os
import sys
from pathlib import Path

import pandas as pd
import ray

from orchestrator import driver
from orchestrator.plan import build_plan
from orchestrator.spec import parse_spec
from orchestrator.store import ResultsStore

SPEC = {
    "name": "retry",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 1, "batch_size": 32, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "random"}, {"kind": "oneshot", "criterion": "magnitude"}],
    "sparsities": [0.5],
    "seeds": [0],
    "resources": {"max_retries": 1},
}


class DyingActor(driver.TrialActorBody):
    """Kills its own process on chosen stages: `times` deaths per stage label, counted in marker files."""
    marks: str = ""
    deaths: dict = {}

    def run(self, payload, roles, *parents):
        times = self.deaths.get(payload["params"].get("method"), 0)
        marks = sorted(Path(self.marks).glob(payload["key"] + "*"))
        if len(marks) < times:
            Path(self.marks, f"{payload['key']}-{len(marks)}").touch()
            os._exit(1)
        return super().run(payload, roles, *parents)


def run_with(monkeypatch, tmp_path, deaths):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    body = type("Dying", (DyingActor,), {"marks": str(tmp_path), "deaths": deaths})
    monkeypatch.setattr(driver, "TrialActor", ray.remote(body))
    spec = parse_spec(SPEC)
    store = ResultsStore(str(tmp_path / "store"))
    return driver.run_plan(build_plan(spec), spec, store, progress=False, echo=lambda *_: None), tmp_path / "store"


def test_dead_actor_is_replaced_and_stage_retried(ray_cluster, monkeypatch, tmp_path):
    summary, store = run_with(monkeypatch, tmp_path, {"random": 1})
    assert summary.failed == 0
    points = pd.read_parquet(store / "points")
    assert set(points["status"]) == {"ok"}
    assert "random" in set(points["method"].astype(str))
    assert len(list(tmp_path.glob("*-0"))) == 1  # it did die once


def test_stage_that_kills_every_actor_fails_after_bounded_retries(ray_cluster, monkeypatch, tmp_path):
    summary, store = run_with(monkeypatch, tmp_path, {"random": 5})
    assert summary.failed == 1
    points = pd.read_parquet(store / "points")
    failed = points[points["status"] == "failed"]
    assert list(failed["method"].astype(str)) == ["random"]
    assert "died 2 times" in failed["error"].iloc[0]  # first try + max_retries=1
    assert points.loc[points["method"] == "magnitude", "status"].eq("ok").all()
