"""The stages of a sweep: plain functions from inputs to outputs, no scheduling knowledge.

A stage is a dict made by the planner:
    {"kind", "key", "seed", "label", "params": {"settings": {...}, "target_sparsity", ...},
     "config": {"model", "dataset", "training", "prune_output"}}
and its inputs are the outputs of its parents, by role ({"warmup": {"weights": ...}, ...}).
Everything a stage needs comes through these two arguments and the dataset, so a stage
gives the same result in a test, in `python -m workers` and on any Ray node.

This module holds the stages every seed shares (init, warm-up, dense), the sanity-check ablations, the
helpers method runners use, and the dispatch to the runners the method families register
(`workers.methods.RUNNERS`).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from workers import masks
from workers.data import Dataset
from workers import methods
from workers.methods import config_from
from workers.methods.base import TRAINING_PREFIX, MethodConfig
from workers.models import build_model
from workers.train import Recipe, TrainResult, rewind_to_iterations, seed_for, train

StateDict = dict[str, torch.Tensor]


@dataclass
class StageResult:
    outputs: dict                      # tensors dependants need (weights, mask), on the CPU
    point: dict | None = None          # what the stage measured for its result row (the recorder builds the row)
    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------ helpers for method runners

def method_of(stage: dict) -> MethodConfig:
    """The stage's method configuration, typed: the same object the spec parsed."""
    return config_from(stage["params"]["settings"])


def recipe_of(stage: dict) -> Recipe:
    """The stage's training recipe, with a tuned method's recipe values applied (params["recipe"])."""
    return Recipe.from_dict({**stage["config"]["training"], **stage["params"].get("recipe", {})})


def with_tuned(stage: dict, values: dict) -> dict:
    """The stage as it runs with a tuning result: the chosen method knobs in its settings and the chosen recipe
    knobs (training.<name>) over its recipe. Settings of a stage without a method (ablations) are left alone."""
    params = dict(stage["params"])
    if "settings" in params:
        params["settings"] = config_from(params["settings"]).tuned(values).settings()
    params["recipe"] = {k[len(TRAINING_PREFIX):]: v for k, v in values.items() if k.startswith(TRAINING_PREFIX)}
    return {**stage, "params": params}


def iterations_per_epoch(stage: dict, data: Dataset) -> int:
    return recipe_of(stage).iterations_per_epoch(len(data.x_train))


def rewind_iteration(stage: dict, data: Dataset) -> int:
    return rewind_to_iterations(stage["config"]["training"]["rewind"], iterations_per_epoch(stage, data))


def total_iterations(stage: dict, data: Dataset) -> int:
    return recipe_of(stage).epochs * iterations_per_epoch(stage, data)


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


def generator(stage: dict, purpose: int) -> torch.Generator:
    """Seeded by (seed, purpose) only, so e.g. random scores are shared across sparsities (nested masks)."""
    return torch.Generator().manual_seed(seed_for(stage["seed"], purpose))


def start_point(stage: dict, inputs: dict, data: Dataset, from_init: bool) -> tuple[StateDict, int]:
    """(weights, iteration) a mask retrains from: θ₀ at iteration 0, or θ_k at the rewind point."""
    if from_init:
        return inputs["init"]["weights"], 0
    return inputs["warmup"]["weights"], rewind_iteration(stage, data)


def retrain(stage: dict, data: Dataset, start_weights: StateDict, mask: masks.Mask | None,
            on_epoch: Callable | None, start_iteration: int | None = None,
            recipe: Recipe | None = None, **train_options) -> tuple[nn.Module, TrainResult]:
    """Train the masked weights to the end of training; from the rewind point unless told otherwise."""
    model = model_with(stage, data, start_weights)
    start = rewind_iteration(stage, data) if start_iteration is None else start_iteration
    result = train(model, data, recipe or recipe_of(stage), stage["seed"], start, total_iterations(stage, data),
                   mask=mask, on_epoch=on_epoch, **train_options)
    return model, result


def measured(mask: masks.Mask | None, result: TrainResult, search_seconds: float = 0.0, **measurements) -> dict:
    """What a stage measured, for its result row: sparsity from the mask, accuracies, seconds and any
    method-specific measurements (e.g. CTS's final λ)."""
    return {
        "sparsity": masks.sparsity(mask) if mask is not None else 0.0,
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "val_accuracy": result.val_accuracy,
        "selected_epoch": result.selected_epoch,
        "selected_test_accuracy": result.selected_test_accuracy,
        "test_correct": result.test_correct,
        "selected_test_correct": result.selected_test_correct,
        "val_correct": result.val_correct,
        "test_examples": result.test_examples,
        "val_examples": result.val_examples,
        "num_classes": result.num_classes,
        "search_seconds": search_seconds,
        "retrain_seconds": result.seconds,
        "measurements": measurements,
    }


# ------------------------------------------------------------------ the stages every seed shares

def run_init(stage, inputs, data, on_epoch=None) -> StageResult:
    return StageResult(outputs={"weights": cpu_state(fresh_model(stage, data, stage["seed"]))})


def run_warmup(stage, inputs, data, on_epoch=None) -> StageResult:
    model = model_with(stage, data, inputs["init"]["weights"])
    result = train(model, data, recipe_of(stage), stage["seed"], 0, rewind_iteration(stage, data),
                   on_epoch=on_epoch, evaluate_at_end=False)
    return StageResult(outputs={"weights": cpu_state(model)}, curve=result.curve)


def run_dense(stage, inputs, data, on_epoch=None) -> StageResult:
    model, result = retrain(stage, data, inputs["warmup"]["weights"], None, on_epoch)
    return StageResult(outputs={"weights": cpu_state(model)}, point=measured(None, result), curve=result.curve)


def run_ablation(stage, inputs, data, on_epoch=None) -> StageResult:
    """Sanity check of another stage's mask: shuffle it within each layer, or retrain it from fresh weights."""
    p = stage["params"]
    mask = {n: m.to(data.x_train.device) for n, m in inputs["source"]["mask"].items()}
    # A mask searched at init retrains from θ₀ for the whole training, and so do its ablations.
    start, start_iteration = start_point(stage, inputs, data, p.get("retrain_from") == "init")
    if p["ablation"] == "shuffle":
        mask = masks.layerwise_shuffle(mask, generator(stage, 6))
    elif p["ablation"] == "reinit":
        # A different seed's init: same distribution, fresh draws. The mask is kept as is.
        start = cpu_state(fresh_model(stage, data, seed_for(stage["seed"], 7)))
    else:
        raise ValueError(f"unknown ablation {p['ablation']!r}; known: shuffle, reinit")
    model, result = retrain(stage, data, start, mask, on_epoch, start_iteration)
    return StageResult(outputs={"weights": cpu_state(model), "mask": masks.mask_to_cpu(mask)},
                       point=measured(mask, result), curve=result.curve)


SHARED_KINDS: dict[str, Callable[..., StageResult]] = {
    "init": run_init,
    "warmup": run_warmup,
    "dense": run_dense,
    "ablation": run_ablation,
}


def runner(kind: str) -> Callable[..., StageResult]:
    """The function that runs a stage kind: a shared one, or the one its method family registered."""
    if kind in SHARED_KINDS:
        return SHARED_KINDS[kind]
    if kind not in methods.RUNNERS:
        raise ValueError(f"unknown stage kind {kind!r}; known: {', '.join([*SHARED_KINDS, *methods.RUNNERS])}")
    module, _, name = methods.RUNNERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def run_stage(stage: dict, inputs: dict, data: Dataset, on_epoch: Callable | None = None) -> StageResult:
    """Run one stage; the seconds include everything the stage did (scoring, search, training)."""
    run = runner(stage["kind"])
    tuned = inputs["tuned"]["values"] if "tuned" in inputs else None
    if tuned is not None:
        stage = with_tuned(stage, tuned)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(stage["seed"], 8))
        result = run(stage, inputs, data, on_epoch)
    result.seconds = time.perf_counter() - t0
    if tuned is not None and result.point is not None:
        result.point["tuned"] = tuned  # the values it ran with reach its row
    return result
