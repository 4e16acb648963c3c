"""One-shot saliency criteria: each is one scoring function and its registry entry, nothing else.

A criterion maps a `Scoring` (workers/methods/oneshot/scoring.py: the weights being scored, already masked, and
the gradients a criterion may ask for) to {weight name: score}; higher means more worth keeping, and the mask is
always the global top-k of the scores (workers/masks.py). Adding a criterion is one decorated function here:
the spec, `validate --explain`, the planner and the worker all read this registry.

This module imports no torch (scores are computed with tensor methods and the toolkit's gradients), so the
driver can validate specs with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

GRASP_TEMPERATURE = 200.0  # Synaptic-Flow / GraSP default: logits are divided by this


@dataclass(frozen=True)
class Criterion:
    name: str
    score: Callable
    description: str
    needs_data: bool = False   # scores a sample of training examples (samples_per_class per class)
    rounds: int = 1            # default number of pruning rounds
    plugin: str | None = None  # the plugin module that registered it (None: built in)
    options: type | None = None  # its typed options (a pydantic class), passed as `score(s, **options)`; None: none


CRITERIA: dict[str, Criterion] = {}


def criterion(description: str, *, needs_data: bool = False, rounds: int = 1):
    def register(fn: Callable) -> Callable:
        CRITERIA[fn.__name__] = Criterion(fn.__name__, fn, description, needs_data, rounds)
        return fn
    return register


@criterion("i.i.d. standard normal scores (random pruning)")
def random(s):
    return {n: s.gaussian_like(w) for n, w in s.weights.items()}


@criterion("|θ| (magnitude)")
def magnitude(s):
    return {n: w.abs() for n, w in s.weights.items()}


@criterion("SNIP, |θ · ∂L/∂θ| (Lee et al. 2019)", needs_data=True)
def snip(s):
    g = s.loss_gradient()
    return {n: (w * g[n]).abs() for n, w in s.weights.items()}


@criterion("GraSP, θ · Hg of the loss of logits / 200, the smallest pruned (Wang et al. 2020)", needs_data=True)
def grasp(s):
    hg = s.hessian_gradient(GRASP_TEMPERATURE)
    return {n: w * hg[n] for n, w in s.weights.items()}


@criterion("GraSP-magnitude, |θ · Hg|, the smallest pruned (Frankle et al. 2021)", needs_data=True)
def grasp_magnitude(s):
    hg = s.hessian_gradient(GRASP_TEMPERATURE)
    return {n: (w * hg[n]).abs() for n, w in s.weights.items()}


@criterion("SynFlow, |θ · ∂R/∂θ| with R the output sum of the network with |θ| on an all-ones input, data-free "
           "(Tanaka et al. 2020)", rounds=100)
def synflow(s):
    g = s.synflow_gradient()
    return {n: (w.abs().to(g[n].dtype) * g[n]).abs() for n, w in s.weights.items()}
