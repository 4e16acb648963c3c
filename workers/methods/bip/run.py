"""BiP from the seed's dense trained weights: the bi-level search leaves m ⊙ θ in the model, which is the result as
it is, or, with `finetune`, retrained with the mask fixed from the rewind point to the end."""
from __future__ import annotations

import dataclasses
import time

from workers import masks
from workers.methods.bip.bilevel import BiPConfig, bip_search
from workers.rng import Stream
from workers.stages.kit import (StageResult, cpu_state, generator, measured, method_of, model_with, prunable, recipe_of,
                            retrain, total_iterations)

# The method's knobs that the search itself takes (the rest of BiPConfig comes from the sweep's recipe).
_SEARCH_KNOBS = tuple(f.name for f in dataclasses.fields(BiPConfig) if f.name not in ("epochs", "batch_size"))


def run_bip(stage, inputs, data, on_epoch=None) -> StageResult:
    method, p = method_of(stage), stage["params"]
    if p["invert"]:
        raise ValueError("bip cannot invert its mask: the scores make the mask inside the search")
    recipe = recipe_of(stage)
    cfg = BiPConfig(epochs=method.search_epochs(recipe.epochs), batch_size=recipe.batch_size,
                    **{name: getattr(method, name) for name in _SEARCH_KNOBS})
    t0 = time.perf_counter()
    model = model_with(stage, data, inputs["dense"]["weights"])
    search_curve = []

    def record(epoch: int, info: dict) -> None:
        search_curve.append({"phase": "search", "epoch": epoch + 1, "iteration": info["steps"],
                             "train_loss": info["loss"], "lr": info["lr"],
                             **({"val_accuracy": info["val_accuracy"]} if "val_accuracy" in info else {})})
        if on_epoch is not None:
            on_epoch(search_curve[-1])

    found = bip_search(model, prunable(stage, model), data, 1 - p["target_sparsity"], cfg,
                       generator(stage, Stream.BIP_SEARCH), on_epoch=record)
    search_seconds = time.perf_counter() - t0
    # Without fine-tuning, training "from" the end to the end only evaluates the BiP network as it is.
    start = None if method.finetune else total_iterations(stage, data)
    tuned, result = retrain(stage, data, cpu_state(model), found.mask, on_epoch, start)
    return StageResult(outputs={"weights": cpu_state(tuned), "mask": masks.mask_to_cpu(found.mask)},
                       curve=search_curve + result.curve,
                       point=measured(found.mask, result, search_seconds, **_named(found.info)))


def _named(info: dict) -> dict:
    """The search's last-epoch measurements, named for a result row (whose own epoch is the selected one)."""
    return {("bip_epochs" if name == "epoch" else name): value for name, value in info.items()}
