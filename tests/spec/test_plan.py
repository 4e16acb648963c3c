import pytest

from orchestrator.spec.plan import build_plan
from workers.methods.imp import ltr_schedule
from orchestrator.spec.sweep_spec import parse_spec

BASE = {
    "name": "t",
    "store": "/tmp/somewhere",
    "model": {"name": "mlp"},
    "dataset": {"name": "synthetic"},
    "training": {"epochs": 4, "rewind": "1ep"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "magnitude", "score_at": "trained"},
                {"kind": "cts", "search": "short"}],
    "sparsities": [0.5, 0.9],
    "seeds": [0, 1],
}


def keys(d):
    return set(build_plan(parse_spec(d)).stages)


def test_ltr_schedule_prunes_at_most_20_percent_and_lands_on_targets():
    levels = ltr_schedule([0.5, 0.9], 0.2)
    sparsities = [s for s, _ in levels]
    assert [s for s, r in levels if r] == [0.5, 0.9]
    assert sparsities[:3] == pytest.approx([0.2, 0.36, 0.488])
    density = 1.0
    for s in sparsities:
        assert 1 - (1 - s) / density <= 0.2 + 1e-9
        density = 1 - s


def test_keys_stable_across_builds():
    assert keys(BASE) == keys(dict(BASE))


@pytest.mark.parametrize("change", [
    {"store": "/elsewhere"},
    {"resources": {"max_concurrent": 7, "cpus_per_trial": 0.5}},
    {"dataset": {"name": "synthetic", "root": "/data/x"}},
])
def test_keys_ignore_location_and_resources(change):
    assert keys({**BASE, **change}) == keys(BASE)


@pytest.mark.parametrize("change", [
    {"training": {"epochs": 4, "rewind": "1ep", "lr": 0.01}},
    {"training": {"epochs": 4, "rewind": "2it"}},
    {"model": {"name": "mlp", "options": {"hidden": [10]}}},
    {"dataset": {"name": "synthetic", "options": {"n_train": 100}}},
    {"prune_output": True},
])
def test_keys_change_with_every_result_changing_field(change):
    a, b = keys(BASE), keys({**BASE, **change})
    assert a != b


def test_prune_output_does_not_change_dense_training_keys():
    a = build_plan(parse_spec(BASE))
    b = build_plan(parse_spec({**BASE, "prune_output": True}))
    dense = lambda p: {k for k, s in p.stages.items() if s.kind in ("init", "warmup", "dense")}
    assert dense(a) == dense(b)
    assert set(a.stages) - dense(a) != set(b.stages) - dense(b)


def test_adding_a_seed_adds_only_that_seeds_stages():
    a = build_plan(parse_spec(BASE))
    b = build_plan(parse_spec({**BASE, "seeds": [0, 1, 2]}))
    new = set(b.stages) - set(a.stages)
    assert set(a.stages) < set(b.stages)
    assert {b.stages[k].seed for k in new} == {2}


def test_adding_a_sparsity_keeps_oneshot_and_cts_points():
    a = build_plan(parse_spec(BASE))
    b = build_plan(parse_spec({**BASE, "sparsities": [0.5, 0.9, 0.95]}))
    kept = {k for k, s in a.stages.items() if s.kind in ("oneshot", "cts", "dense", "warmup", "init")}
    assert kept <= set(b.stages)


def test_plan_structure_and_costs():
    p = build_plan(parse_spec(BASE))
    kinds = [s.kind for s in p.stages.values()]
    assert kinds.count("init") == kinds.count("dense") == 2
    assert kinds.count("oneshot") == kinds.count("cts") == 4
    # topological order: every parent appears before its child
    seen = set()
    for k, s in p.stages.items():
        assert set(s.parents.values()) <= seen
        seen.add(k)
    # LTR standalone cost: the whole chain (levels, dense, warmup, init)
    last = [s for s in p.stages.values() if s.kind == "imp_level" and s.params["target_sparsity"] == 0.9 and s.seed == 0][0]
    kinds_in_cost = [p.stages[a].kind for a in p.ancestors_for_cost(last.key)]
    assert kinds_in_cost.count("imp_level") == len(ltr_schedule([0.5, 0.9], 0.2)) - 1
    assert {"dense", "warmup", "init"} <= set(kinds_in_cost)
    # CTS standalone cost: warm-up only, not the dense run
    cts = [s for s in p.stages.values() if s.kind == "cts"][0]
    assert {p.stages[a].kind for a in p.ancestors_for_cost(cts.key)} == {"warmup", "init"}


def test_sanity_checks_add_stages_with_variant_labels():
    spec = {**BASE, "methods": [{"kind": "oneshot", "criterion": "random", "sanity_checks": ["shuffle", "reinit", "invert"]}]}
    p = build_plan(parse_spec(spec))
    methods = {s.meta.get("method") for s in p.stages.values()}
    assert {"random", "random+shuffle", "random+reinit", "random+invert"} <= methods
    inverted = [s for s in p.stages.values() if s.meta.get("method") == "random+invert"]
    assert all(s.kind == "oneshot" and s.params["invert"] for s in inverted)


@pytest.mark.parametrize("field, value", [("loss_reduction", "sum"), ("precision", "bf16")])
def test_recipe_fields_change_keys_only_when_set_away_from_their_default(field, value):
    default = {"loss_reduction": "mean", "precision": "fp32"}[field]
    spelled_out = {**BASE, "training": {**BASE["training"], field: default}}
    assert keys(spelled_out) == keys(BASE)
    changed = {**BASE, "training": {**BASE["training"], field: value}, "resources": {"gpus_per_trial": 0.5}}
    inits = {k for k, s in build_plan(parse_spec(BASE)).stages.items() if s.kind == "init"}
    assert keys(changed) & keys(BASE) == inits          # θ₀ does not depend on the recipe
    plan = build_plan(parse_spec(changed))
    assert plan.config["training"][field] == value      # the workers get it


def test_cts_options_change_cts_keys_only():
    variants = [keys({**BASE, "methods": [{"kind": "cts", "search": "short", **o}]})
                for o in ({}, {"search_bn": "running"}, {"search_at": "init"})]
    shared = {k for k, s in build_plan(parse_spec(BASE)).stages.items() if s.kind in ("init", "warmup", "dense")}
    assert all(shared <= v for v in variants)
    assert not (variants[0] - shared) & (variants[1] - shared)
    assert not (variants[0] - shared) & (variants[2] - shared)


def test_cts_at_init_retrains_from_init_and_costs_no_warmup():
    spec = {**BASE, "methods": [{"kind": "cts", "search": "short", "search_at": "init",
                                 "sanity_checks": ["shuffle", "invert"]}]}
    p = build_plan(parse_spec(spec))
    stages = [s for s in p.stages.values() if s.seed == 0 and s.params.get("target_sparsity") == 0.5]
    cts = next(s for s in stages if s.kind == "cts" and not s.params["invert"])
    assert cts.meta["method"] == "cts_reverse_kl[search=short,search_at=init]"
    assert cts.params["settings"]["search_at"] == "init"
    assert set(cts.parents) == {"init", "dense"} and cts.inputs == ("init",)
    assert {p.stages[a].kind for a in p.ancestors_for_cost(cts.key)} == {"init"}
    at_rewind = next(s for s in build_plan(parse_spec(BASE)).stages.values() if s.kind == "cts")
    assert cts.work == pytest.approx(at_rewind.work + 1.0)      # + the warm-up epoch it retrains through
    shuffle = next(s for s in stages if s.kind == "ablation")
    assert shuffle.params["retrain_from"] == "init" and shuffle.inputs == ("source", "init")
    inverted = next(s for s in stages if s.kind == "cts" and s.params["invert"])
    assert inverted.inputs == ("init",) and inverted.meta["method"] == "cts_reverse_kl[search=short,search_at=init]+invert"
