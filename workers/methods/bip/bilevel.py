"""BiP: pruning as bi-level optimisation (Zhang et al., NeurIPS 2022, "Advancing Model Pruning via
Bi-level Optimization"; code github.com/OPTML-Group/BiP @ c51fc35).

    min_m  ℓ(m ⊙ θ*(m))   s.t.  θ*(m) = argmin_θ ℓ(m ⊙ θ) + (γ/2)‖θ‖²,   m ∈ {0,1}^d, ‖m‖₀ = k

The mask is the global top-k of |s| over real-valued scores s (one per prunable weight, started
at the trained weights: the code's `scaled_score_init`), recomputed before every step.  Each
iteration alternates
  * lower level: SGD on θ (all trainable parameters) with the weights θ ⊙ m on one batch; γ is the
    weight decay, which shrinks pruned θ too, so a weight that re-enters the mask resumes from its
    decayed value;
  * upper level: one SGD step on s with the implicit gradient on another batch.  With z = m ⊙ θ and
    g = ∂ℓ/∂z, the Hessian-free assumption and the bilinearity of m ⊙ θ give
        dℓ/dm = ∇_m ℓ − (1/γ) ∇_z ℓ ⊙ ∇_θ ℓ = θ ⊙ g − (1/γ) m ⊙ g²,
    passed to s straight through the top-k and through |s| (× sign s).  `implicit_gradient="code"`
    uses the authors' code's form instead: ∂ℓ/∂s − (1/γ)(∂ℓ/∂s)², both factors being the score
    gradient of the same batch (trainer/bilevel.py).  `ig_scale` is that 1/γ (bip.yml's lr2);
    the code decouples it from the lower level's weight decay, and so does this module.

Schedules per BiP epoch e of E: weights lr·½(1 + cos(πe/E)); scores mask_lr, ×0.1 from E/2,
×0.01 from 3E/4 (utils/schedules.py step_schedule, which bip.yml's `mask_lr_schedule: step`
selects).  After the search the model holds m ⊙ θ, which the authors evaluate as it is (README:
fine-tuning "is not necessary as we claimed in the paper", but "highly recommended" below 1 %
density); their fine-tuning (finetune.yml) trains it with the mask fixed for as many epochs as
the search.

The knobs' defaults, with the config keys they come from, are the method configuration's
(`workers.methods.bip.BiPMethod`); `BiPConfig` reads them from there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workers import liveness, masks, work
from workers.data.dataset import Dataset
from workers.masks import Mask
from workers.methods.bip import IMPLICIT_GRADIENTS, BiPMethod
from workers.training.loop import Diverged

MASK_LR_DROPS = ((0.5, 0.1), (0.75, 0.01))
_KNOBS = BiPMethod.model_fields


@dataclass(kw_only=True)
class BiPConfig:
    """One BiP run: its length and batch size (from the sweep) and the method's knobs."""
    epochs: int
    batch_size: int
    lr: float = _KNOBS["lr"].default              # the weights' (lower level's) learning rate, not the recipe's
    momentum: float = _KNOBS["momentum"].default
    weight_decay: float = _KNOBS["weight_decay"].default
    mask_lr: float = _KNOBS["mask_lr"].default
    mask_momentum: float = _KNOBS["mask_momentum"].default
    mask_weight_decay: float = _KNOBS["mask_weight_decay"].default
    ig_scale: float = _KNOBS["ig_scale"].default
    implicit_gradient: str = _KNOBS["implicit_gradient"].default
    lower_steps: int = _KNOBS["lower_steps"].default

    def __post_init__(self):
        if self.implicit_gradient not in IMPLICIT_GRADIENTS:
            raise ValueError(f"unknown BiP implicit_gradient {self.implicit_gradient!r}; "
                             f"known: {', '.join(IMPLICIT_GRADIENTS)}")
        for field in ("epochs", "batch_size", "lower_steps"):
            value = getattr(self, field)
            if int(value) != value or value < 1:
                raise ValueError(f"BiP {field} must be an integer >= 1, got {value}")
            setattr(self, field, int(value))
        for field in ("lr", "mask_lr"):
            if not getattr(self, field) > 0:
                raise ValueError(f"BiP {field} must be > 0, got {getattr(self, field)}")
        for field in ("momentum", "mask_momentum"):
            if not 0 <= getattr(self, field) < 1:
                raise ValueError(f"BiP {field} must be in [0, 1), got {getattr(self, field)}")
        for field in ("weight_decay", "mask_weight_decay", "ig_scale"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"BiP {field} must be >= 0, got {getattr(self, field)}")


def weight_lr(cfg: BiPConfig, epoch: int) -> float:
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))


def mask_lr(cfg: BiPConfig, epoch: int) -> float:
    factor = 1.0
    for at, drop in MASK_LR_DROPS:
        if epoch >= at * cfg.epochs:
            factor = drop
    return cfg.mask_lr * factor


def upper_gradient(score: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor,
                   ig_scale: float, form: str = "paper") -> torch.Tensor:
    """The score gradient of one layer: `grad` is ∂ℓ/∂z at z = mask ⊙ weight."""
    direct = torch.sign(score) * weight * grad          # ∂ℓ/∂s straight through top-k and |s|
    if form == "paper":
        return direct - ig_scale * torch.sign(score) * mask.to(grad.dtype) * grad * grad
    if form == "code":
        return direct - ig_scale * direct * direct
    raise ValueError(f"unknown BiP implicit_gradient {form!r}; known: {', '.join(IMPLICIT_GRADIENTS)}")


class BiLevel:
    """One BiP run's state: the model's parameters θ (lower level) and the scores s (upper level)."""

    def __init__(self, model: nn.Module, names: list[str], density: float, cfg: BiPConfig,
                 generator: torch.Generator):
        self.model, self.names, self.cfg, self.generator = model, list(names), cfg, generator
        self.params = dict(model.named_parameters())
        total = sum(self.params[n].numel() for n in self.names)
        self.keep = masks.keep_count(total, density)
        if self.keep == 0:
            raise ValueError(f"BiP at density {density} keeps none of the {total} prunable weights")
        # A copy: the authors' `popup_scores.data = weight.data` makes the scores share the weights'
        # storage, so each level's step would move the other's variable too.
        self.scores = {n: self.params[n].detach().clone().requires_grad_() for n in self.names}
        self.weight_opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.score_opt = torch.optim.SGD(list(self.scores.values()), lr=cfg.mask_lr,
                                         momentum=cfg.mask_momentum, weight_decay=cfg.mask_weight_decay)

    def mask(self) -> Mask:
        return masks.global_topk({n: s.detach().abs() for n, s in self.scores.items()}, self.keep, self.generator)

    def set_epoch(self, epoch: int) -> None:
        for group in self.weight_opt.param_groups:
            group["lr"] = weight_lr(self.cfg, epoch)
        for group in self.score_opt.param_groups:
            group["lr"] = mask_lr(self.cfg, epoch)

    def lower_step(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> torch.Tensor:
        """One SGD step on θ for ℓ(m ⊙ θ) + (γ/2)‖θ‖²; returns the batch loss (on the device)."""
        weights = {n: self.params[n] * mask[n].to(self.params[n].dtype) for n in self.names}
        loss = F.cross_entropy(functional_call(self.model, weights, (x,)), y)
        self.weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.weight_opt.step()
        return loss.detach()

    def upper_step(self, x: torch.Tensor, y: torch.Tensor, mask: Mask) -> torch.Tensor:
        """One SGD step on s with the implicit gradient at the current θ; returns the batch loss."""
        z = {n: (self.params[n].detach() * mask[n].to(self.params[n].dtype)).requires_grad_()
             for n in self.names}
        loss = F.cross_entropy(functional_call(self.model, z, (x,)), y)
        grads = torch.autograd.grad(loss, [z[n] for n in self.names])
        with torch.no_grad():
            for n, g in zip(self.names, grads):
                self.scores[n].grad = upper_gradient(self.scores[n].detach(), self.params[n].detach(), mask[n], g,
                                                     self.cfg.ig_scale, self.cfg.implicit_gradient)
        self.score_opt.step()
        return loss.detach()


@dataclass
class BiPResult:
    mask: Mask
    scores: dict[str, torch.Tensor]
    info: dict


def bip_search(model: nn.Module, names: list[str], data: Dataset, density: float, cfg: BiPConfig,
               generator: torch.Generator, on_epoch: Callable[[int, dict], None] | None = None) -> BiPResult:
    """Run BiP on `model` (the dense trained network) for cfg.epochs over data's training set.

    Trains the model in place and leaves m ⊙ θ in it (the BiP network); its modes are restored.
    Batches: two independent orders of the training set from `generator` (the authors zip two
    loaders over it), augmented when the data set has an augmentation.  Non-finite scores raise
    `Diverged` at the next step, a non-finite loss at the end of its epoch.  `on_epoch(epoch, info)`
    sees each epoch's measurements; the result's `info` is the last epoch's: kept, overlap_with_initial
    (share of the kept weights that the starting magnitude mask keeps too), changed_this_epoch,
    score_threshold / score_mean_kept / score_mean_pruned (of |s|), steps, lower_steps, loss, lr, mask_lr.
    The top-k that makes each step's mask reads a few values back from the device.
    """
    if not 0 < density < 1:
        raise ValueError(f"BiP density must be in (0, 1), got {density}")
    x = data.x_train
    if len(x) == 0:
        raise ValueError("BiP needs a non-empty training set")
    state = BiLevel(model, names, density, cfg, generator)
    device = x.device
    aug_gen = torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
    lower_batches = _batches(len(x), cfg.batch_size, generator)
    where = work.positions(model, x[0])
    final = initial = _mask(state, 0, 0)
    flags = {m: m.training for m in model.modules()}
    model.train()
    steps = lower = 0
    info: dict = {}
    try:
        for epoch in range(cfg.epochs):
            state.set_epoch(epoch)
            order = torch.randperm(len(x), generator=generator).to(device)
            # Summed on the device and read once per epoch: a per-step read would stall a GPU.
            epoch_loss = torch.zeros((), dtype=torch.float64, device=device)
            at_start = final
            for start in range(0, len(x), cfg.batch_size):
                liveness.beat()
                mask = _mask(state, epoch, steps)  # the scores move only in the upper step: one top-k a step
                macs = work.macs(model, where, mask)
                for _ in range(cfg.lower_steps):
                    batch = next(lower_batches)
                    state.lower_step(*_batch(data, batch.to(device), aug_gen), mask)
                    work.forward("search", len(batch), macs)
                    work.backward("search", len(batch), macs)
                    lower += 1
                idx = order[start:start + cfg.batch_size]
                epoch_loss += state.upper_step(*_batch(data, idx, aug_gen), mask).double() * len(idx)
                work.forward("search", len(idx), macs)
                work.backward("search", len(idx), macs)
                steps += 1
                # what a search that diverges in this epoch's next step has run of it
                work.progress("search", start // cfg.batch_size + 1, math.ceil(len(x) / cfg.batch_size))
            work.epochs("search", 1, 1)
            if not math.isfinite(float(epoch_loss)):
                raise Diverged(f"BiP loss is not finite in BiP epoch {epoch + 1} (step {steps})")
            final = _mask(state, epoch, steps)
            info = _measure(state, final, initial, at_start) | {
                "epoch": epoch + 1, "steps": steps, "lower_steps": lower, "loss": float(epoch_loss) / len(x),
                "lr": weight_lr(cfg, epoch), "mask_lr": mask_lr(cfg, epoch)}
            if data.x_val is not None:  # the BiP network so far on the validation split: what a tuner can stop on
                info["val_accuracy"] = _validation_accuracy(model, final, data)
                work.forward("eval", len(data.x_val), work.macs(model, where, final))
            if on_epoch is not None:
                on_epoch(epoch, info)
        masks.apply_mask(model, final)
    finally:
        for m, training in flags.items():
            m.training = training
    return BiPResult(final, {n: s.detach() for n, s in state.scores.items()}, info)


@torch.no_grad()
def _validation_accuracy(model: nn.Module, mask: Mask, data: Dataset) -> float:
    """Validation accuracy of m ⊙ θ in eval mode, leaving the model's weights, buffers and modes as they were."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    params.update({n: params[n] * m.to(params[n].dtype) for n, m in mask.items()})
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        correct = 0
        for i in range(0, len(data.x_val), 1000):
            out = functional_call(model, params, (data.x_val[i:i + 1000],))
            correct += int((out.argmax(1) == data.y_val[i:i + 1000]).sum())
    finally:
        for m, training in flags.items():
            m.training = training
    return correct / len(data.x_val)


def _mask(state: BiLevel, epoch: int, steps: int) -> Mask:
    try:
        return state.mask()
    except ValueError:
        if any(bool(torch.isnan(s).any()) for s in state.scores.values()):
            raise Diverged(f"BiP scores are not finite in BiP epoch {epoch + 1} (step {steps + 1})") from None
        raise


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of a fresh permutation, pass after pass, without end."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]


def _batch(data: Dataset, idx: torch.Tensor, aug_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = data.x_train[idx]
    if data.augment is not None:
        x = data.augment(x, aug_gen)
    return x, data.y_train[idx]


def _measure(state: BiLevel, final: Mask, initial: Mask, at_start: Mask) -> dict:
    kept = masks.count_kept(final)
    magnitudes = torch.cat([state.scores[n].detach().abs().reshape(-1) for n in state.names])
    flat = torch.cat([final[n].reshape(-1) for n in state.names])
    return {"kept": kept,
            "overlap_with_initial": sum(int((final[n] & initial[n]).sum()) for n in final) / kept,
            "changed_this_epoch": sum(int((final[n] ^ at_start[n]).sum()) for n in final),
            "score_threshold": float(magnitudes[flat].min()),
            "score_mean_kept": float(magnitudes[flat].mean()),
            "score_mean_pruned": float(magnitudes[~flat].mean())}
