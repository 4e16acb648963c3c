"""Score at the chosen weights, keep the global top-k, rewind to the rewind point, retrain."""
from __future__ import annotations

import time

from torch import nn

from workers import masks
from workers.data.dataset import Dataset
from workers.methods.oneshot.criteria import CRITERIA
from workers.methods.oneshot.scoring import oneshot_mask, per_class_sample
from workers.rng import Stream
from workers.stages.kit import (StageResult, StateDict, generator, measured, method_of, model_with, model_with_options,
                            prunable, retrain)

BATCH = 256  # scoring batch: the criteria sum gradients over batches, so this only bounds memory


def run_oneshot(stage, inputs, data, on_epoch=None) -> StageResult:
    method, p = method_of(stage), stage["params"]
    t0 = time.perf_counter()
    weights = inputs["score_weights"]["weights"]
    model = _synflow_model(stage, data, weights) if method.criterion == "synflow" else model_with(stage, data, weights)
    names = prunable(stage, model)
    gen = generator(stage, Stream.ONESHOT)
    batches = []
    if CRITERIA[method.criterion].needs_data:
        x, y = per_class_sample(data.x_train, data.y_train, method.samples_per_class, data.num_classes, gen)
        batches = [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x), BATCH)]
    mask = oneshot_mask(method.criterion, model, names, 1 - p["target_sparsity"], batches, gen,
                        rounds=method.rounds, invert=p["invert"], input_shape=data.input_shape,
                        options=method.typed_options())
    search_seconds = time.perf_counter() - t0
    _, result = retrain(stage, data, inputs["warmup"]["weights"], mask, on_epoch)
    return StageResult(outputs={"mask": masks.mask_to_cpu(mask)}, point=measured(mask, result, search_seconds),
                       curve=result.curve)


def _synflow_model(stage: dict, data: Dataset, weights: StateDict) -> nn.Module:
    """The model SynFlow scores. BN without running statistics would normalise SynFlow's single all-ones input
    by its own statistics; such a model is scored as its twin with running statistics at their initial mean 0
    and variance 1, so that BN is the fixed positive affine map SynFlow needs (the CTS authors build their
    SynFlow model with running statistics for the same reason)."""
    if stage["config"]["model"].get("options", {}).get("bn_running_stats", True):
        return model_with(stage, data, weights)
    twin = model_with_options(stage, data, {"bn_running_stats": True})
    # `weights` lacks only the twin's running-statistics buffers, which keep their initial values.
    twin.load_state_dict(weights, strict=False)
    return twin
