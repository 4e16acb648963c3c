"""Task names shown in the Ray dashboard: readable, and bounded by the spec's methods and sparsities, not seeds."""
from orchestrator.spec.plan import build_plan
from orchestrator.run.scheduler import task_name
from orchestrator.spec.sweep_spec import parse_spec

SPEC = {
    "name": "names",
    "model": {"name": "mlp"}, "dataset": {"name": "synthetic"},
    "training": {"epochs": 2, "rewind": "1it"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "snip", "sanity_checks": ["shuffle"]}],
    "sparsities": [0.5, 0.9],
}


def names(seeds):
    plan = build_plan(parse_spec({**SPEC, "seeds": seeds}))
    return {task_name(s.label) for s in plan.stages.values()}


def test_task_names_drop_the_seed_so_their_number_does_not_grow_with_seeds():
    assert task_name("ltr s=12 L=7") == "ltr L=7"
    assert task_name("snip+shuffle s=0 sp=0.9000") == "snip+shuffle sp=0.9000"
    assert task_name("dense s=3") == "dense"
    one = names([0])
    assert names(list(range(20))) == one
    assert {"init", "warmup", "dense", "snip sp=0.5000", "snip+shuffle sp=0.9000"} <= one
