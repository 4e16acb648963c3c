"""A stage's machine-independent work, counted in the loops that do it: epochs, examples passed forward and
backward, and FLOPs of the masked network. Never derived from wall time, so a rerun counts the same numbers
on any machine under any load.

The loops report to the meter `run_stage` opens around a stage (`counting`); outside one (a unit test calling
`train` directly) they report to nothing. Meters nest: a meter that closes adds what it counted to the one
around it, so a Tune trial's own meter sums the stages it ran, and `so_far` reads the work done up to now (the
iterations of a training loop still running included): what a trial that Tune stops there ran.

What one example costs:

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
    # Per phase, the iterations a loop still running has done and its iterations per epoch (`progress`): work
    # done, which `epochs` counts when the loop ends.
    running: dict[str, tuple[int, int]] = field(default_factory=dict)

    def totals(self) -> dict:
        return {"train_epochs": math.fsum(self.epochs["train"]), "search_epochs": math.fsum(self.epochs["search"]),
                "forward_examples": self.forward["train"] + self.forward["search"],
                "backward_examples": self.backward["train"] + self.backward["search"],
                "eval_examples": self.forward["eval"],
                "train_flops": self.flops["train"], "search_flops": self.flops["search"],
                "eval_flops": self.flops["eval"]}

    def settled(self) -> "Meter":
        """A copy with the running loops' iterations counted as done (what a loop cut short has run)."""
        out = copy.deepcopy(self)
        for phase, (iterations, per_epoch) in out.running.items():
            if iterations:
                out.epochs[phase].append(iterations / per_epoch)
        out.running = {}
        return out

    def add(self, other: "Meter") -> None:
        """Add `other`'s settled counts to this meter's (its epochs as parts, so the sum stays exactly rounded)."""
        other = other.settled()
        for phase in PHASES:
            self.forward[phase] += other.forward[phase]
            self.backward[phase] += other.backward[phase]
            self.flops[phase] += other.flops[phase]
        for phase, parts in other.epochs.items():
            self.epochs[phase].extend(parts)


_meters: list[Meter] = []


def _current() -> Meter | None:
    return _meters[-1] if _meters else None


@contextlib.contextmanager
def counting() -> Iterator[Meter]:
    """Count the work done inside the block into a fresh meter; when the block ends, however it ends, what it
    counted is added to the meter around it, if any (the work was done either way)."""
    meter = Meter()
    _meters.append(meter)
    try:
        yield meter
    finally:
        _meters.pop()
        if _meters:
            _meters[-1].add(meter)


def so_far() -> dict | None:
    """The totals of every open meter together (the iterations of running loops included): the work done so far
    inside the outermost `counting` block; None outside one."""
    if not _meters:
        return None
    total = Meter()
    for meter in _meters:
        total.add(meter)
    return total.totals()


def _check(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"unknown work phase {phase!r}; known: {', '.join(PHASES)}")


def forward(phase: str, examples: int, macs: int) -> None:
    """`examples` examples passed forward through a network of `macs` multiply-accumulates per example."""
    _check(phase)
    meter = _current()
    if meter is not None:
        meter.forward[phase] += int(examples)
        meter.flops[phase] += 2 * int(macs) * int(examples)


def backward(phase: str, examples: int, macs: int, double: bool = False) -> None:
    """`examples` examples passed backward (twice the forward's FLOPs; a double backward twice that)."""
    _check(phase)
    meter = _current()
    if meter is not None:
        meter.backward[phase] += int(examples)
        meter.flops[phase] += (8 if double else 4) * int(macs) * int(examples)


def epochs(phase: str, iterations: int, iterations_per_epoch: int) -> None:
    """`iterations` steps of `iterations_per_epoch` per epoch done in `phase` (train or search)."""
    _check_epoch_phase(phase)
    meter = _current()
    if meter is not None:
        meter.running.pop(phase, None)
        if iterations:
            meter.epochs[phase].append(iterations / iterations_per_epoch)


def progress(phase: str, iterations: int, iterations_per_epoch: int) -> None:
    """A loop in `phase` has run `iterations` steps so far, which its `epochs` call will count when it ends: until
    then `so_far` counts them (a Tune trial stopped mid-loop ran exactly these)."""
    _check_epoch_phase(phase)
    meter = _current()
    if meter is not None:
        meter.running[phase] = (int(iterations), int(iterations_per_epoch))


def _check_epoch_phase(phase: str) -> None:
    if phase not in ("train", "search"):
        raise ValueError(f"epochs are counted for train and search, not {phase!r}")


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
