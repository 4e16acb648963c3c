"""One-shot saliency scores (random, magnitude, SNIP, GraSP, SynFlow) and the masks they give.

Every criterion follows the keep-largest convention: the weights with the highest scores
survive (GraSP's score is θ·Hg, so its smallest values are pruned, as in the paper).

Scoring never touches the model: forwards go through `torch.func.functional_call` with
substituted tensors, gradients come from `torch.autograd.grad` (so `.grad` stays as it was),
and the only state changed while scoring, the train/eval flags, is restored afterwards.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workers import masks
from workers.masks import Mask

CRITERIA = ("random", "magnitude", "snip", "grasp", "synflow")
GRASP_TEMPERATURE = 200.0  # Synaptic-Flow / GraSP default: logits are divided by this
SYNFLOW_ROUNDS = 100

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def score(criterion: str, model: nn.Module, names: list[str], batches: Batches, generator: torch.Generator, *,
          mask: Mask | None = None, input_shape: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """Per-weight scores of the prunable tensors `names`; higher means more worth keeping.

    `mask` (optional) is applied to the weights while scoring, so pruned weights score as
    zero-valued weights.  `batches` are (x, y) pairs on the model's device; random,
    magnitude and SynFlow ignore them (SynFlow only reads the input shape from the first
    one when `input_shape` is not given).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    weights = _masked_weights(model, names, mask)
    if criterion == "random":
        # Drawn on the CPU so the same generator gives the same scores on every device.
        return {n: torch.randn(w.shape, generator=generator).to(w.device) for n, w in weights.items()}
    if criterion == "magnitude":
        return {n: w.abs() for n, w in weights.items()}
    with _eval_mode(model):
        if criterion == "synflow":
            return _synflow(model, weights, _synflow_input_shape(model, batches, input_shape))
        if not batches:
            raise ValueError(f"{criterion} needs at least one batch of training data")
        if criterion == "snip":
            return _snip(model, weights, batches)
        return _grasp(model, weights, batches)


def oneshot_mask(criterion: str, model: nn.Module, names: list[str], density: float, batches: Batches,
                 generator: torch.Generator, rounds: int | None = None, invert: bool = False, *,
                 input_shape: tuple[int, ...] | None = None,
                 on_round: Callable[[int, Mask], None] | None = None) -> Mask:
    """Global top-⌊density·d⌋ mask by `criterion`, rescoring over `rounds` rounds.

    Round r keeps ⌊κ^(r/R)·d⌋ weights chosen among the survivors of round r-1, so the
    masks shrink monotonically and the last one keeps exactly ⌊κ·d⌋.  SynFlow defaults to
    100 rounds, every other criterion to 1.  `invert` keeps the lowest scores instead (the
    score-inversion sanity check).  `on_round(r, mask)` sees each round's mask.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {criterion!r}; known: {', '.join(CRITERIA)}")
    if rounds is None:
        rounds = SYNFLOW_ROUNDS if criterion == "synflow" else 1
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds}")
    rounds = int(rounds)
    total = sum(p.numel() for p in masks.prunable_params(model, names).values())
    masks.keep_count(total, density)  # validates the density before any work
    mask = masks.full_mask(model, names)
    for r in range(1, rounds + 1):
        scores = score(criterion, model, names, batches, generator, mask=mask, input_shape=input_shape)
        scores = masks.restrict_to_survivors(scores, mask, invert)
        mask = masks.global_topk(scores, masks.keep_count(total, density ** (r / rounds)), generator,
                                 largest=not invert)
        if on_round is not None:
            on_round(r, mask)
    return mask


def per_class_sample(x: torch.Tensor, y: torch.Tensor, per_class: int, num_classes: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` random training examples of every class, in a seeded random order.

    Shuffled across classes so that splitting into batches mixes the classes.
    """
    if per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {per_class}")
    labels = y.detach().cpu()
    chosen = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} training examples, fewer than "
                             f"samples_per_class={per_class}")
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:per_class]])
    picked = torch.cat(chosen)
    picked = picked[torch.randperm(len(picked), generator=generator)].to(x.device)
    return x[picked], y[picked]


# --- criteria that need gradients ---------------------------------------------------------

def _snip(model: nn.Module, weights: dict[str, torch.Tensor], batches: Batches) -> dict[str, torch.Tensor]:
    """|θ · ∂L/∂θ| with L the mean cross-entropy of a batch, gradients summed over batches."""
    leaves = _leaves(weights)
    total = {n: torch.zeros_like(w) for n, w in weights.items()}
    for x, y in batches:
        loss = F.cross_entropy(_forward(model, leaves, x), y)
        for n, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)):
            if g is not None:
                total[n] += g
    return {n: (weights[n] * total[n]).abs() for n in weights}


def _grasp(model: nn.Module, weights: dict[str, torch.Tensor], batches: Batches) -> dict[str, torch.Tensor]:
    """θ · (H g) with L the mean cross-entropy of logits / 200.

    Pass 1 sums the gradient g over the batches (no graph).  Pass 2 backpropagates
    z = gᵀ∇L per batch, whose gradient is H g, summed over the batches.
    """
    leaves = _leaves(weights)
    params = list(leaves.values())
    g = [torch.zeros_like(w) for w in params]
    for x, y in batches:
        loss = F.cross_entropy(_forward(model, leaves, x) / GRASP_TEMPERATURE, y)
        for acc, grad in zip(g, torch.autograd.grad(loss, params, allow_unused=True)):
            if grad is not None:
                acc += grad
    hg = [torch.zeros_like(w) for w in params]
    for x, y in batches:
        loss = F.cross_entropy(_forward(model, leaves, x) / GRASP_TEMPERATURE, y)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        z = sum((gi * grad).sum() for gi, grad in zip(g, grads) if grad is not None)
        if not isinstance(z, torch.Tensor) or not z.requires_grad:
            continue  # the loss is linear in these weights for this batch: H g = 0
        for acc, h in zip(hg, torch.autograd.grad(z, params, allow_unused=True)):
            if h is not None:
                acc += h
    return {n: weights[n] * h for n, h in zip(leaves, hg)}


def _synflow(model: nn.Module, weights: dict[str, torch.Tensor], input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """|θ · ∂R/∂θ| with R the summed output of the network with every parameter and buffer
    replaced by its absolute value, on a single all-ones input.

    Runs in float64 (products of |θ| over many layers overflow float32 in deep nets), so
    the scores come back as float64.  Masked weights enter as zeros and score zero.
    """
    device = next(iter(weights.values())).device
    dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    absolute = {n: p.detach().abs().to(dtype) for n, p in model.named_parameters()}
    for n, b in model.named_buffers():
        # Eval-mode BN with |running stats| is a fixed positive affine map; integer
        # buffers (num_batches_tracked) are left alone.
        absolute[n] = b.detach().abs().to(dtype) if b.is_floating_point() else b
    leaves = {n: w.detach().abs().to(dtype).requires_grad_(True) for n, w in weights.items()}
    absolute.update(leaves)
    ones = torch.ones((1, *input_shape), dtype=dtype, device=device)
    out = functional_call(model, absolute, (ones,))
    grads = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
    return {n: (w * g).abs().detach() if g is not None else torch.zeros_like(w).detach()
            for (n, w), g in zip(leaves.items(), grads)}


def _synflow_input_shape(model: nn.Module, batches: Batches, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    if batches:
        return tuple(batches[0][0].shape[1:])
    if getattr(model, "input_shape", None) is not None:
        return tuple(model.input_shape)
    raise ValueError("synflow needs the per-example input shape: pass input_shape= or one batch of data")


# --- plumbing -------------------------------------------------------------------------------

def _masked_weights(model: nn.Module, names: list[str], mask: Mask | None) -> dict[str, torch.Tensor]:
    """Detached copies-by-value of the prunable weights, with the mask applied if given."""
    params = masks.prunable_params(model, names)
    out = {}
    for n, p in params.items():
        w = p.detach()
        out[n] = w * mask[n].to(w.device, w.dtype) if mask is not None else w.clone()
    return out


def _leaves(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: w.detach().clone().requires_grad_(True) for n, w in weights.items()}


def _forward(model: nn.Module, replaced: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Forward with the prunable weights replaced and every other parameter held fixed."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    params.update(replaced)
    return functional_call(model, params, (x,))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode while scoring; every module's own train/eval flag is restored afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in flags.items():
            m.training = training
