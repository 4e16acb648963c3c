"""One level of an IMP chain: prune the previous level's trained weights by global magnitude, then retrain the
survivors from θ_k (LTR), or from their trained values with the schedule replayed (LRR) or at the final learning
rate (fine-tuning)."""
from __future__ import annotations

import time

from workers import masks
from workers.rng import Stream
from workers.stages.kit import (StageResult, cpu_state, generator, measured, method_of, model_with, prunable, recipe_of,
                            retrain)


def run_imp_level(stage, inputs, data, on_epoch=None) -> StageResult:
    method, p = method_of(stage), stage["params"]
    t0 = time.perf_counter()
    previous = inputs["previous"]
    trained = model_with(stage, data, previous["weights"])
    names = prunable(stage, trained)
    weights = masks.prunable_params(trained, names)
    scores = {n: w.detach().abs() for n, w in weights.items()}
    if "mask" in previous:
        scores = masks.restrict_to_survivors(scores, previous["mask"], p["invert"])
    keep = masks.keep_count(sum(w.numel() for w in weights.values()), 1 - p["target_sparsity"])
    mask = masks.global_topk(scores, keep, generator(stage, Stream.IMP_LEVEL), largest=not p["invert"])
    prune_seconds = time.perf_counter() - t0
    recipe = recipe_of(stage)
    if method.RETRAIN == "rewind":
        start = inputs["warmup"]["weights"]
    else:
        # Both start from the trained weights and run the same iterations k -> T (so the same data order);
        # fine-tuning holds the schedule's final learning rate throughout.
        start = previous["weights"]
        if method.RETRAIN == "final_lr":
            recipe = recipe.at_final_lr()
    model, result = retrain(stage, data, start, mask, on_epoch, recipe=recipe)
    return StageResult(outputs={"weights": cpu_state(model), "mask": masks.mask_to_cpu(mask)},
                       point=measured(mask, result, prune_seconds), curve=result.curve)
