"""Concrete Ticket Search on frozen θ_k (or θ₀ when searched at init), then retraining from the same weights."""
from __future__ import annotations

import time

from workers import masks
from workers.methods.cts.search import search_mask
from workers.rng import Stream
from workers.stages.kit import (StageResult, generator, measured, method_of, model_with, prunable, recipe_of, retrain,
                            start_point)


def run_cts(stage, inputs, data, on_epoch=None) -> StageResult:
    method, p = method_of(stage), stage["params"]
    recipe = recipe_of(stage)
    t0 = time.perf_counter()
    start_weights, start_iteration = start_point(stage, inputs, data, method.search_at == "init")
    model = model_with(stage, data, start_weights)
    search_curve = []

    def record(epoch: int, info: dict) -> None:
        search_curve.append({"phase": "search", "epoch": epoch + 1, "iteration": info["steps"], "lr": info["lr"],
                             "objective": info["objective"], "expected_kept_fraction": info["expected_kept_fraction"]})
        if on_epoch is not None:
            on_epoch(search_curve[-1])

    mask, info = search_mask(model, prunable(stage, model), data.x_train, data.y_train, 1 - p["target_sparsity"],
                             method, generator(stage, Stream.CTS_SEARCH), epochs=method.search_epochs(recipe.epochs),
                             mask_lr=method.mask_lr(recipe.lr), batch_size=recipe.batch_size, on_epoch=record,
                             invert=p["invert"])
    search_seconds = time.perf_counter() - t0
    _, result = retrain(stage, data, start_weights, mask, on_epoch, start_iteration)
    # What the search ended at: GradBalance's multiplier, how far over budget, the expected kept fraction.
    ended = {k: info[k] for k in ("lambda", "budget_violation", "expected_kept_fraction", "steps")}
    return StageResult(outputs={"mask": masks.mask_to_cpu(mask)}, curve=search_curve + result.curve,
                       point=measured(mask, result, search_seconds, **ended))
