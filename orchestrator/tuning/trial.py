"""One Tune trial: a configuration of a method, run as the sweep runs it, scored on the validation split.

The trial builds the method's stages for its configuration (a plan of this one method on the tuning seeds at
the tuning sparsities), takes each seed's shared stages (θ₀, θ_k, θ_T) from the tune stage's inputs, and runs
the method's stages with `workers.stages.dispatch.run_stage` on the dataset without its test split. It reports the
validation accuracy at every evaluation, with `epochs` the retraining epochs it has run (ASHA's clock), and
ends with `score`: the mean over its (seed, sparsity) results of the validation accuracy they report.

Every report also carries the work the trial has done so far (workers/work.py, counted as any stage counts it;
the store's work columns), so its last report says what it ran whether it completed, diverged or was stopped
by ASHA: Tune's function trainable waits in `tune.report` until Tune asks for the next result, so a stopped
trial runs nothing after the report it was stopped on.
"""
from __future__ import annotations

import math
import time

from workers.methods.base import TRAINING_PREFIX

SHARED = ("init", "warmup", "dense")


def method_plan(spec_dict: dict, settings: dict, values: dict):
    """The stages of the method with `values` applied, on the tuning seeds at the tuning sparsities (shared
    stages included: their keys match the sweep's tuning-seed stages). Torch-free: also used for work
    estimates."""
    from orchestrator.spec.plan import build_plan
    from orchestrator.spec.sweep_spec import with_plugins
    from workers.methods import config_from

    spec = with_plugins(spec_dict)
    method = config_from(settings).tuned(values).model_copy(update={"sanity_checks": [], "tune": None})
    one = spec.model_copy(update={"methods": [method], "seeds": spec.tuning.seeds,
                                  "sparsities": spec.tuning.sparsities, "tuning": None})
    return build_plan(one)


def recipe_values(values: dict) -> dict:
    return {k[len(TRAINING_PREFIX):]: v for k, v in values.items() if k.startswith(TRAINING_PREFIX)}


def run_trial(values: dict, *, context: dict) -> None:
    """The Tune function trainable. `context`: spec (dict), settings (the untuned method's), shared (per tuning
    seed: {init, warmup, dense} outputs), threads and gpus (the trial's resources), monitor (the tune actor,
    which this trial's beats go to)."""
    from ray import tune

    from orchestrator.tuning.watch import TrialBeats

    # Beats first: the trial is heard from its first line on (its inputs, and torch with them, are fetched before
    # it, within the watch's allowance for a first beat).
    beats = TrialBeats(context["monitor"], tune.get_context().get_trial_id()).start()
    try:
        _run(values, context, beats)
    finally:
        beats.stop()


def _run(values: dict, context: dict, beats) -> None:
    import torch
    from ray import tune

    from workers import work
    from workers.data.dataset import dataset_from_config, without_test
    from orchestrator.spec.plan import plugins_of
    from workers.plugins import ensure
    from workers.stages.dispatch import run_stage
    from workers.training.loop import Diverged

    ensure(plugins_of(context["spec"]))  # before planning: a plugin's method kind or criterion must be known
    torch.set_num_threads(max(1, int(context["threads"])))
    plan = method_plan(context["spec"], context["settings"], values)
    data = without_test(dataset_from_config(plan.config["dataset"]))
    if context["gpus"] > 0 and torch.cuda.is_available():
        # Trials share a GPU as the sweep's trial actors do: each within its share.
        torch.cuda.set_per_process_memory_fraction(min(1.0, context["gpus"]))
        data = data.to("cuda")
    targets = {round(s, 9) for s in context["spec"]["tuning"]["sparsities"]}
    recipe = recipe_values(values)
    outputs, scores, clock = {}, [], {"epochs": 0, "started": time.perf_counter()}
    for key, stage in plan.stages.items():
        if stage.kind in SHARED:
            outputs[key] = context["shared"][str(stage.seed)][stage.kind]

    def report_work(result: dict) -> None:
        """Report to Tune with the trial's work so far: its meter (below) and the running stage's together."""
        tune.report({**result, "work_s": time.perf_counter() - clock["started"], **work.so_far()})

    def report(row: dict) -> None:
        beats.epoch()
        # ASHA's clock: training epochs run so far by this trial: retraining epochs, and the epochs of a search
        # that trains the weights and says how its network validates (BiP's); a CTS search trains no weight.
        if row.get("phase") != "train" and "val_accuracy" not in row:
            return
        clock["epochs"] += 1
        if row.get("val_accuracy") is not None:
            report_work({"epochs": clock["epochs"], "val_accuracy": row["val_accuracy"]})

    # The trial's own meter: each stage's meter adds what it counted to it when the stage ends, or raises.
    with work.counting():
        for key, stage in plan.stages.items():
            if stage.kind in SHARED:
                continue
            payload = stage.payload(plan.config)
            payload["params"] = {**payload["params"], "recipe": recipe}
            inputs = {role: outputs[stage.parents[role]] for role in stage.inputs}
            try:
                result = run_stage(payload, inputs, data, on_epoch=report)
            except Diverged:
                # A configuration that diverges is the worst one; it is not an error of the search.
                report_work({"epochs": clock["epochs"], "val_accuracy": 0.0, "score": 0.0, "diverged": True})
                return
            outputs[key] = result.outputs
            if stage.meta.get("requested") and round(stage.params.get("target_sparsity", -1), 9) in targets:
                scores.append(result.point["val_accuracy"])
        score = sum(scores) / len(scores) if scores and all(v is not None for v in scores) else math.nan
        report_work({"epochs": clock["epochs"], "val_accuracy": score, "score": score, "diverged": False})
