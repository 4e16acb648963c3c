import pytest
import torch

from workers import masks
from workers.data.dataset import load_dataset
from workers.models import build_model
from workers.methods.oneshot import scoring as scores
from workers.stages.dispatch import run_stage
from workers.stages.kit import model_with
from workers.training.loop import Diverged, Recipe, epoch_order, rewind_to_iterations, train

TRAINING = {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False,
            "weight_decay": 0.01, "milestones": [1], "gamma": 0.1, "rewind": "3it", "grad_clip": None, "eval_every": 1}


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=128, n_test=64)


MLP = {"name": "mlp", "options": {"hidden": [16]}}
# An lr far below any weight's rounding step (a recipe refuses 0): training with it moves no weight.
FROZEN_LR = 1e-30
CTS = {"settings": {"kind": "cts", "search": 2, "lr": 0.1}, "target_sparsity": 0.8}
# The method each stage kind runs by default in these tests (a stage carries its method's settings).
DEFAULT_SETTINGS = {"imp_level": {"kind": "ltr"}, "cts": {"kind": "cts"}, "oneshot": {"kind": "oneshot"}}


def stage(kind, seed=0, training=None, model=None, settings=None, **params):
    if kind in DEFAULT_SETTINGS or settings is not None:
        from workers.methods import config_from
        params["settings"] = config_from({**DEFAULT_SETTINGS.get(kind, {}), **(settings or {}),
                                          **params.pop("settings", {})}).settings()
    return {"kind": kind, "key": f"{kind}-test", "seed": seed, "label": kind,
            "params": {"method": kind, "invert": False, **params},
            "config": {"model": model or MLP, "dataset": {"name": "synthetic"},
                       "training": training or TRAINING, "prune_output": None}}


def chain(data, seed=0, training=None, model=None):
    init = run_stage(stage("init", seed, training, model), {}, data).outputs
    warm = run_stage(stage("warmup", seed, training, model), {"init": init}, data).outputs
    dense = run_stage(stage("dense", seed, training, model), {"warmup": warm}, data)
    return init, warm, dense


def test_rewind_parsing():
    assert rewind_to_iterations("500it", 7) == 500
    assert rewind_to_iterations("9ep", 4) == 36
    with pytest.raises(ValueError):
        rewind_to_iterations("9 epochs", 4)


def test_lr_schedule_by_iteration():
    r = Recipe(epochs=10, lr=1.0, milestones=(2, 5), gamma=0.1)
    assert [r.lr_at(i, 3) for i in (0, 5, 6, 14, 15)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_data_order_is_a_function_of_seed_and_epoch():
    assert torch.equal(epoch_order(0, 3, 50), epoch_order(0, 3, 50))
    assert not torch.equal(epoch_order(0, 3, 50), epoch_order(1, 3, 50))
    assert not torch.equal(epoch_order(0, 3, 50), epoch_order(0, 4, 50))


def test_pruned_weights_stay_exactly_zero_through_momentum_and_weight_decay(data):
    _, warm, _ = chain(data)
    model = model_with(stage("dense"), data, warm["weights"])
    names = masks.prunable_names(model)
    w = masks.prunable_params(model, names)
    mask = masks.global_topk({n: torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for n, p in w.items()},
                             masks.keep_count(sum(p.numel() for p in w.values()), 0.3), torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in w.items()}
    train(model, data, Recipe.from_dict(TRAINING), 0, 0, 8, mask=mask)
    for n, p in w.items():
        assert (p[~mask[n]] == 0).all()
        assert not torch.equal(p[mask[n]], before[n][mask[n]])


def test_rewinding_restores_the_rewind_weights_bit_for_bit(data):
    # Frozen retraining changes nothing, so the level's output is exactly theta_k * mask.
    frozen = {**TRAINING, "lr": FROZEN_LR}
    _, warm, dense = chain(data)
    level = run_stage(stage("imp_level", training=frozen, target_sparsity=0.5, invert=False),
                      {"previous": dense.outputs, "warmup": warm}, data)
    mask = level.outputs["mask"]
    for name, value in level.outputs["weights"].items():
        expected = warm["weights"][name] * mask[name] if name in mask else warm["weights"][name]
        assert torch.equal(value, expected), name


def test_warmup_moves_weights_and_same_seed_is_reproducible(data):
    init, warm, dense = chain(data)
    init2, warm2, dense2 = chain(data)
    assert any(not torch.equal(init["weights"][k], warm["weights"][k]) for k in init["weights"])
    for k in dense.outputs["weights"]:
        assert torch.equal(dense.outputs["weights"][k], dense2.outputs["weights"][k])
    assert dense.point["test_accuracy"] == dense2.point["test_accuracy"]
    _, _, other = chain(data, seed=1)
    assert any(not torch.equal(dense.outputs["weights"][k], other.outputs["weights"][k]) for k in init["weights"])


def test_imp_levels_prune_survivors_only_with_exact_counts(data):
    _, warm, dense = chain(data)
    l1 = run_stage(stage("imp_level", target_sparsity=0.2, invert=False), {"previous": dense.outputs, "warmup": warm}, data)
    l2 = run_stage(stage("imp_level", target_sparsity=0.36, invert=False), {"previous": l1.outputs, "warmup": warm}, data)
    m1, m2 = l1.outputs["mask"], l2.outputs["mask"]
    total = masks.count_total(m1)
    assert masks.count_kept(m1) == masks.keep_count(total, 0.8)
    assert masks.count_kept(m2) == masks.keep_count(total, 0.64)
    assert all(not (m2[n] & ~m1[n]).any() for n in m1)  # nested
    assert l2.point["sparsity"] == pytest.approx(1 - masks.keep_count(total, 0.64) / total)
    # level 1 keeps the largest trained magnitudes of the dense weights
    w = dense.outputs["weights"]
    kept_min = min(w[n][m1[n]].abs().min() for n in m1)
    pruned_max = max(w[n][~m1[n]].abs().max() for n in m1)
    assert kept_min >= pruned_max


def test_ablations_keep_counts_and_redraw_weights(data):
    _, warm, dense = chain(data)
    level = run_stage(stage("imp_level", target_sparsity=0.5, invert=False), {"previous": dense.outputs, "warmup": warm}, data)
    shuffled = run_stage(stage("ablation", ablation="shuffle", target_sparsity=0.5), {"source": level.outputs, "warmup": warm}, data)
    for n, m in level.outputs["mask"].items():
        assert int(shuffled.outputs["mask"][n].sum()) == int(m.sum())
    assert any(not torch.equal(shuffled.outputs["mask"][n], m) for n, m in level.outputs["mask"].items())
    frozen = {**TRAINING, "lr": FROZEN_LR}
    reinit = run_stage(stage("ablation", training=frozen, ablation="reinit", target_sparsity=0.5),
                       {"source": level.outputs, "warmup": warm}, data)
    mask = level.outputs["mask"]
    assert all(torch.equal(reinit.outputs["mask"][n], mask[n]) for n in mask)
    for n in mask:  # frozen retraining: the output is the fresh draw, masked
        fresh = reinit.outputs["weights"][n]
        assert torch.equal(fresh, fresh * mask[n])
        assert not torch.equal(fresh, warm["weights"][n] * mask[n])
    assert reinit.point["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_cts_stage_records_search_curve_and_exact_mask(data):
    _, warm, _ = chain(data)
    result = run_stage(stage("cts", **CTS), {"warmup": warm}, data)
    mask = result.outputs["mask"]
    assert masks.count_kept(mask) == masks.keep_count(masks.count_total(mask), 0.2)
    search = [r for r in result.curve if r["phase"] == "search"]
    assert [r["epoch"] for r in search] == [1, 2]
    assert all(0 < r["expected_kept_fraction"] < 1 for r in search)
    assert result.point["search_seconds"] > 0 and result.point["retrain_seconds"] > 0
    # what the search ended at reaches the result row
    ended = result.point["measurements"]
    assert ended["steps"] == 2 * 4 and ended["lambda"] >= 0 and 0 < ended["expected_kept_fraction"] < 1


def test_cts_searched_at_init_retrains_from_init_for_the_whole_training(data):
    training = {**TRAINING, "rewind": "1ep"}
    init, warm, _ = chain(data, training=training)
    at_rewind = run_stage(stage("cts", training=training, **CTS), {"warmup": warm}, data)
    at_init = run_stage(stage("cts", training=training, **{**CTS, "settings": {**CTS["settings"], "search_at": "init"}}),
                        {"init": init}, data)
    epochs = lambda r: [row["epoch"] for row in r.curve if row["phase"] == "train"]
    assert epochs(at_init) == [1, 2] and epochs(at_rewind) == [2]     # iterations 0..T vs k..T
    assert any(not torch.equal(at_init.outputs["mask"][n], m) for n, m in at_rewind.outputs["mask"].items())
    # its sanity checks retrain from init too
    shuffled = run_stage(stage("ablation", training=training, ablation="shuffle", target_sparsity=0.8,
                               retrain_from="init"), {"source": at_init.outputs, "init": init}, data)
    assert epochs(shuffled) == [1, 2]


def test_lr_1000_diverges_and_names_the_epoch(data):
    model = model_with(stage("dense"), data, chain(data)[0]["weights"])
    recipe = Recipe.from_dict({**TRAINING, "lr": 1000.0, "milestones": []})
    with pytest.raises(Diverged, match=r"training loss is not finite in epoch [12] \(iteration [48]\)"):
        train(model, data, recipe, 0, 0, 8)


def one_step(data, weights, reduction, lr):
    """(gradient, weight change, curve loss) of one plain-SGD step on the first batch of 32."""
    model = model_with(stage("dense"), data, weights)
    recipe = Recipe.from_dict({**TRAINING, "lr": lr, "momentum": 0.0, "weight_decay": 0.0, "milestones": [],
                               "loss_reduction": reduction})
    result = train(model, data, recipe, 0, 0, 1)
    params = dict(model.named_parameters())
    return ({n: p.grad.clone() for n, p in params.items()}, {n: p.detach() - weights[n] for n, p in params.items()},
            result.curve[-1]["train_loss"])


def test_summed_loss_gives_the_means_gradient_times_the_batch_size(data):
    init = chain(data)[0]["weights"]
    mean_grad, mean_step, mean_loss = one_step(data, init, "mean", 0.32)
    sum_grad, sum_step, sum_loss = one_step(data, init, "sum", 0.01)
    for n in mean_grad:
        assert mean_grad[n].abs().max() > 0
        torch.testing.assert_close(sum_grad[n], 32 * mean_grad[n])
        torch.testing.assert_close(sum_step[n], mean_step[n])   # so lr 0.01 summed = lr 0.32 averaged
    assert sum_loss == pytest.approx(mean_loss)                 # the curve shows the per-example mean either way
    with pytest.raises(ValueError, match=r"loss_reduction\s+Input should be 'mean' or 'sum'"):
        Recipe.from_dict({**TRAINING, "loss_reduction": "max"})


def test_a_recipe_key_that_training_does_not_know_is_an_error_not_dropped():
    with pytest.raises(ValueError, match=r"label_smoothing\s+Extra inputs are not permitted"):
        Recipe.from_dict({**TRAINING, "label_smoothing": 0.1})


def test_the_specs_training_field_is_the_recipe_training_receives():
    from orchestrator.spec.plan import build_plan
    from orchestrator.spec.sweep_spec import parse_spec

    spec = parse_spec({"name": "r", "model": {"name": "mlp"}, "dataset": {"name": "synthetic"},
                       "training": {"epochs": 3, "milestones": [2], "rewind": "1ep"}, "methods": [{"kind": "ltr"}],
                       "sparsities": [0.5], "seeds": [0]})
    assert isinstance(spec.training, Recipe)
    assert Recipe.from_dict(build_plan(spec).config["training"]) == spec.training


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_refuses_to_run_without_cuda(data, precision):
    model = model_with(stage("dense"), data, chain(data)[0]["weights"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = Recipe.from_dict({**TRAINING, "precision": precision})
    with pytest.raises(RuntimeError, match=f"training.precision {precision} needs a CUDA device, but this "
                                           f"trial's data is on cpu"):
        train(model, data, recipe, 0, 0, 4)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_synflow_scores_a_model_without_running_statistics_as_with_initial_ones(data):
    # The same seed gives the same parameters with and without running statistics; SynFlow must
    # then pick the same mask (BN as the affine map of mean 0, variance 1), not normalise its input.
    conv = {"name": "conv1d", "options": {"channels": [4, 4], "kernel_sizes": [3, 3]}}
    batch_bn = {"name": "conv1d", "options": {**conv["options"], "bn_running_stats": False}}
    params = {"settings": {"criterion": "synflow", "score_at": "init", "rounds": 10, "samples_per_class": 1},
              "target_sparsity": 0.9}
    masks_by = {}
    for name, model in (("running", conv), ("batch", batch_bn)):
        init, warm, _ = chain(data, model=model)
        masks_by[name] = run_stage(stage("oneshot", model=model, **params),
                                   {"score_weights": init, "warmup": warm}, data).outputs["mask"]
    assert all(torch.equal(masks_by["running"][n], masks_by["batch"][n]) for n in masks_by["running"])
    # scoring the batch-statistics model as it is would pick another mask
    torch.manual_seed(0)
    plain = build_model("conv1d", (40,), 10, **batch_bn["options"])
    naive = scores.oneshot_mask("synflow", plain, masks.prunable_names(plain), 0.1, [], torch.Generator().manual_seed(0),
                                rounds=10, input_shape=(40,))
    assert any(not torch.equal(naive[n], masks_by["batch"][n]) for n in naive)


def test_lrr_and_finetuning_continue_from_the_trained_weights_and_ltr_rewinds(data):
    """Level k+1 of LRR (and of fine-tuning) starts from level k's trained weights; LTR from θ_k. With the
    learning rate at 0 retraining changes nothing, so each level's output is its start, masked."""
    training = {**TRAINING, "epochs": 3, "milestones": [2], "rewind": "1ep"}
    frozen = {**training, "lr": FROZEN_LR}
    _, warm, dense = chain(data, training=training)
    for kind in ("lrr", "finetune"):
        l1 = run_stage(stage("imp_level", training=frozen, settings={"kind": kind}, target_sparsity=0.5),
                       {"previous": dense.outputs}, data)
        l2 = run_stage(stage("imp_level", training=frozen, settings={"kind": kind}, target_sparsity=0.8),
                       {"previous": l1.outputs}, data)
        for before, level in ((dense.outputs, l1), (l1.outputs, l2)):
            mask = level.outputs["mask"]
            for name, value in level.outputs["weights"].items():
                start = before["weights"][name]
                assert torch.equal(value, start * mask[name] if name in mask else start), (kind, name)
        assert all(torch.equal(l2.outputs["mask"][n] & l1.outputs["mask"][n], l2.outputs["mask"][n]) for n in l1.outputs["mask"])
    ltr = run_stage(stage("imp_level", training=frozen, target_sparsity=0.5), {"previous": dense.outputs, "warmup": warm}, data)
    for name, value in ltr.outputs["weights"].items():
        mask = ltr.outputs["mask"]
        assert torch.equal(value, warm["weights"][name] * mask[name] if name in mask else warm["weights"][name])


def test_lrr_replays_the_schedule_from_the_rewind_point_and_finetuning_holds_the_final_lr(data):
    training = {**TRAINING, "epochs": 3, "milestones": [2], "rewind": "1ep"}
    _, warm, dense = chain(data, training=training)
    runs = {kind: run_stage(stage("imp_level", training=training, settings={"kind": kind}, target_sparsity=0.5),
                            {"previous": dense.outputs, "warmup": warm}, data) for kind in ("ltr", "lrr", "finetune")}
    lrs = {kind: [row["lr"] for row in r.curve] for kind, r in runs.items()}
    assert lrs["ltr"] == lrs["lrr"] == pytest.approx([0.05, 0.005])  # epochs 2 and 3: the schedule from k
    assert lrs["finetune"] == pytest.approx([0.005, 0.005])
    # the same iterations k -> T, so the same data order; different starting weights, so different results
    assert [r["iteration"] for r in runs["lrr"].curve] == [r["iteration"] for r in runs["ltr"].curve]
    assert not torch.equal(runs["lrr"].outputs["weights"]["hidden.0.weight"], runs["ltr"].outputs["weights"]["hidden.0.weight"])


def test_results_report_the_evaluation_with_the_best_validation_accuracy(data):
    from workers.data.dataset import split_validation
    split = split_validation(data, 0.25)
    model = model_with(stage("dense"), split, chain(split)[0]["weights"])
    recipe = Recipe.from_dict({**TRAINING, "epochs": 6, "milestones": []})
    result = train(model, split, recipe, 0, 0, 6 * recipe.iterations_per_epoch(len(split.x_train)))
    rows = [r for r in result.curve if "val_accuracy" in r]
    assert len(rows) == 6 and all({"val_loss", "test_accuracy", "test_loss"} <= set(r) for r in rows)
    best = max(r["val_accuracy"] for r in rows)
    chosen = next(r for r in rows if r["val_accuracy"] == best)       # the earliest of the best
    assert (result.selected_epoch, result.val_accuracy, result.selected_test_accuracy) == \
        (chosen["epoch"], best, chosen["test_accuracy"])
    assert result.test_accuracy == rows[-1]["test_accuracy"]


def test_the_test_set_never_selects_anything(data):
    """Shuffling the test labels changes test accuracies, never which evaluation is selected."""
    import dataclasses
    from workers.data.dataset import split_validation
    split = split_validation(data, 0.25)
    scrambled = dataclasses.replace(split, y_test=split.y_test[torch.randperm(len(split.y_test),
                                                                             generator=torch.Generator().manual_seed(3))])
    recipe = Recipe.from_dict({**TRAINING, "epochs": 6, "milestones": []})
    stop = 6 * recipe.iterations_per_epoch(len(split.x_train))
    weights = chain(split)[0]["weights"]
    runs = [train(model_with(stage("dense"), d, weights), d, recipe, 0, 0, stop) for d in (split, scrambled)]
    assert runs[0].selected_epoch == runs[1].selected_epoch and runs[0].val_accuracy == runs[1].val_accuracy
    assert [r["test_accuracy"] for r in runs[0].curve] != [r["test_accuracy"] for r in runs[1].curve]


def test_without_a_validation_split_the_last_evaluation_is_reported(data):
    model = model_with(stage("dense"), data, chain(data)[0]["weights"])
    result = train(model, data, Recipe.from_dict(TRAINING), 0, 0, 8)
    assert result.val_accuracy is None and "val_accuracy" not in result.curve[-1]
    assert result.selected_epoch == result.curve[-1]["epoch"] and result.selected_test_accuracy == result.test_accuracy


def test_a_tuning_trial_without_a_test_split_evaluates_once_per_evaluation_point(data, monkeypatch):
    """The end-of-training evaluation is skipped when the last epoch was just evaluated, test split or not."""
    from workers.training import loop as train_module
    from workers.data.dataset import split_validation, without_test
    split = without_test(split_validation(data, 0.25))
    model = model_with(stage("dense"), split, chain(split)[0]["weights"])
    calls = []
    real = train_module.evaluate_splits
    monkeypatch.setattr(train_module, "evaluate_splits", lambda *a, **k: calls.append(1) or real(*a, **k))
    recipe = Recipe.from_dict({**TRAINING, "epochs": 3, "milestones": []})
    result = train(model, split, recipe, 0, 0, 3 * recipe.iterations_per_epoch(len(split.x_train)))
    assert len(calls) == 3 and result.val_accuracy is not None


def test_a_point_records_its_accuracies_as_exact_counts(data):
    """The counts behind every accuracy a point reports, so paired tests can run on integers (issue 25)."""
    from workers.data.dataset import split_validation
    from workers.stages.kit import measured
    split = split_validation(data, 0.25)
    model = model_with(stage("dense"), split, chain(split)[0]["weights"])
    recipe = Recipe.from_dict({**TRAINING, "epochs": 4, "milestones": []})
    point = measured(None, train(model, split, recipe, 0, 0, 4 * recipe.iterations_per_epoch(len(split.x_train))))
    assert (point["test_examples"], point["val_examples"]) == (len(split.x_test), len(split.x_val))
    assert point["num_classes"] == split.num_classes
    for correct, examples, accuracy in (("test_correct", "test_examples", "test_accuracy"),
                                        ("selected_test_correct", "test_examples", "selected_test_accuracy"),
                                        ("val_correct", "val_examples", "val_accuracy")):
        assert isinstance(point[correct], int) and point[correct] / point[examples] == point[accuracy]
    without = measured(None, train(model_with(stage("dense"), data, chain(data)[0]["weights"]), data,
                                   Recipe.from_dict(TRAINING), 0, 0, 8))
    assert without["val_correct"] is None and without["val_examples"] is None
    assert without["selected_test_correct"] == without["test_correct"]
