"""The gradual (GMP, GraNet) and BiP method packages: configuration, planning, and their runners run through
`run_stage` on payloads the planner built."""
import dataclasses
import subprocess
import sys

import pytest
import torch

from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import SpecError, parse_spec
from workers import masks
from workers.data.dataset import dataset_from_config
from workers.methods import KINDS, RUNNERS
from workers.methods.bip import BiPMethod
from workers.methods.bip.bilevel import BiPConfig
from workers.methods.gradual import GMPMethod, GraNetMethod
from workers.stages.dispatch import run_stage
from workers.stages.kit import model_with
from workers.training.loop import evaluate

SPEC = {
    "name": "t",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 160, "n_test": 64}},
    # 144 training examples after the validation split: 5 iterations an epoch, T = 20, k = 5.
    "training": {"epochs": 4, "batch_size": 32, "lr": 0.05, "rewind": "1ep"},
    "methods": [{"kind": "gmp"}],
    "sparsities": [0.8],
    "seeds": [0],
}
IPE, T, K = 5, 20, 5


def plan_of(methods, **over):
    return build_plan(parse_spec({**SPEC, "methods": methods, **over}))


def points(plan, kind=None):
    return [s for s in plan.stages.values() if s.kind not in ("init", "warmup", "dense", "ablation")
            and (kind is None or s.kind == kind)]


# ------------------------------------------------------------------ configuration and planning

def test_the_families_are_registered_with_their_runners():
    assert {"gmp", "granet", "bip"} <= set(KINDS)
    assert {"imp_level", "oneshot", "cts", "gradual", "bip"} <= set(RUNNERS)


def test_every_runner_imports_its_family_worker_code_by_an_import_statement_when_it_runs():
    """A reader (or a tool) follows a stage kind to its code by plain imports: each runner is a function of its
    family's package whose body imports the family's `run` module; importing the registry imports no runner."""
    for kind, run in RUNNERS.items():
        family = run.__module__
        assert family.startswith("workers.methods.") and f"{family}.run" in run.__code__.co_names, kind
    code = ("import sys\nimport workers.methods\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.endswith('.run')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("entry, label", [
    ({"kind": "gmp"}, "gmp"),
    ({"kind": "gmp", "end_fraction": 0.5, "every": 3}, "gmp[end_fraction=0.5,every=3]"),
    ({"kind": "granet"}, "granet"),
    ({"kind": "granet", "initial_sparsity": 0.5}, "granet[initial_sparsity=0.5]"),
    ({"kind": "bip"}, "bip"),
    ({"kind": "bip", "finetune": True, "implicit_gradient": "code"}, "bip[implicit_gradient=code,finetune=True]"),
])
def test_labels_follow_the_naming_rule(entry, label):
    plan = plan_of([entry])
    assert {s.meta["method"] for s in points(plan)} == {label}
    assert all(s.label == f"{label} s=0 sp=0.8000" for s in points(plan))


def test_gmp_and_granet_train_from_the_warmup_and_cost_warmup_plus_their_run():
    plan = plan_of([{"kind": "gmp"}, {"kind": "granet", "initial_sparsity": 0.5}], sparsities=[0.5, 0.9])
    gradual = points(plan, "gradual")
    assert len(gradual) == 4 and {s.params["target_sparsity"] for s in gradual} == {0.5, 0.9}
    for s in gradual:
        assert set(s.parents) == {"warmup", "dense"} and s.inputs == ("warmup",)
        assert {plan.stages[a].kind for a in plan.ancestors_for_cost(s.key)} == {"warmup", "init"}
        assert s.work == pytest.approx(3.0)     # epochs k -> T
        assert s.params["settings"]["kind"] in ("gmp", "granet")


def test_bip_starts_from_the_dense_weights_and_costs_dense_plus_its_passes():
    plan = plan_of([{"kind": "bip"}, {"kind": "bip", "finetune": True}, {"kind": "bip", "lower_steps": 3}])
    by_label = {s.meta["method"]: s for s in points(plan, "bip")}
    for s in by_label.values():
        assert set(s.parents) == {"dense"} and s.inputs == ("dense",)
        assert {plan.stages[a].kind for a in plan.ancestors_for_cost(s.key)} == {"dense", "warmup", "init"}
    # 2 BiP epochs (half of 4) of one weight pass and one score pass; fine-tuning adds the k -> T retraining.
    assert by_label["bip"].work == pytest.approx(2 * 2)
    assert by_label["bip[finetune=True]"].work == pytest.approx(2 * 2 + 3)
    assert by_label["bip[lower_steps=3]"].work == pytest.approx(2 * 4)


def test_bip_epochs_scale_the_authors_100_of_200():
    bip = BiPMethod(kind="bip")
    assert [bip.search_epochs(e) for e in (200, 5, 3, 1)] == [100, 3, 2, 1]
    assert BiPMethod(kind="bip", epoch_fraction=0.25).search_epochs(160) == 40


# A value away from the default for every knob of every config: a knob added without a line here fails the test.
VARIED = {
    "gmp": {"start_fraction": 0.2, "end_fraction": 0.5, "every": 2},
    "granet": {"start_fraction": 0.2, "end_fraction": 0.5, "every": 2, "initial_sparsity": 0.5,
               "prune_rate": 0.3, "prune_rate_min": 0.01},
    "bip": {"epoch_fraction": 1.0, "lr": 0.05, "momentum": 0.5, "weight_decay": 5e-4, "mask_lr": 0.2,
            "mask_momentum": 0.0, "mask_weight_decay": 0.0, "ig_scale": 1e-3, "implicit_gradient": "code",
            "lower_steps": 2, "finetune": True},
}
CONFIG = {"gmp": GMPMethod, "granet": GraNetMethod, "bip": BiPMethod}


@pytest.mark.parametrize("kind", sorted(VARIED))
def test_every_knob_changes_the_points_keys_and_label_but_not_the_shared_stages(kind):
    knobs = set(CONFIG[kind].model_fields) - {"kind", *CONFIG[kind].UNHASHED}
    extra = {"granet": {"initial_distribution"}}.get(kind, set())    # varied below: it needs a sparse start
    assert set(VARIED[kind]) | extra == knobs
    base = plan_of([{"kind": kind}])
    shared = {k for k, s in base.stages.items() if s.kind in ("init", "warmup", "dense")}
    variants = [{name: value} for name, value in VARIED[kind].items()]
    if kind == "granet":
        variants.append({"initial_sparsity": 0.5, "initial_distribution": "uniform"})
    seen = [set(base.stages) - shared]
    for variant in variants:
        plan = plan_of([{"kind": kind, **variant}])
        assert shared <= set(plan.stages)
        mine = set(plan.stages) - shared
        assert all(not (mine & other) for other in seen), variant
        seen.append(mine)
        assert all(f"{name}=" in s.meta["method"] for s in points(plan) for name in variant)


def test_resources_and_sanity_checks_change_no_point_key():
    base = {k for k, s in plan_of([{"kind": "bip"}]).stages.items() if s.kind == "bip"}
    other = plan_of([{"kind": "bip", "resources": {"cpus_per_trial": 2}, "sanity_checks": ["shuffle"]}])
    assert {k for k, s in other.stages.items() if s.kind == "bip"} == base


@pytest.mark.parametrize("kind", ["gmp", "granet", "bip"])
def test_shuffle_and_reinit_retrain_the_final_mask_from_the_warmup_and_invert_is_refused(kind):
    plan = plan_of([{"kind": kind, "sanity_checks": ["shuffle", "reinit"]}])
    source = points(plan)[0]
    ablations = [s for s in plan.stages.values() if s.kind == "ablation"]
    assert sorted(s.params["ablation"] for s in ablations) == ["reinit", "shuffle"]
    assert {s.meta["method"] for s in ablations} == {f"{kind}+shuffle", f"{kind}+reinit"}
    for s in ablations:
        assert s.parents["source"] == source.key and s.inputs == ("source", "warmup")
    with pytest.raises(SpecError, match=r"methods\.0.*invert not available for this method; it supports shuffle, reinit"):
        plan_of([{"kind": kind, "sanity_checks": ["invert"]}])


@pytest.mark.parametrize("entry, message", [
    ({"kind": "gmp", "start_fraction": 0.7, "end_fraction": 0.6}, "start_fraction 0.7 must be below end_fraction 0.6"),
    ({"kind": "gmp", "every": 0}, "every"),
    ({"kind": "gmp", "end_fraction": 1.5}, "end_fraction"),
    ({"kind": "granet", "prune_rate": 0.1, "prune_rate_min": 0.2}, "prune_rate_min 0.2 is above prune_rate 0.1"),
    ({"kind": "granet", "initial_distribution": "uniform"}, "initial_distribution applies to a sparse start only"),
    ({"kind": "granet", "initial_sparsity": 1.0}, "initial_sparsity"),
    ({"kind": "granet", "initial_distribution": "er"}, "initial_distribution"),
    ({"kind": "bip", "epoch_fraction": 0}, "epoch_fraction"),
    ({"kind": "bip", "momentum": 1.0}, "momentum"),
    ({"kind": "bip", "implicit_gradient": "hessian"}, "implicit_gradient"),
    ({"kind": "bip", "lower_steps": 0}, "lower_steps"),
    ({"kind": "bip", "search": "long"}, "search"),
])
def test_bad_knobs_are_one_line_errors_naming_the_field(entry, message):
    with pytest.raises(SpecError, match=message) as err:
        parse_spec({**SPEC, "methods": [entry]})
    assert "methods.0" in str(err.value)


def test_bip_config_takes_every_search_knob_from_the_method_with_the_same_defaults():
    method = BiPMethod(kind="bip")
    run_fields = {f.name: f.default for f in dataclasses.fields(BiPConfig)}
    knobs = {name: default for name, default in run_fields.items() if name not in ("epochs", "batch_size")}
    assert knobs == {name: getattr(method, name) for name in knobs}
    assert set(knobs) <= set(BiPMethod.model_fields)


def test_granet_starts_no_sparser_than_its_target():
    granet = GraNetMethod(kind="granet", initial_sparsity=0.5)
    assert granet.start_sparsity(0.9) == 0.5 and granet.start_sparsity(0.3) == 0.3
    assert GMPMethod(kind="gmp").start_sparsity(0.9) == 0.0


# ------------------------------------------------------------------ the runners

def run_plan(plan):
    """Every stage of `plan` in order, each from the payload a worker would get; results by key."""
    data = dataset_from_config(plan.config["dataset"])
    out = {}
    for key, stage in plan.stages.items():
        payload = stage.payload(plan.config)
        out[key] = run_stage(payload, {r: out[k].outputs for r, k in payload["inputs"].items()}, data)
    return data, out


METHODS = [{"kind": "gmp", "sanity_checks": ["shuffle"]}, {"kind": "granet"},
           {"kind": "granet", "initial_sparsity": 0.5}, {"kind": "bip"}, {"kind": "bip", "finetune": True}]


@pytest.fixture(scope="module")
def ran():
    plan = plan_of(METHODS, sparsities=[0.3, 0.8])
    data, results = run_plan(plan)
    return plan, data, results


def by_method(ran, method, sparsity=0.8):
    plan, _, results = ran
    stage = next(s for s in plan.stages.values()
                 if s.meta.get("method") == method and s.params.get("target_sparsity") == sparsity)
    return stage, results[stage.key]


@pytest.mark.parametrize("method", ["gmp", "granet", "granet[initial_sparsity=0.5]", "bip", "bip[finetune=True]"])
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_every_result_has_exactly_the_target_sparsity_and_zeros_where_pruned(ran, method, sparsity):
    _, result = by_method(ran, method, sparsity)
    mask, weights = result.outputs["mask"], result.outputs["weights"]
    total = masks.count_total(mask)
    assert total == 40 * 16
    assert masks.count_kept(mask) == masks.keep_count(total, 1 - sparsity)
    assert result.point["sparsity"] == pytest.approx(1 - masks.keep_count(total, 1 - sparsity) / total)
    for name, m in mask.items():
        assert (weights[name][~m] == 0).all()


def test_gmp_and_granet_report_their_schedule_and_select_only_at_the_final_sparsity(ran):
    for method in ("gmp", "granet", "granet[initial_sparsity=0.5]"):
        _, result = by_method(ran, method)
        m = result.point["measurements"]
        # every = max(1, round(20 · 1000/62560)) = 1; start max(k, 0) = 5; last step min(floor(0.6875 · 20), 19) = 13
        assert (m["prune_start"], m["prune_every"], m["prune_end"], m["pruning_steps"]) == (K, 1, 13, 8)
        evaluated = [r for r in result.curve if "test_accuracy" in r]
        assert [r["iteration"] for r in evaluated] == [10, 15, 20]
        assert result.point["selected_epoch"] * IPE >= m["prune_end"] + 1
        assert result.point["selected_epoch"] in (3, 4)
    granet = by_method(ran, "granet")[1].point["measurements"]
    # regrowth at every grid step from k to T − 1, past the end of GMP
    assert granet["regrowth_steps"] == T - K and granet["regrown"] > granet["regrown_after_prune_end"] > 0
    assert by_method(ran, "granet[initial_sparsity=0.5]")[1].point["measurements"]["initial_sparsity"] == 0.5
    assert by_method(ran, "granet[initial_sparsity=0.5]", 0.3)[1].point["measurements"]["initial_sparsity"] == 0.3


def test_selection_never_picks_a_denser_network_even_when_it_validates_better():
    # 99 % sparsity, pruned from k to 0.9·T: the evaluation at iteration 10 sees a denser network than the target.
    plan = plan_of([{"kind": "gmp", "end_fraction": 0.9}], sparsities=[0.99])
    _, results = run_plan(plan)
    result = results[points(plan)[0].key]
    assert result.point["measurements"]["prune_end"] == 18
    evaluated = {r["iteration"]: r for r in result.curve if "val_accuracy" in r}
    assert set(evaluated) == {10, 15, 20}
    assert evaluated[10]["val_accuracy"] > evaluated[20]["val_accuracy"]   # the denser network validates better
    # Only the evaluation after the last pruning step (iteration 18) may be selected: the end of training.
    assert result.point["selected_epoch"] == 4
    assert result.point["val_accuracy"] == evaluated[20]["val_accuracy"]
    assert result.point["selected_test_accuracy"] == evaluated[20]["test_accuracy"] == result.point["test_accuracy"]


def test_selection_starts_after_the_iteration_of_the_last_pruning_step(monkeypatch):
    # The step with index prune_end prunes before its update: an evaluation after c iterations sees the final
    # mask exactly when c >= prune_end + 1. Here prune_end = 15, so the evaluation at iteration 15 is not eligible.
    import workers.methods.gradual.run as gradual_run

    seen = {}
    real = gradual_run.retrain

    def spy(*args, **options):
        seen.update(options)
        return real(*args, **options)

    monkeypatch.setattr(gradual_run, "retrain", spy)
    plan = plan_of([{"kind": "gmp", "end_fraction": 0.75}], sparsities=[0.99])
    _, results = run_plan(plan)
    result = results[points(plan)[0].key]
    assert result.point["measurements"]["prune_end"] == 15 and seen["select_from"] == 16
    assert result.point["selected_epoch"] == 4


def test_bip_without_finetuning_evaluates_the_bip_network_as_it_is(ran):
    plan, data, _ = ran
    stage, result = by_method(ran, "bip")
    search = [r for r in result.curve if r["phase"] == "search"]
    assert [r["epoch"] for r in search] == [1, 2] and [r["iteration"] for r in search] == [5, 10]
    assert not [r for r in result.curve if r["phase"] == "train"]
    assert result.point["selected_epoch"] == 4 and result.point["retrain_seconds"] < result.point["search_seconds"]
    m = result.point["measurements"]
    assert m["bip_epochs"] == 2 and m["steps"] == 10 and m["lower_steps"] == 10
    assert m["kept"] == masks.count_kept(result.outputs["mask"]) and 0 <= m["overlap_with_initial"] <= 1
    # the weights are m ⊙ θ of the search, moved away from the dense weights, and the row's accuracy is theirs
    dense_weights = ran[2][stage.parents["dense"]].outputs["weights"]
    kept = result.outputs["mask"]
    assert any(not torch.equal(result.outputs["weights"][n][kept[n]], dense_weights[n][kept[n]]) for n in kept)
    model = model_with(stage.payload(plan.config), data, result.outputs["weights"])
    assert evaluate(model, data.x_test, data.y_test)[0] == result.point["test_accuracy"]


def test_bip_finetuning_retrains_the_same_mask_from_the_rewind_point(ran):
    _, plain = by_method(ran, "bip")
    _, tuned = by_method(ran, "bip[finetune=True]")
    assert all(torch.equal(plain.outputs["mask"][n], m) for n, m in tuned.outputs["mask"].items())
    trained = [r for r in tuned.curve if r["phase"] == "train"]
    assert [r["iteration"] for r in trained] == [10, 15, 20]
    assert any(not torch.equal(plain.outputs["weights"][n], w) for n, w in tuned.outputs["weights"].items())


def test_the_shuffle_ablation_of_gmp_retrains_its_final_mask_shuffled(ran):
    plan, _, results = ran
    source, result = by_method(ran, "gmp")
    ablation = next(s for s in plan.stages.values() if s.kind == "ablation" and s.parents["source"] == source.key)
    shuffled = results[ablation.key].outputs["mask"]
    final = result.outputs["mask"]
    assert {n: int(m.sum()) for n, m in shuffled.items()} == {n: int(m.sum()) for n, m in final.items()}
    assert any(not torch.equal(shuffled[n], final[n]) for n in final)


@pytest.mark.parametrize("method", ["gmp", "granet[initial_sparsity=0.5]", "bip[finetune=True]"])
def test_the_same_stage_twice_gives_identical_outputs(ran, method):
    plan, data, results = ran
    stage, first = by_method(ran, method)
    payload = stage.payload(plan.config)
    again = run_stage(payload, {r: results[k].outputs for r, k in payload["inputs"].items()}, data)
    for part in ("weights", "mask"):
        assert all(torch.equal(first.outputs[part][n], again.outputs[part][n]) for n in first.outputs[part])
    same = lambda point: {k: v for k, v in point.items() if not k.endswith("_seconds")}  # noqa: E731
    assert same(again.point) == same(first.point)
    assert again.curve == first.curve


@pytest.mark.parametrize("method", ["gmp", "bip"])
def test_an_inverted_payload_is_refused(ran, method):
    plan, data, results = ran
    stage, _ = by_method(ran, method)
    payload = stage.payload(plan.config)
    payload["params"]["invert"] = True
    with pytest.raises(ValueError, match="cannot invert its mask"):
        run_stage(payload, {r: results[k].outputs for r, k in payload["inputs"].items()}, data)


def test_bip_reports_the_validation_accuracy_of_each_search_epoch_without_changing_the_search(ran):
    """A tuner can stop BiP on its search epochs: each carries the BiP network's validation accuracy. Measuring it
    changes nothing: the same stage on the same training set without a validation split gives identical outputs."""
    import dataclasses

    plan, data, _ = ran
    stage, result = by_method(ran, "bip")
    search = [row for row in result.curve if row["phase"] == "search"]
    assert search and all(0 <= row["val_accuracy"] <= 1 for row in search)
    inputs = {r: ran[2][k].outputs for r, k in stage.payload(plan.config)["inputs"].items()}
    blind = run_stage(stage.payload(plan.config), inputs, dataclasses.replace(data, x_val=None, y_val=None))
    assert all("val_accuracy" not in row for row in blind.curve if row["phase"] == "search")
    for name, weight in result.outputs["weights"].items():
        assert torch.equal(weight, blind.outputs["weights"][name]), name
