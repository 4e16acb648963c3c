"""Dispatch: a stage to the function that runs it, a shared stage's or the one its method family registered
(`workers.methods.RUNNERS`), with a tune stage's values applied and the global RNG seeded per stage."""
from __future__ import annotations

import time
from typing import Callable

import torch

from workers import work
from workers.data.dataset import Dataset
from workers import methods
from workers.methods import config_from
from workers.methods.base import TRAINING_PREFIX, Runner
from workers.rng import Stream, seed_for
from workers.stages import shared
from workers.stages.kit import StageResult


def with_tuned(stage: dict, values: dict) -> dict:
    """The stage as it runs with a tuning result: the chosen method knobs in its settings and the chosen recipe
    knobs (training.<name>) over its recipe. Settings of a stage without a method (ablations) are left alone."""
    params = dict(stage["params"])
    if "settings" in params:
        params["settings"] = config_from(params["settings"]).tuned(values).settings()
    params["recipe"] = {k[len(TRAINING_PREFIX):]: v for k, v in values.items() if k.startswith(TRAINING_PREFIX)}
    return {**stage, "params": params}


def runner(kind: str) -> Runner:
    """The function that runs a stage kind: a shared one, or the one its method family registered."""
    if kind in shared.STAGES:
        return shared.STAGES[kind]
    if kind not in methods.RUNNERS:  # read at call time: plugins add families
        raise ValueError(f"unknown stage kind {kind!r}; known: {', '.join([*shared.STAGES, *methods.RUNNERS])}")
    return methods.RUNNERS[kind]


def run_stage(stage: dict, inputs: dict, data: Dataset, on_epoch: Callable | None = None) -> StageResult:
    """Run one stage; the seconds and the work (workers/work.py) include everything the stage did (scoring,
    search, training, evaluation)."""
    run = runner(stage["kind"])
    tuned = inputs["tuned"]["values"] if "tuned" in inputs else None
    if tuned is not None:
        stage = with_tuned(stage, tuned)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), work.counting() as meter:
        torch.manual_seed(seed_for(stage["seed"], Stream.STAGE))
        result = run(stage, inputs, data, on_epoch)
    result.seconds = time.perf_counter() - t0
    result.work = meter.totals()
    if tuned is not None and result.point is not None:
        result.point["tuned"] = tuned  # the values it ran with reach its row
    return result
