"""The toolkit a one-shot criterion scores with, and the (iterative) mask it gives.

Scoring never touches the model: forwards go through `torch.func.functional_call` with substituted tensors,
gradients come from `torch.autograd.grad` (so `.grad` stays as it was), and the only state changed while
scoring, the train/eval flags, is restored afterwards.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workers import liveness, masks, work
from workers.masks import Mask
from workers.methods.oneshot.criteria import CRITERIA, Criterion

Batches = list[tuple[torch.Tensor, torch.Tensor]]


class Scoring:
    """What a criterion may ask about the network it scores.

    `weights` are detached copies of the prunable weights with the current mask applied (pruned weights score
    as zero-valued weights); the gradients are of the model with those weights, every other parameter fixed,
    in eval mode.
    """

    def __init__(self, criterion: str, model: nn.Module, names: list[str], batches: Batches,
                 generator: torch.Generator, mask: Mask | None = None, input_shape: tuple[int, ...] | None = None):
        self.criterion, self.model, self.batches = criterion, model, batches
        self.generator, self.input_shape = generator, input_shape
        params = masks.prunable_params(model, names)
        self.weights = {n: p.detach() * mask[n].to(p.device, p.dtype) if mask is not None else p.detach().clone()
                        for n, p in params.items()}
        self.mask = mask

    def macs(self) -> int:
        """Multiply-accumulates of one example's forward pass through the network being scored (workers/work.py)."""
        if self.batches:
            example = self.batches[0][0][0]
        else:
            device = next(iter(self.weights.values())).device
            example = torch.zeros(self._synflow_input_shape(), device=device)
        return work.macs(self.model, work.positions(self.model, example), self.mask)

    def gaussian_like(self, w: torch.Tensor) -> torch.Tensor:
        # Drawn on the CPU so the same generator gives the same scores on every device.
        return torch.randn(w.shape, generator=self.generator).to(w.device)

    def _data(self) -> Batches:
        if not self.batches:
            raise ValueError(f"{self.criterion} needs at least one batch of training data")
        return self.batches

    def loss_gradient(self, temperature: float = 1.0) -> dict[str, torch.Tensor]:
        """∂L/∂θ, L the mean cross-entropy of logits / temperature of each batch, summed over the batches."""
        leaves = _leaves(self.weights)
        total = {n: torch.zeros_like(w) for n, w in leaves.items()}
        batches = self._data()
        macs = self.macs()
        with _eval_mode(self.model):
            for x, y in batches:
                liveness.beat()
                loss = F.cross_entropy(_forward(self.model, leaves, x) / temperature, y)
                for n, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)):
                    if g is not None:
                        total[n] += g
                work.forward("search", len(x), macs)
                work.backward("search", len(x), macs)
        return total

    def hessian_gradient(self, temperature: float = 1.0) -> dict[str, torch.Tensor]:
        """H g with g = `loss_gradient(temperature)`: per batch, the gradient of z = gᵀ∇L, summed over batches."""
        g = self.loss_gradient(temperature)
        leaves = _leaves(self.weights)
        params = list(leaves.values())
        hg = {n: torch.zeros_like(w) for n, w in leaves.items()}
        batches = self._data()
        macs = self.macs()
        with _eval_mode(self.model):
            for x, y in batches:
                liveness.beat()
                loss = F.cross_entropy(_forward(self.model, leaves, x) / temperature, y)
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                work.forward("search", len(x), macs)
                work.backward("search", len(x), macs)
                z = sum((g[n] * grad).sum() for n, grad in zip(leaves, grads) if grad is not None)
                if not isinstance(z, torch.Tensor) or not z.requires_grad:
                    continue  # the loss is linear in these weights for this batch: H g = 0
                work.backward("search", len(x), macs, double=True)
                for n, h in zip(leaves, torch.autograd.grad(z, params, allow_unused=True)):
                    if h is not None:
                        hg[n] += h
        return hg

    def hessian_vector(self, vectors: dict[str, torch.Tensor], temperature: float = 1.0) -> dict[str, torch.Tensor]:
        """H v for H the Hessian of the loss of `loss_gradient(temperature)` in the scored weights (an exact
        product per batch, summed over the batches); `vectors` has a tensor of each weight's shape."""
        leaves = _leaves(self.weights)
        params = list(leaves.values())
        hv = {n: torch.zeros_like(w) for n, w in leaves.items()}
        with _eval_mode(self.model):
            for x, y in self._data():
                liveness.beat()
                loss = F.cross_entropy(_forward(self.model, leaves, x) / temperature, y)
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                z = sum((vectors[n] * grad).sum() for n, grad in zip(leaves, grads) if grad is not None)
                if not isinstance(z, torch.Tensor) or not z.requires_grad:
                    continue  # the loss is linear in these weights for this batch: H v = 0
                for n, h in zip(leaves, torch.autograd.grad(z, params, allow_unused=True)):
                    if h is not None:
                        hv[n] += h
        return hv

    def synflow_gradient(self) -> dict[str, torch.Tensor]:
        """∂R/∂|θ| for R the summed output of the network with every parameter and buffer replaced by its
        absolute value, on one all-ones input.

        In float64 (products of |θ| over many layers overflow float32 in deep nets). Eval-mode BN with |running
        stats| is a fixed positive affine map; integer buffers (num_batches_tracked) are left alone.
        """
        model = self.model
        device = next(iter(self.weights.values())).device
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        absolute = {n: p.detach().abs().to(dtype) for n, p in model.named_parameters()}
        for n, b in model.named_buffers():
            absolute[n] = b.detach().abs().to(dtype) if b.is_floating_point() else b
        leaves = {n: w.abs().to(dtype).requires_grad_(True) for n, w in self.weights.items()}
        absolute.update(leaves)
        ones = torch.ones((1, *self._synflow_input_shape()), dtype=dtype, device=device)
        with _eval_mode(model):
            out = functional_call(model, absolute, (ones,))
        grads = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
        macs = self.macs()
        work.forward("search", 1, macs)
        work.backward("search", 1, macs)
        return {n: g if g is not None else torch.zeros_like(w) for (n, w), g in zip(leaves.items(), grads)}

    def _synflow_input_shape(self) -> tuple[int, ...]:
        if self.input_shape is not None:
            return tuple(int(s) for s in self.input_shape)
        if self.batches:
            return tuple(self.batches[0][0].shape[1:])
        raise ValueError("synflow needs the per-example input shape: pass input_shape= or one batch of data")


def criterion_of(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {name!r}; known: {', '.join(CRITERIA)}")
    return CRITERIA[name]


def score(name: str, model: nn.Module, names: list[str], batches: Batches, generator: torch.Generator, *,
          mask: Mask | None = None, input_shape: tuple[int, ...] | None = None,
          options: dict | None = None) -> dict[str, torch.Tensor]:
    """Per-weight scores of the prunable tensors `names` by criterion `name` with its `options` (validated by
    `criterion_options`); higher means more worth keeping. Scores that are not one finite-or-not tensor per
    prunable weight, of its shape, are refused on one line."""
    criterion = criterion_of(name)
    label = f"criterion {name}" + (f" (plugin {criterion.plugin})" if criterion.plugin else "")
    toolkit = Scoring(name, model, names, batches, generator, mask, input_shape)
    if criterion.plugin is None:
        scores = criterion.score(toolkit, **(options or {}))
    else:
        try:
            scores = criterion.score(toolkit, **(options or {}))
        except Exception as err:  # noqa: BLE001 - a plugin's failure, on one line naming it
            from workers.plugins import PluginError, failure_text

            raise PluginError(f"{label}: raised {failure_text(err)}") from None
    return check_scores(label, scores, toolkit.weights)


def check_scores(label: str, scores, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scores detached, if they are a tensor of each weight's shape for exactly the prunable weights."""
    from workers.plugins import PluginError

    if not isinstance(scores, dict):
        raise PluginError(f"{label}: returned {type(scores).__name__}, expected {{parameter name: scores}}")
    unknown = [n for n in scores if n not in weights]
    if unknown:
        raise PluginError(f"{label}: scored {', '.join(map(repr, unknown))}, not a prunable parameter; prunable: "
                          f"{', '.join(weights)}")
    missing = [n for n in weights if n not in scores]
    if missing:
        raise PluginError(f"{label}: gave no scores for {', '.join(missing)}")
    for n, w in weights.items():
        if not isinstance(scores[n], torch.Tensor) or tuple(scores[n].shape) != tuple(w.shape):
            shape = tuple(scores[n].shape) if isinstance(scores[n], torch.Tensor) else type(scores[n]).__name__
            raise PluginError(f"{label}: the scores of {n} have shape {shape}, its weight {tuple(w.shape)}")
    return {n: s.detach() for n, s in scores.items()}


def oneshot_mask(name: str, model: nn.Module, names: list[str], density: float, batches: Batches,
                 generator: torch.Generator, rounds: int | None = None, invert: bool = False, *,
                 input_shape: tuple[int, ...] | None = None, options: dict | None = None,
                 on_round: Callable[[int, Mask], None] | None = None) -> Mask:
    """Global top-⌊density·d⌋ mask by criterion `name` (with its `options`), rescoring over `rounds` rounds.

    Round r keeps ⌊κ^(r/R)·d⌋ weights chosen among the survivors of round r-1, so the masks shrink
    monotonically and the last one keeps exactly ⌊κ·d⌋. `rounds` defaults to the criterion's own (100 for
    SynFlow). `invert` keeps the lowest scores instead (the score-inversion sanity check).
    """
    spec = criterion_of(name)
    rounds = spec.rounds if rounds is None else rounds
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds}")
    rounds = int(rounds)
    total = sum(p.numel() for p in masks.prunable_params(model, names).values())
    masks.keep_count(total, density)  # validates the density before any work
    mask = masks.full_mask(model, names)
    for r in range(1, rounds + 1):
        liveness.beat()
        scores = score(name, model, names, batches, generator, mask=mask, input_shape=input_shape, options=options)
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
