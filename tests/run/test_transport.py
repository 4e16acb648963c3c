"""What travels through Ray per stage: a trial actor is not sent a parent output it holds, a parent used in two
roles travels once, an output no stage of the run takes is not returned, and none of it changes a result, even
when a stage changes its inputs in place."""
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch

from orchestrator.run import driver
from orchestrator.run.trial_actor import ARTIFACT, HELD
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store import artifacts
from orchestrator.store.results_store import ResultsStore

pytestmark = pytest.mark.slow  # trial actors on a real Ray

SPEC = {
    "name": "transport",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 1, "batch_size": 32, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.7, 0.9],
    "seeds": [0],
    "resources": {"max_concurrent": 1},  # one actor: what it holds is known
}


class Clobbering(driver.TrialActorBody):
    """Records, per stage, how each parent output arrived and whether the output was returned; then zeroes the
    inputs it was handed, as a stage that changes its inputs in place would, after giving the stage a copy."""
    marks: str = ""
    holds: bool = True

    def _inputs(self, payload, roles, parents):
        inputs = super()._inputs(payload, roles, parents)
        given = {role: {"weights": {k: v.clone() for k, v in out["weights"].items()}} for role, out in inputs.items()}
        for out in inputs.values():
            for t in out["weights"].values():
                t.zero_()
        return given

    def _hold(self, key, outputs):
        if self.holds:
            super()._hold(key, outputs)

    def run(self, payload, roles, *parents):
        arrived = ["held" if isinstance(p, str) and p.startswith(HELD) else
                   "artifact" if isinstance(p, str) and p.startswith(ARTIFACT) else "object" for p in parents]
        meta, outputs = super().run(payload, roles, *parents)
        Path(self.marks, payload["key"]).write_text(json.dumps({"kind": payload["kind"], "arrived": arrived,
                                                                "returned": outputs is not None}))
        return meta, outputs


def run(monkeypatch, tmp_path: Path, holds: bool):
    marks = tmp_path / ("holding" if holds else "sent")
    marks.mkdir()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(driver, "TrialActor", ray.remote(type("Rec", (Clobbering,), {"marks": str(marks),
                                                                                     "holds": holds})))
    spec = parse_spec(SPEC)
    plan = build_plan(spec)
    store = ResultsStore(str(tmp_path / f"store-{holds}"))
    summary = driver.run_plan(plan, spec, store, progress=False, echo=lambda *_: None)
    assert summary.failed == 0 and summary.ran == len(plan.stages)
    calls = {p.name: json.loads(p.read_text()) for p in marks.iterdir()}
    return plan, store, calls


def test_held_outputs_are_not_sent_again_unused_outputs_not_returned_and_results_unchanged(ray_cluster, monkeypatch,
                                                                                           tmp_path):
    plan, held_store, held = run(monkeypatch, tmp_path, holds=True)
    _, sent_store, sent = run(monkeypatch, tmp_path, holds=False)
    children = plan.children()
    # One actor ran every stage and was told to keep each output a later stage takes: no parent output came
    # through Ray again, although the one-shot stages take the warm-up weights in two roles.
    assert {a for c in held.values() for a in c["arrived"]} == {"held"}
    assert sorted(len(c["arrived"]) for c in held.values() if c["kind"] == "oneshot") == [2, 2, 2]
    # Without holding, each parent output came once per stage, its second role as a reference to the first.
    assert all(c["arrived"] == ["object", "held"] for c in sent.values() if c["kind"] == "oneshot")
    # Only outputs that a stage of the run takes were returned through Ray.
    for calls in (held, sent):
        assert {k: c["returned"] for k, c in calls.items()} == {k: bool(children[k]) for k in plan.stages}

    # The same results either way, although every stage zeroed the inputs it was handed: held outputs are
    # handed as copies.
    def points(store):
        return store.read("points", "transport").sort_values("point_key").reset_index(drop=True)
    a, b = points(held_store), points(sent_store)
    for column in ("point_key", "status", "test_accuracy", "val_accuracy", "selected_test_accuracy",
                   "sparsity", "test_loss"):
        pd.testing.assert_series_equal(a[column], b[column])
    for key in plan.stages:
        x, y = artifacts.load(held_store.location, key), artifacts.load(sent_store.location, key)
        assert x.keys() == y.keys()
        for part in x:
            assert all(torch.equal(x[part][n], y[part][n]) for n in x[part])
