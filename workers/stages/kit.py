"""The stage kit: what a stage is and gets, and the helpers every stage runner builds on (its typed method
configuration and recipe, its model at given weights, its random generators, retraining, the row it measured).

A stage is a dict made by the planner:
    {"kind", "key", "seed", "label", "params": {"settings": {...}, "target_sparsity", ...},
     "config": {"model", "dataset", "training", "prune_output"}}
and its inputs are the outputs of its parents, by role ({"warmup": {"weights": ...}, ...}).
Everything a stage needs comes through these two arguments and the dataset, so a stage
gives the same result in a test, in `python -m workers` and on any Ray node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from workers import masks
from workers.data.dataset import Dataset
from workers.methods import config_from
from workers.methods.base import MethodConfig
from workers.models import build_model
from workers.rng import Stream
from workers.rng import seed_for
from workers.training.loop import Recipe, TrainResult, rewind_to_iterations, train

StateDict = dict[str, torch.Tensor]


@dataclass
class StageResult:
    outputs: dict                      # tensors dependants need (weights, mask), on the CPU
    point: dict | None = None          # what the stage measured for its result row (the recorder builds the row)
    curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def method_of(stage: dict) -> MethodConfig:
    """The stage's method configuration, typed: the same object the spec parsed."""
    return config_from(stage["params"]["settings"])


def recipe_of(stage: dict) -> Recipe:
    """The stage's training recipe, with a tuned method's recipe values applied (params["recipe"])."""
    return Recipe.from_dict({**stage["config"]["training"], **stage["params"].get("recipe", {})})


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


def generator(stage: dict, stream: Stream) -> torch.Generator:
    """Seeded by (seed, stream) only, so e.g. random scores are shared across sparsities (nested masks)."""
    return torch.Generator().manual_seed(seed_for(stage["seed"], stream))


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
