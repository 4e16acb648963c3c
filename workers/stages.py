"""The stage kinds of a sweep: plain functions from inputs to outputs, no scheduling knowledge.

A stage is a dict made by the planner:
    {"kind", "key", "seed", "params": {...}, "config": {"model", "dataset", "training", "prune_output"}}
and its inputs are the outputs of its parents, by role ({"warmup": {"weights": ...}, ...}).
Everything a stage needs comes through these two arguments and the dataset, so a stage
gives the same result in a test, in `python -m workers` and on any Ray node.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from workers import masks
from workers.data import Dataset
from workers.models import build_model
from workers.pruning import cts as cts_search
from workers.pruning import scores as oneshot_scores
from workers.train import Recipe, seed_for, rewind_to_iterations, train

StateDict = dict[str, torch.Tensor]


@dataclass
class StageResult:
    outputs: dict                      # tensors dependants need (weights, mask), on the CPU
    point: dict | None = None          # the results row this stage produces, if any
    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    search_seconds: float = 0.0
    retrain_seconds: float = 0.0
    info: dict = field(default_factory=dict)


def rewind_iteration(stage: dict, data: Dataset) -> int:
    r = recipe_of(stage)
    return rewind_to_iterations(stage["config"]["training"]["rewind"], r.iterations_per_epoch(len(data.x_train)))


def recipe_of(stage: dict) -> Recipe:
    return Recipe.from_dict(stage["config"]["training"])


def total_iterations(stage: dict, data: Dataset) -> int:
    r = recipe_of(stage)
    return r.epochs * r.iterations_per_epoch(len(data.x_train))


def fresh_model(stage: dict, data: Dataset, seed: int) -> nn.Module:
    """The seed's initial network; building under a forked RNG keeps global state untouched."""
    return model_with_options(stage, data, {}, seed)


def model_with_options(stage: dict, data: Dataset, overrides: dict, seed: int | None = None) -> nn.Module:
    """The stage's model with some options overridden, initialised from `seed` (default: the stage's)."""
    cfg = stage["config"]["model"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stage["seed"] if seed is None else seed)
        model = build_model(cfg["name"], tuple(data.input_shape), data.num_classes,
                            **{**cfg.get("options", {}), **overrides})
    return model.to(data.x_train.device)


def model_with(stage: dict, data: Dataset, weights: StateDict) -> nn.Module:
    model = fresh_model(stage, data, stage["seed"])
    model.load_state_dict(weights)
    return model


def prunable(stage: dict, model: nn.Module) -> list[str]:
    return masks.prunable_names(model, stage["config"].get("prune_output"))


def cpu_state(model: nn.Module) -> StateDict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _generator(stage: dict, purpose: int) -> torch.Generator:
    # Seeded by (seed, purpose) only, so e.g. random scores are shared across sparsities (nested masks).
    return torch.Generator().manual_seed(seed_for(stage["seed"], purpose))


def _retrain(stage: dict, data: Dataset, start_weights: StateDict, mask: masks.Mask,
             on_epoch: Callable | None, start_iteration: int | None = None) -> tuple[nn.Module, object]:
    """Train the masked weights to the end; from the rewind point unless told otherwise."""
    model = model_with(stage, data, start_weights)
    start = rewind_iteration(stage, data) if start_iteration is None else start_iteration
    result = train(model, data, recipe_of(stage), stage["seed"], start, total_iterations(stage, data),
                   mask=mask, on_epoch=on_epoch)
    return model, result


def _start_point(stage: dict, inputs: dict, data: Dataset, from_init: bool) -> tuple[StateDict, int]:
    """(weights, iteration) a mask retrains from: θ₀ at iteration 0, or θ_k at the rewind point."""
    if from_init:
        return inputs["init"]["weights"], 0
    return inputs["warmup"]["weights"], rewind_iteration(stage, data)


def _synflow_model(stage: dict, data: Dataset, weights: StateDict) -> nn.Module:
    """The model SynFlow scores.  BN without running statistics would normalise SynFlow's single
    all-ones input by its own statistics; such a model is scored as its twin with running statistics
    at their initial mean 0 and variance 1, so that BN is the fixed positive affine map SynFlow needs
    (the CTS authors build their SynFlow model with running statistics for the same reason)."""
    if stage["config"]["model"].get("options", {}).get("bn_running_stats", True):
        return model_with(stage, data, weights)
    twin = model_with_options(stage, data, {"bn_running_stats": True})
    # `weights` lacks only the twin's running-statistics buffers, which keep their initial values.
    twin.load_state_dict(weights, strict=False)
    return twin


def _point(stage: dict, mask: masks.Mask | None, result, search_seconds: float = 0.0) -> dict:
    p = stage["params"]
    return {
        "method": p["method"],
        "criterion": p.get("criterion"),
        "objective": p.get("objective"),
        "target_sparsity": p.get("target_sparsity", 0.0),
        "sparsity": masks.sparsity(mask) if mask is not None else 0.0,
        "level": p.get("level"),
        "test_accuracy": result.test_accuracy,
        "best_test_accuracy": result.best_test_accuracy,
        "test_loss": result.test_loss,
        "search_seconds": search_seconds,
        "retrain_seconds": result.seconds,
    }


# ------------------------------------------------------------------ stage kinds

def run_init(stage, inputs, data, on_epoch=None) -> StageResult:
    return StageResult(outputs={"weights": cpu_state(fresh_model(stage, data, stage["seed"]))})


def run_warmup(stage, inputs, data, on_epoch=None) -> StageResult:
    model = model_with(stage, data, inputs["init"]["weights"])
    result = train(model, data, recipe_of(stage), stage["seed"], 0, rewind_iteration(stage, data),
                   on_epoch=on_epoch, evaluate_at_end=False)
    return StageResult(outputs={"weights": cpu_state(model)}, curve=result.curve, retrain_seconds=result.seconds)


def run_dense(stage, inputs, data, on_epoch=None) -> StageResult:
    model = model_with(stage, data, inputs["warmup"]["weights"])
    result = train(model, data, recipe_of(stage), stage["seed"], rewind_iteration(stage, data),
                   total_iterations(stage, data), on_epoch=on_epoch)
    return StageResult(outputs={"weights": cpu_state(model)}, point=_point(stage, None, result),
                       curve=result.curve, retrain_seconds=result.seconds)


def run_imp_level(stage, inputs, data, on_epoch=None) -> StageResult:
    """One IMP level: prune the previous level's trained weights by global magnitude, rewind, retrain."""
    p = stage["params"]
    t0 = time.perf_counter()
    prev = inputs["previous"]
    trained = model_with(stage, data, prev["weights"])
    names = prunable(stage, trained)
    weights = masks.prunable_params(trained, names)
    scores = {n: w.detach().abs() for n, w in weights.items()}
    if "mask" in prev:
        scores = masks.restrict_to_survivors(scores, prev["mask"], p["invert"])
    keep = masks.keep_count(sum(w.numel() for w in weights.values()), 1 - p["target_sparsity"])
    mask = masks.global_topk(scores, keep, _generator(stage, 3), largest=not p["invert"])
    prune_seconds = time.perf_counter() - t0
    model, result = _retrain(stage, data, inputs["warmup"]["weights"], mask, on_epoch)
    return StageResult(outputs={"weights": cpu_state(model), "mask": masks.mask_to_cpu(mask)},
                       point=_point(stage, mask, result, prune_seconds), curve=result.curve,
                       search_seconds=prune_seconds, retrain_seconds=result.seconds)


def run_oneshot(stage, inputs, data, on_epoch=None) -> StageResult:
    """Score at the chosen weights, keep the global top-k, rewind to the rewind point, retrain."""
    p = stage["params"]
    t0 = time.perf_counter()
    if p["criterion"] == "synflow":
        model = _synflow_model(stage, data, inputs["score_weights"]["weights"])
    else:
        model = model_with(stage, data, inputs["score_weights"]["weights"])
    names = prunable(stage, model)
    gen = _generator(stage, 4)
    batches = []
    if p["criterion"] in ("snip", "grasp"):
        x, y = oneshot_scores.per_class_sample(data.x_train, data.y_train, p["samples_per_class"],
                                               data.num_classes, gen)
        batches = [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(x), 256)]
    mask = oneshot_scores.oneshot_mask(p["criterion"], model, names, 1 - p["target_sparsity"], batches, gen,
                                       rounds=p.get("rounds"), invert=p["invert"], input_shape=data.input_shape)
    search_seconds = time.perf_counter() - t0
    model, result = _retrain(stage, data, inputs["warmup"]["weights"], mask, on_epoch)
    return StageResult(outputs={"mask": masks.mask_to_cpu(mask)}, point=_point(stage, mask, result, search_seconds),
                       curve=result.curve, search_seconds=search_seconds, retrain_seconds=result.seconds)


def run_cts(stage, inputs, data, on_epoch=None) -> StageResult:
    """Concrete Ticket Search on frozen θ_k (or θ₀ when searched at init), then retraining from the same weights."""
    p = stage["params"]
    t0 = time.perf_counter()
    start_weights, start_iteration = _start_point(stage, inputs, data, p.get("search_at", "rewind") == "init")
    model = model_with(stage, data, start_weights)
    names = prunable(stage, model)
    # Stages planned before search_bn existed searched with the running statistics.
    cfg = cts_search.CTSConfig(objective=p["objective"], epochs=p["search_epochs"], lr=p["lr"],
                               batch_size=recipe_of(stage).batch_size, tau=p["tau"], slack=p["slack"], ema=p["ema"],
                               search_bn=p.get("search_bn", "running"))
    search_curve = []

    def record(epoch: int, info: dict) -> None:
        search_curve.append({"phase": "search", "epoch": epoch + 1, "iteration": info["steps"], "lr": info["lr"],
                             "objective": info["objective"], "expected_kept_fraction": info["expected_kept_fraction"]})
        if on_epoch is not None:
            on_epoch(search_curve[-1])

    mask, info = cts_search.search_mask(model, names, data.x_train, data.y_train, 1 - p["target_sparsity"], cfg,
                                        _generator(stage, 5), on_epoch=record, invert=p["invert"])
    search_seconds = time.perf_counter() - t0
    model, result = _retrain(stage, data, start_weights, mask, on_epoch, start_iteration)
    return StageResult(outputs={"mask": masks.mask_to_cpu(mask)}, point=_point(stage, mask, result, search_seconds),
                       curve=search_curve + result.curve, search_seconds=search_seconds, retrain_seconds=result.seconds,
                       info={k: v for k, v in info.items() if isinstance(v, (int, float))})


def run_ablation(stage, inputs, data, on_epoch=None) -> StageResult:
    """Sanity check of another stage's mask: shuffle it within each layer, or retrain it from fresh weights."""
    p = stage["params"]
    mask = {n: m.to(data.x_train.device) for n, m in inputs["source"]["mask"].items()}
    # A mask searched at init retrains from θ₀ for the whole training, and so do its ablations.
    start, start_iteration = _start_point(stage, inputs, data, p.get("retrain_from") == "init")
    if p["ablation"] == "shuffle":
        mask = masks.layerwise_shuffle(mask, _generator(stage, 6))
    elif p["ablation"] == "reinit":
        # A different seed's init: same distribution, fresh draws. The mask is kept as is.
        start = cpu_state(fresh_model(stage, data, seed_for(stage["seed"], 7)))
    else:
        raise ValueError(f"unknown ablation {p['ablation']!r}; known: shuffle, reinit")
    model, result = _retrain(stage, data, start, mask, on_epoch, start_iteration)
    return StageResult(outputs={"weights": cpu_state(model), "mask": masks.mask_to_cpu(mask)},
                       point=_point(stage, mask, result),
                       curve=result.curve, retrain_seconds=result.seconds)


STAGE_KINDS: dict[str, Callable[..., StageResult]] = {
    "init": run_init,
    "warmup": run_warmup,
    "dense": run_dense,
    "imp_level": run_imp_level,
    "oneshot": run_oneshot,
    "cts": run_cts,
    "ablation": run_ablation,
}


def run_stage(stage: dict, inputs: dict, data: Dataset, on_epoch: Callable | None = None) -> StageResult:
    """Run one stage; the seconds include everything the stage did (scoring, search, training)."""
    kind = stage["kind"]
    if kind not in STAGE_KINDS:
        raise ValueError(f"unknown stage kind {kind!r}; known: {', '.join(STAGE_KINDS)}")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(stage["seed"], 8))
        result = STAGE_KINDS[kind](stage, inputs, data, on_epoch)
    result.seconds = time.perf_counter() - t0
    return result
