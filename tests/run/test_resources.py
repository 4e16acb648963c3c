"""Per-method resources: a method's trials run on actors of its own shape, pooled apart from the others."""
import json
import sys
from pathlib import Path

import pytest
import ray

from orchestrator.run import driver
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store.results_store import ResultsStore

pytestmark = pytest.mark.slow  # trial actors on a real Ray

SPEC = {
    "name": "shapes",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 1, "batch_size": 32, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "random"},
                {"kind": "oneshot", "criterion": "magnitude", "resources": {"cpus_per_trial": 2}}],
    "sparsities": [0.5, 0.9],
    "seeds": [0],
}


class RecordingActor(driver.TrialActorBody):
    """Writes, per stage, the resources Ray assigned to the actor that ran it."""
    marks: str = ""

    def run(self, payload, roles, *parents):
        assigned = ray.get_runtime_context().get_assigned_resources()
        Path(self.marks, payload["key"]).write_text(json.dumps({"method": payload["params"].get("method"),
                                                                 "cpus": assigned.get("CPU"),
                                                                 "actor": ray.get_runtime_context().get_actor_id()}))
        return super().run(payload, roles, *parents)


def test_method_resources_land_on_actors_of_their_shape(ray_cluster, monkeypatch, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(driver, "TrialActor", ray.remote(type("Rec", (RecordingActor,), {"marks": str(tmp_path)})))
    spec = parse_spec(SPEC)
    summary = driver.run_plan(build_plan(spec), spec, ResultsStore(str(tmp_path / "store")), progress=False,
                              echo=lambda *_: None)
    assert summary.failed == 0
    runs = [json.loads(p.read_text()) for p in tmp_path.iterdir() if p.is_file()]
    by_method = {}
    for r in runs:
        by_method.setdefault(r["method"], []).append(r)
    assert {r["cpus"] for r in by_method["magnitude"]} == {2.0}
    assert {r["cpus"] for m, rs in by_method.items() if m != "magnitude" for r in rs} == {1.0}
    assert not {r["actor"] for r in by_method["magnitude"]} & {r["actor"] for r in by_method["random"]}
