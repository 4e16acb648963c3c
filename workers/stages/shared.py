"""The stages every seed shares (init θ₀, the warm-up to θ_k, the dense run to θ_T), so that every method of a
seed is compared with the same weights and data order, and the sanity-check ablations of a method's mask."""
from __future__ import annotations

from typing import Callable

from workers import masks
from workers.rng import Stream
from workers.stages.kit import (StageResult, cpu_state, fresh_model, generator, measured, model_with, recipe_of,
                                retrain, rewind_iteration, start_point)
from workers.rng import seed_for
from workers.training.loop import train


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
        mask = masks.layerwise_shuffle(mask, generator(stage, Stream.SHUFFLE))
    elif p["ablation"] == "reinit":
        # A different seed's init: same distribution, fresh draws. The mask is kept as is.
        start = cpu_state(fresh_model(stage, data, seed_for(stage["seed"], Stream.REINIT)))
    else:
        raise ValueError(f"unknown ablation {p['ablation']!r}; known: shuffle, reinit")
    model, result = retrain(stage, data, start, mask, on_epoch, start_iteration)
    return StageResult(outputs={"weights": cpu_state(model), "mask": masks.mask_to_cpu(mask)},
                       point=measured(mask, result), curve=result.curve)


STAGES: dict[str, Callable[..., StageResult]] = {
    "init": run_init,
    "warmup": run_warmup,
    "dense": run_dense,
    "ablation": run_ablation,
}
