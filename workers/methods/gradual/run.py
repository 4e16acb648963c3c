"""GMP and GraNet: train θ_k -> T with a mask schedule that prunes (and, for GraNet, regrows) as it goes; the
network at the end is the result, evaluated as it is."""
from __future__ import annotations

from workers import masks
from workers.methods.gradual import GraNetMethod
from workers.methods.gradual.schedules import GMPSchedule, GraNetSchedule, initial_mask, plan_gradual
from workers.rng import Stream
from workers.stages.kit import (StageResult, cpu_state, generator, measured, method_of, model_with, prunable, retrain,
                            rewind_iteration, total_iterations)


def run_gradual(stage, inputs, data, on_epoch=None) -> StageResult:
    method, p = method_of(stage), stage["params"]
    if p["invert"]:
        raise ValueError(f"{method.kind} cannot invert its mask: it only ever keeps the largest magnitudes")
    start_weights = inputs["warmup"]["weights"]
    k, total = rewind_iteration(stage, data), total_iterations(stage, data)
    plan = plan_gradual(total, method.start_fraction, method.end_fraction, method.every, not_before=k)
    target, initial = p["target_sparsity"], method.start_sparsity(p["target_sparsity"])
    gen = generator(stage, Stream.GRADUAL)
    at_k = model_with(stage, data, start_weights)
    names = prunable(stage, at_k)
    if initial > 0:
        mask = initial_mask(masks.prunable_params(at_k, names), 1 - initial, gen, method.initial_distribution)
    else:
        mask = masks.full_mask(at_k, names)
    if isinstance(method, GraNetMethod):
        schedule = GraNetSchedule(plan, target, total, gen, initial, method.prune_rate, method.prune_rate_min)
    else:
        schedule = GMPSchedule(plan, target, gen)
    # The last GMP step (iteration plan.end) fixes the count at the target; from the evaluation after it on,
    # every evaluated network has the target sparsity (GraNet's regrowth moves weights, never the count), and
    # only those may be selected.
    model, result = retrain(stage, data, start_weights, mask, on_epoch, k,
                            mask_schedule=schedule, select_from=plan.end + 1)
    final = result.mask
    return StageResult(outputs={"weights": cpu_state(model), "mask": masks.mask_to_cpu(final)},
                       point=measured(final, result, 0.0, **_summary(schedule, plan, initial)),
                       curve=result.curve)


def _summary(schedule: GMPSchedule, plan, initial: float) -> dict:
    """What the schedule did, for the result row's measurements."""
    # The step at plan.start prunes to s_i, which the start mask already has; the sparsity rises at the others.
    out = {"initial_sparsity": initial, "prune_start": plan.start, "prune_every": plan.every,
           "prune_end": plan.end, "pruning_steps": plan.events}
    if isinstance(schedule, GraNetSchedule):
        regrew = [h for h in schedule.history if not h["regrowth_skipped"]]
        out |= {"regrowth_steps": len(regrew), "regrown": sum(h["regrown"] for h in regrew),
                "regrown_after_prune_end": sum(h["regrown"] for h in regrew if h["iteration"] > plan.end)}
    return out
