"""A stage's machine-independent work, counted in the loops that do it: epochs, examples passed forward and
backward, and FLOPs of the masked network. Never derived from wall time, so a rerun counts the same numbers
on any machine under any load.

The loops report to the meter `run_stage` opens around a stage (`counting`); outside one (a unit test calling
`train` directly) they report to nothing. What one example costs:

- forward: 2 FLOPs (a multiply and an add) per multiply-accumulate of a Linear or Conv weight that the mask
  keeps, at every output position it is applied to: 2 · Σ_l kept_l · positions_l (`macs`). A layer the mask
  does not cover counts all its weights; a relaxed (soft) mask, as in a CTS search, keeps every weight.
- backward: twice the forward (the gradients with respect to each layer's input and to its kept weights,
  as many multiply-accumulates each), the convention of sparse-training FLOP counts. The first layer's input
  gradient, which autograd skips, is counted with the rest; a dense weight gradient that pruned positions
  receive (GMP, GraNet) is not.
- double backward (GraSP's Hessian-gradient product differentiates the backward pass): twice the backward,
  each bilinear multiply-accumulate of the backward differentiated with respect to both of its factors.
- not counted: biases, BatchNorm, activations, pooling, the loss, optimiser steps, mask top-k, augmentation.

Phases: `train` (weight training: warm-up, dense, retraining, IMP levels, GMP/GraNet, BiP fine-tuning),
`search` (mask search and scoring: CTS and BiP searches, SNIP/GraSP/SynFlow scoring) and `eval` (validation and
test evaluation, forward only). `forward_examples` and `backward_examples` count train and search passes;
evaluation is apart (`eval_examples`, `eval_flops`), so the cost of a method does not depend on how often it
was watched.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from workers.masks import Mask

PHASES = ("train", "search", "eval")
_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass
class Meter:
    """Totals of one stage, by phase; integers except epochs (iterations over iterations per epoch, summed
    exactly rounded). `totals` names them as the store's work columns (orchestrator/store/schemas.py WORK_COLUMNS)."""
    epochs: dict[str, list[float]] = field(default_factory=lambda: {"train": [], "search": []})
    forward: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    backward: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    flops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))

    def totals(self) -> dict:
        return {"train_epochs": math.fsum(self.epochs["train"]), "search_epochs": math.fsum(self.epochs["search"]),
                "forward_examples": self.forward["train"] + self.forward["search"],
                "backward_examples": self.backward["train"] + self.backward["search"],
                "eval_examples": self.forward["eval"],
                "train_flops": self.flops["train"], "search_flops": self.flops["search"],
                "eval_flops": self.flops["eval"]}


_meter: Meter | None = None


@contextlib.contextmanager
def counting() -> Iterator[Meter]:
    """Count the work done inside the block into a fresh meter (the previous one, if any, resumes after)."""
    global _meter
    previous, _meter = _meter, Meter()
    try:
        yield _meter
    finally:
        _meter = previous


def _check(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"unknown work phase {phase!r}; known: {', '.join(PHASES)}")


def forward(phase: str, examples: int, macs: int) -> None:
    """`examples` examples passed forward through a network of `macs` multiply-accumulates per example."""
    _check(phase)
    if _meter is not None:
        _meter.forward[phase] += int(examples)
        _meter.flops[phase] += 2 * int(macs) * int(examples)


def backward(phase: str, examples: int, macs: int, double: bool = False) -> None:
    """`examples` examples passed backward (twice the forward's FLOPs; a double backward twice that)."""
    _check(phase)
    if _meter is not None:
        _meter.backward[phase] += int(examples)
        _meter.flops[phase] += (8 if double else 4) * int(macs) * int(examples)


def epochs(phase: str, iterations: int, iterations_per_epoch: int) -> None:
    """`iterations` steps of `iterations_per_epoch` per epoch done in `phase` (train or search)."""
    if phase not in ("train", "search"):
        raise ValueError(f"epochs are counted for train and search, not {phase!r}")
    if _meter is not None and iterations:
        _meter.epochs[phase].append(iterations / iterations_per_epoch)


# ------------------------------------------------------------------ multiply-accumulates of a masked network

_POSITIONS: dict[tuple, dict[str, int]] = {}
# A module's hooks, cleared on the probe (a copy) so that measuring is invisible to whoever hooks the model.
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
          "_forward_hooks_always_called")


def positions(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """{weight name: output positions per example} of every Linear and Conv layer of `model`, for inputs shaped
    like `example` (one example, without the batch dimension): how often each weight is applied to one example.

    Measured by a forward of two examples through a copy of the model on the meta device (shapes only: no
    arithmetic, nothing of the model touched, no hook of it called), in eval mode; remembered per architecture
    (the model's class and repr, which names every layer's shape) and input shape."""
    key = (type(model), repr(model), tuple(example.shape), example.dtype)
    if key in _POSITIONS:
        return _POSITIONS[key]
    probe = copy.deepcopy(model).to("meta").eval()
    for m in probe.modules():
        for hooks in _HOOKS:
            getattr(m, hooks, {}).clear()
    names = {m: f"{n}.weight" if n else "weight" for n, m in probe.named_modules() if isinstance(m, _LAYERS)}
    found: dict[str, int] = dict.fromkeys(names.values(), 0)

    def hook(module, _inputs, output):
        # Per example: the output's entries over its channels (Conv: dim 1; Linear: the last dim), batch of 2.
        channels = module.out_channels if isinstance(module, nn.modules.conv._ConvNd) else module.out_features
        found[names[module]] += output.numel() // (2 * channels)

    for m in names:
        m.register_forward_hook(hook)
    with torch.no_grad():
        probe(torch.zeros((2, *example.shape), dtype=example.dtype, device="meta"))
    _POSITIONS[key] = found
    return found


def macs(model: nn.Module, where: dict[str, int], mask: Mask | None = None) -> int:
    """Multiply-accumulates of one example's forward pass through `model` with `mask` applied: each layer's
    kept weights (all of a layer the mask does not cover) times its output positions (`positions`)."""
    params = dict(model.named_parameters())
    total = 0
    for name, count in where.items():
        kept = int(mask[name].sum()) if mask is not None and name in mask else params[name].numel()
        total += kept * count
    return total
