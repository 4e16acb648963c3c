"""Masked training and evaluation, counted in iterations so any stage can start at the rewind step.

Data order is a pure function of (seed, epoch): every method of a seed sees the same
batches from the rewind point on, whichever stage (or machine) runs it.

The loop never reads a device value back within an epoch (the loss is summed on the
device and checked once per epoch), so a GPU is never stalled by the host, except by
fp16's GradScaler, which checks the gradients for overflow at every step.

A `MaskSchedule` may change the mask while training (gradual pruning, prune-and-regrow): it
sees each step's dense gradients and may return a new mask, which `train` switches to at once.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from workers import liveness, work
from workers.data.dataset import Dataset
from workers.masks import Mask
from workers.rng import Stream, seed_for
from workers.training.recipe import REWIND_PATTERN, Recipe


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    seconds: float
    iterations: int
    test_accuracy: float           # at the end of training
    test_loss: float
    # The evaluation with the best validation accuracy (earliest on ties; the last one without a validation
    # split): its epoch, validation accuracy and test accuracy. The test set never selects anything.
    selected_epoch: float = float("nan")
    val_accuracy: float | None = None
    selected_test_accuracy: float = float("nan")
    # The same evaluations as integer counts, so that paired tests can be exact: correct examples at the end
    # (test_correct) and at the selected evaluation (selected_test_correct, val_correct), out of
    # test_examples / val_examples. None where the split is absent.
    test_correct: int | None = None
    selected_test_correct: int | None = None
    val_correct: int | None = None
    test_examples: int | None = None
    val_examples: int | None = None
    num_classes: int | None = None  # for chance accuracy, 1 / num_classes, which a failed run counts as
    curve: list[dict] = field(default_factory=list)
    mask: Mask | None = None  # the mask in force at the end: the given one, or a schedule's last


class Selection:
    """Keeps the evaluation a result reports: the best validation accuracy among the eligible evaluations
    (earliest on ties), or, without a validation split, the last one."""

    def __init__(self, eligible_from: int):
        self.eligible_from = eligible_from
        self.epoch, self.val_accuracy, self.test_accuracy = float("nan"), None, float("nan")
        self.val_correct, self.test_correct = None, None

    def offer(self, iteration: int, epoch: float, metrics: dict) -> None:
        if iteration < self.eligible_from:
            return
        val = metrics.get("val_accuracy")
        if val is None or self.val_accuracy is None or val > self.val_accuracy:
            self.epoch, self.val_accuracy, self.test_accuracy = epoch, val, metrics.get("test_accuracy", float("nan"))
            self.val_correct, self.test_correct = metrics.get("val_correct"), metrics.get("test_correct")


class MaskSchedule(Protocol):
    """Changes the mask during training.

    `update` is called at every iteration after backward(), when `p.grad` of every prunable
    weight holds its dense gradient (pruned positions included: the forward uses the zeroed
    weights, so autograd still differentiates at the zeros), and before the gradients of pruned
    weights are zeroed and the optimizer steps.  `mask` is the mask in force (bool tensors on
    the weights' device); returning a new one switches to it for this step and all later ones,
    returning None keeps it.  Under fp16 the gradients carry GradScaler's loss scale.
    """

    def update(self, iteration: int, params: dict[str, nn.Parameter], mask: Mask) -> Mask | None: ...


class Diverged(ArithmeticError):
    """The training loss (or the CTS search objective) became non-finite: the stage's result would be
    meaningless, and retrying repeats it.  The message names the epoch."""


def rewind_to_iterations(rewind: str, iterations_per_epoch: int) -> int:
    """'500it' -> 500; '9ep' -> 9 epochs of iterations."""
    match = REWIND_PATTERN.match(rewind)
    if not match:
        raise ValueError(f"rewind must look like '500it' or '9ep', got {rewind!r}")
    num, unit = match.groups()
    return int(num) * (iterations_per_epoch if unit == "ep" else 1)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, epoch, Stream.DATA_ORDER)))


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; known: sgd, adam")


# Keys of evaluate_splits' metrics that are counts, not curve values (the curves table has no column for them).
COUNT_KEYS = ("val_correct", "val_examples", "test_correct", "test_examples")


def evaluate_splits(model: nn.Module, data: Dataset, macs: int) -> dict:
    """Validation (when the dataset has a split) and test (unless removed, while tuning) accuracy, mean loss,
    and the correct-example count and example count behind each accuracy (COUNT_KEYS); counted as evaluation
    work of `macs` multiply-accumulates per example (workers/work.py)."""
    metrics = {}
    for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test)):
        if x is not None:
            correct, examples, loss = evaluate_counts(model, x, y)
            work.forward("eval", examples, macs)
            metrics.update({f"{split}_accuracy": correct / examples, f"{split}_loss": loss,
                            f"{split}_correct": correct, f"{split}_examples": examples})
    return metrics


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on (x, y) in eval mode; restores the previous mode."""
    correct, examples, loss = evaluate_counts(model, x, y, batch_size)
    return correct / examples, loss


@torch.no_grad()
def evaluate_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int = 1000) -> tuple[int, int, float]:
    """(correct examples, examples, mean cross-entropy) on (x, y) in eval mode; restores the previous mode."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        liveness.beat()
        out = model(x[i:i + batch_size])
        loss += float(F.cross_entropy(out, y[i:i + batch_size], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return correct, len(x), loss / len(x)


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context: fp32 runs without one; bf16/fp16 need a CUDA device."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _AUTOCAST_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; known: fp32, {', '.join(_AUTOCAST_DTYPES)}")
    if device.type != "cuda":
        raise RuntimeError(f"training.precision {precision} needs a CUDA device, but this trial's data is on "
                           f"{device.type}: give the trials a GPU (resources.gpus_per_trial) or use fp32")
    return torch.autocast("cuda", dtype=_AUTOCAST_DTYPES[precision])


def train(model: nn.Module, data: Dataset, recipe: Recipe, seed: int, start: int, stop: int,
          mask: Mask | None = None, on_epoch: Callable[[dict], None] | None = None,
          evaluate_at_end: bool = True, mask_schedule: MaskSchedule | None = None,
          select_from: int | None = None) -> TrainResult:
    """Train iterations [start, stop) with the recipe's schedule, keeping masked weights exactly zero.

    Pruned weights get zero gradient before every step (so momentum and Adam state
    stay zero for them) and are re-zeroed after it (so coupled weight decay or
    numerical drift can never revive them).  A `mask_schedule` (which needs a starting
    `mask`; masks.full_mask for a dense start) may switch the mask at any step; the result's
    `mask` is the one in force at the end.

    Every evaluation measures the validation split (if any) and the test set; the result reports the
    evaluation with the best validation accuracy among those at iterations >= `select_from` (default: all;
    a schedule still changing the mask sets it to where the final mask is in force).
    """
    ipe = recipe.iterations_per_epoch(len(data.x_train))
    device = data.x_train.device
    autocast_for(recipe.precision, device)  # refuses a precision this device cannot run before any work
    params = dict(model.named_parameters())
    if mask_schedule is not None and mask is None:
        raise ValueError("a mask schedule needs a starting mask (masks.full_mask for a dense start)")
    masked = [(params[n], m.to(params[n].device, params[n].dtype)) for n, m in (mask or {}).items()]
    current = None if mask_schedule is None else {n: m.to(params[n].device, torch.bool) for n, m in mask.items()}
    where = work.positions(model, data.x_train[0])
    macs = work.macs(model, where, mask)
    with torch.no_grad():
        for p, m in masked:
            p.mul_(m)
    opt = make_optimizer(model.parameters(), recipe)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none.
    scaler = torch.amp.GradScaler("cuda") if recipe.precision == "fp16" else None
    model.train()
    t0 = time.perf_counter()
    curve: list[dict] = []
    selection = Selection(start if select_from is None else select_from)
    final = {"test_accuracy": float("nan"), "test_loss": float("nan")}
    evaluated_at = None  # the iteration of the last evaluation
    order, order_epoch, aug_gen = None, -1, None
    # Summed in float64 on the device; per-example sums, so the curve shows the mean loss either way.
    running, seen = torch.zeros((), dtype=torch.float64, device=device), 0
    summed = recipe.loss_reduction == "sum"
    for it in range(start, stop):
        liveness.beat()
        epoch, pos = divmod(it, ipe)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(seed, epoch, len(data.x_train)).to(device), epoch
            aug_gen = torch.Generator(device=device).manual_seed(seed_for(seed, epoch, Stream.AUGMENTATION))
        idx = order[pos * recipe.batch_size:(pos + 1) * recipe.batch_size]
        x, y = data.x_train[idx], data.y_train[idx]
        if data.augment is not None:
            x = data.augment(x, aug_gen)
        for g in opt.param_groups:
            g["lr"] = recipe.lr_at(it, ipe)
        with autocast_for(recipe.precision, device):
            out = model(x)
            loss = F.cross_entropy(out, y, reduction=recipe.loss_reduction)
        opt.zero_grad(set_to_none=False)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        work.forward("train", len(y), macs)
        work.backward("train", len(y), macs)
        work.progress("train", it + 1 - start, ipe)  # what a trial stopped or diverged from here on has run
        if mask_schedule is not None:
            new_mask = mask_schedule.update(it, params, current)
            if new_mask is not None:
                current = switch_mask(params, opt, current, new_mask)
                masked = [(params[n], m.to(params[n].dtype)) for n, m in current.items()]
                macs = work.macs(model, where, current)  # from the next step on: this one ran with the old mask
        for p, m in masked:
            p.grad.mul_(m)
        if recipe.grad_clip is not None:
            if scaler is not None:
                scaler.unscale_(opt)  # clip the true gradient, not the scaled one
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        with torch.no_grad():
            for p, m in masked:
                p.mul_(m)
            running += loss.detach().double() if summed else loss.detach().double() * len(y)
        seen += len(y)
        end_of_epoch = pos == ipe - 1 or it == stop - 1
        if end_of_epoch:
            total = float(running)
            if not math.isfinite(total):
                raise Diverged(f"training loss is not finite in epoch {epoch + 1} (iteration {it + 1})")
            row = {"phase": "train", "epoch": epoch + 1 if pos == ipe - 1 else epoch + (pos + 1) / ipe,
                   "iteration": it + 1, "train_loss": total / max(seen, 1), "lr": recipe.lr_at(it, ipe)}
            if (epoch + 1) % recipe.eval_every == 0 or it == stop - 1:
                final = evaluate_splits(model, data, macs)
                selection.offer(it + 1, row["epoch"], final)
                row.update({k: v for k, v in final.items() if k not in COUNT_KEYS})
                evaluated_at = it + 1
            curve.append(row)
            if on_epoch is not None:
                on_epoch(row)
            running.zero_()
            seen = 0
    # Keyed on the iteration, not on a curve column: a tuning trial's data has no test split.
    if evaluate_at_end and evaluated_at != max(stop, start):
        final = evaluate_splits(model, data, macs)
        selection.offer(max(stop, start), max(stop, start) / ipe, final)
    work.epochs("train", max(0, stop - start), ipe)
    return TrainResult(seconds=time.perf_counter() - t0, iterations=max(0, stop - start),
                       test_accuracy=final.get("test_accuracy", math.nan), test_loss=final.get("test_loss", math.nan),
                       selected_epoch=selection.epoch, val_accuracy=selection.val_accuracy,
                       selected_test_accuracy=selection.test_accuracy, test_correct=final.get("test_correct"),
                       selected_test_correct=selection.test_correct, val_correct=selection.val_correct,
                       test_examples=final.get("test_examples"), val_examples=final.get("val_examples"),
                       num_classes=data.num_classes, curve=curve,
                       mask=mask if current is None else current)


@torch.no_grad()
def switch_mask(params: dict[str, nn.Parameter], opt: torch.optim.Optimizer, old: Mask, new: Mask) -> Mask:
    """Make `new` the mask in force: zero every pruned weight and every optimizer-state entry
    (SGD momentum, Adam's exp_avg / exp_avg_sq, ...) at a pruned position, so a weight regrown
    later starts from 0 with no stale momentum.  Returns `new` as bool tensors on the weights'
    devices."""
    if set(new) != set(old):
        raise ValueError(f"a mask schedule returned a mask over {sorted(new)}, but the mask in force covers "
                         f"{sorted(old)}")
    switched = {}
    for name, m in new.items():
        p = params[name]
        if m.dtype != torch.bool or m.shape != p.shape:
            raise ValueError(f"a mask schedule returned mask[{name!r}] of {m.dtype} {tuple(m.shape)}; "
                             f"expected torch.bool {tuple(p.shape)}")
        m = m.to(p.device)
        keep = m.to(p.dtype)
        p.mul_(keep)
        for value in opt.state.get(p, {}).values():
            if torch.is_tensor(value) and value.shape == p.shape:  # per-entry state, not Adam's step count
                value.mul_(keep)
        switched[name] = m
    return switched
