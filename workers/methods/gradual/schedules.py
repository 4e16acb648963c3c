"""Pruning during training: gradual magnitude pruning (GMP) and GraNet, as mask schedules for `train`.

GMP (Zhu & Gupta 2017, "To prune, or not to prune", eq. 1): every Δt iterations from t0 to
t0 + nΔt the sparsity rises along the cubic s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ and the
smallest-magnitude survivors, ranked globally over all prunable weights, are pruned; pruned weights
never come back, and the last step lands exactly on s_f.

GraNet (Liu et al. 2021, "Sparse Training via Boosting Pruning Plasticity with Neuroregeneration")
does the same global GMP step and then, in every layer, prunes a fraction r_t of the layer's
survivors by magnitude and regrows as many where the dense gradient |∂L/∂θ| is largest among the
layer's zeros (the just-pruned included), so every layer keeps its count.  r_t decays from 0.5 to
0.005 by a cosine over the whole run, and prune-and-regrow goes on every Δt until the end of
training, past the end of GMP.  Regrown weights start at 0 with no optimizer state (`train` zeroes
both when the mask switches).  Sparse-to-sparse runs start from an ERK mask at s_i.

Defaults are the GraNet repository's CIFAR recipe (whose GMP baseline uses the same knobs), scaled
to the run's length: pruning from 0 to 110/160 of training, Δt = 1000 of 160 × 391 iterations.
Sources: GraNet repository (github.com/Shiweiliuiiiiiiii/GraNet, last authors' commit f338a24),
CIFAR/sparselearning/core.py and CIFAR/main.py.  The method configurations in `workers.methods.gradual`
hold them (one default per knob, with the flags they come from); the defaults here are read from there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from workers import masks
from workers.masks import Mask
from workers.methods.gradual import AUTHORS_EVERY_FRACTION, INITIAL_DISTRIBUTIONS, GradualConfig, GraNetMethod
from workers.training.loop import Diverged

DEFAULT_START_FRACTION = GradualConfig.model_fields["start_fraction"].default
DEFAULT_END_FRACTION = GradualConfig.model_fields["end_fraction"].default
GRANET_PRUNE_RATE = GraNetMethod.model_fields["prune_rate"].default
GRANET_PRUNE_RATE_MIN = GraNetMethod.model_fields["prune_rate_min"].default
DEFAULT_DISTRIBUTION = GraNetMethod.model_fields["initial_distribution"].default


@dataclass(frozen=True)
class GradualPlan:
    """Pruning steps at iterations start, start + every, ..., start + events·every (= end)."""
    start: int
    every: int
    events: int

    def __post_init__(self):
        if self.start < 0 or self.every < 1 or self.events < 1:
            raise ValueError(f"gradual pruning needs start >= 0, every >= 1 and events >= 1, got {self}")

    @property
    def end(self) -> int:
        return self.start + self.events * self.every

    def on_grid(self, iteration: int) -> bool:
        """Whether `iteration` is one of start + j·every for some j >= 0 (past the end included)."""
        return iteration >= self.start and (iteration - self.start) % self.every == 0

    def prunes_at(self, iteration: int) -> bool:
        return self.on_grid(iteration) and iteration <= self.end


def plan_gradual(total_iterations: int, start_fraction: float = DEFAULT_START_FRACTION,
                 end_fraction: float = DEFAULT_END_FRACTION, every: int | None = None,
                 not_before: int = 0) -> GradualPlan:
    """The pruning steps of a run of `total_iterations`: from start_fraction·T (rounded) but not before
    iteration `not_before` (where a run that starts later begins), every `every` iterations (default:
    the authors' 1000-of-62 560 rate, at least 1), as many steps as fit before end_fraction·T and
    before the run's last iteration T − 1 (a step at T would never run)."""
    if not 0 <= start_fraction < end_fraction <= 1:
        raise ValueError(f"gradual pruning needs 0 <= start_fraction < end_fraction <= 1, "
                         f"got {start_fraction} and {end_fraction}")
    if every is None:
        every = max(1, math.floor(AUTHORS_EVERY_FRACTION * total_iterations + 0.5))
    if every < 1:
        raise ValueError(f"gradual pruning needs every >= 1 iteration, got {every}")
    start = max(not_before, math.floor(start_fraction * total_iterations + 0.5))
    last = min(math.floor(end_fraction * total_iterations), total_iterations - 1)
    events = (last - start) // every
    if events < 1:
        raise ValueError(f"a run of {total_iterations} iterations leaves no pruning step between iteration "
                         f"{start} and {end_fraction} of training every {every} iterations")
    return GradualPlan(start, every, events)


def cubic_sparsity(iteration: int, plan: GradualPlan, initial: float, final: float) -> float:
    """Zhu & Gupta's s_t: `initial` up to the start, `final` from the end on, the cubic in between."""
    if iteration <= plan.start:
        return initial
    if iteration >= plan.end:
        return final
    progress = (iteration - plan.start) / (plan.events * plan.every)
    return final + (initial - final) * (1 - progress) ** 3


def granet_prune_rate(iteration: int, total_iterations: int, initial: float = GRANET_PRUNE_RATE,
                      minimum: float = GRANET_PRUNE_RATE_MIN) -> float:
    """GraNet's r_t: cosine annealing from `initial` at 0 to `minimum` at the end of training."""
    t = min(max(iteration, 0), total_iterations)
    return minimum + (initial - minimum) * (1 + math.cos(math.pi * t / total_iterations)) / 2


class GMPSchedule:
    """Global gradual magnitude pruning; `history` records every pruning step."""

    def __init__(self, plan: GradualPlan, final_sparsity: float, generator: torch.Generator,
                 initial_sparsity: float = 0.0):
        if not 0 <= initial_sparsity <= final_sparsity < 1:
            raise ValueError(f"gradual pruning needs 0 <= initial_sparsity <= final_sparsity < 1, "
                             f"got {initial_sparsity} and {final_sparsity}")
        self.plan = plan
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.generator = generator
        self.history: list[dict] = []

    def update(self, iteration: int, params: dict[str, nn.Parameter], mask: Mask) -> Mask | None:
        if not self.plan.prunes_at(iteration):
            return None
        new = self._prune(iteration, params, mask)
        self.history.append({"iteration": iteration, "target_sparsity": self._target(iteration),
                             "kept": masks.count_kept(new)})
        return None if new is mask else new

    def _target(self, iteration: int) -> float:
        return cubic_sparsity(iteration, self.plan, self.initial_sparsity, self.final_sparsity)

    def _prune(self, iteration: int, params: dict[str, nn.Parameter], mask: Mask) -> Mask:
        """Keep exactly keep_count(d, 1 − s_t) survivors by global magnitude (`mask` itself when
        nothing needs pruning: a sparser mask is never refilled)."""
        keep = masks.keep_count(masks.count_total(mask), 1 - self._target(iteration))
        if keep >= masks.count_kept(mask):
            return mask
        magnitudes = _finite({n: params[n].detach().abs() for n in mask}, "weights", iteration)
        return masks.global_topk(masks.restrict_to_survivors(magnitudes, mask), keep, self.generator)


class GraNetSchedule(GMPSchedule):
    """GMP plus zero-cost neuroregeneration at every step of the plan's grid until the run ends."""

    def __init__(self, plan: GradualPlan, final_sparsity: float, total_iterations: int,
                 generator: torch.Generator, initial_sparsity: float = 0.0,
                 prune_rate: float = GRANET_PRUNE_RATE, prune_rate_min: float = GRANET_PRUNE_RATE_MIN):
        super().__init__(plan, final_sparsity, generator, initial_sparsity)
        if not 0 <= prune_rate_min <= prune_rate <= 1:
            raise ValueError(f"GraNet needs 0 <= prune_rate_min <= prune_rate <= 1, got {prune_rate_min} "
                             f"and {prune_rate}")
        if total_iterations < plan.end:
            raise ValueError(f"GraNet's run of {total_iterations} iterations ends before its last pruning "
                             f"step at iteration {plan.end}")
        self.total_iterations = total_iterations
        self.prune_rate = prune_rate
        self.prune_rate_min = prune_rate_min

    def update(self, iteration: int, params: dict[str, nn.Parameter], mask: Mask) -> Mask | None:
        if not self.plan.on_grid(iteration) or iteration >= self.total_iterations:
            return None
        pruned = self._prune(iteration, params, mask) if iteration <= self.plan.end else mask
        rate, regrown, new = 0.0, 0, pruned
        grads = {n: params[n].grad for n in mask}
        missing = [n for n, g in grads.items() if g is None]
        if missing:
            raise ValueError(f"GraNet regrows by gradient, but {', '.join(missing)} has no gradient")
        # The authors' first regrowth follows Δt steps of training: at iteration 0 there is no
        # training yet to regrow from.  A step whose fp16 gradients overflowed (GradScaler skips
        # it) has no gradient to rank by either.
        skipped = iteration == 0 or not _all_finite(grads)
        if not skipped:
            rate = granet_prune_rate(iteration, self.total_iterations, self.prune_rate, self.prune_rate_min)
            weights = {n: params[n].detach() for n in mask}
            new = prune_and_regrow(weights, grads, pruned, rate, self.generator, iteration)
            regrown = int(sum(int((new[n] & ~pruned[n]).sum()) for n in new))
        self.history.append({"iteration": iteration, "target_sparsity": self._target(iteration),
                             "kept": masks.count_kept(new), "prune_rate": rate, "regrown": regrown,
                             "regrowth_skipped": skipped})
        return None if new is mask else new


def prune_and_regrow(weights: dict[str, torch.Tensor], grads: dict[str, torch.Tensor | None], mask: Mask,
                     rate: float, generator: torch.Generator, iteration: int = -1) -> Mask:
    """GraNet's neuroregeneration, layer by layer: drop ⌈rate·n⌉ of the layer's n survivors with the
    smallest |θ|, then keep, besides the other survivors, the ⌈rate·n⌉ zeros (the just-dropped
    included) with the largest |∂L/∂θ|.  Every layer keeps exactly its n weights."""
    if not 0 <= rate <= 1:
        raise ValueError(f"prune-and-regrow rate must be in [0, 1], got {rate}")
    new = {}
    for name, m in mask.items():
        kept = int(m.sum())
        drop = math.ceil(rate * kept)
        if drop == 0:
            new[name] = m
            continue
        if grads[name] is None or not _all_finite({name: grads[name]}):
            raise ValueError(f"prune-and-regrow needs a finite gradient of {name}, got "
                             f"{'none' if grads[name] is None else 'non-finite values'}")
        magnitude = _finite({name: weights[name].abs()}, "weights", iteration)
        survivors = masks.global_topk(masks.restrict_to_survivors(magnitude, {name: m}), kept - drop, generator)
        gradient = grads[name].detach().abs()
        regrow_scores = torch.where(survivors[name], torch.full_like(gradient, float("inf")), gradient)
        new[name] = masks.global_topk({name: regrow_scores}, kept, generator)[name]
    return new


def initial_mask(weights: dict[str, torch.Tensor], density: float, generator: torch.Generator,
                 distribution: str = DEFAULT_DISTRIBUTION) -> Mask:
    """A random sparse mask keeping exactly keep_count(d, density) weights, spread over the layers
    by Erdős–Rényi-Kernel (GraNet's default, from RigL) or uniformly, with uniformly random
    positions inside each layer, all drawn from `generator`."""
    if distribution not in INITIAL_DISTRIBUTIONS:
        raise ValueError(f"unknown initial mask distribution {distribution!r}; known: {', '.join(INITIAL_DISTRIBUTIONS)}")
    shapes = {n: tuple(w.shape) for n, w in weights.items()}
    counts = erk_counts(shapes, density) if distribution == "erk" else uniform_counts(shapes, density)
    mask = {}
    for name, w in weights.items():
        # Drawn on the CPU so the same generator gives the same mask on every device.
        scores = {name: torch.rand(w.shape, generator=generator)}
        mask[name] = masks.global_topk(scores, counts[name], generator)[name].to(w.device)
    return mask


def erk_counts(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, int]:
    """Kept weights per layer under ERK: density ε·(Σ shape)/(Π shape) per layer, with the layers
    that would exceed 1 made dense and ε re-solved, then rounded to whole weights summing to
    keep_count(d, density)."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in dense]
        if not sparse:
            break
        budget = sum(density * sizes[n] for n in sparse) - sum((1 - density) * sizes[n] for n in dense)
        epsilon = budget / sum(raw[n] * sizes[n] for n in sparse)
        over = {n for n in sparse if epsilon * raw[n] > 1}
        if not over:
            break
        dense |= over
    real = {n: float(sizes[n]) if n in dense else epsilon * raw[n] * sizes[n] for n in shapes}
    return _whole_counts(real, sizes, density)


def uniform_counts(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, int]:
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    return _whole_counts({n: density * size for n, size in sizes.items()}, sizes, density)


def _whole_counts(real: dict[str, float], sizes: dict[str, int], density: float) -> dict[str, int]:
    """Largest-remainder rounding of per-layer counts to a total of exactly keep_count(d, density)."""
    total = masks.keep_count(sum(sizes.values()), density)
    counts = {n: min(sizes[n], math.floor(r + 1e-9)) for n, r in real.items()}
    missing = total - sum(counts.values())
    by_remainder = sorted((n for n in real if counts[n] < sizes[n]), key=lambda n: (counts[n] - real[n], n))
    for name in by_remainder[:max(missing, 0)]:
        counts[name] += 1
    if sum(counts.values()) != total:
        raise ValueError(f"cannot spread {total} kept weights over layers of {sizes}")
    return counts


def _finite(tensors: dict[str, torch.Tensor], what: str, iteration: int) -> dict[str, torch.Tensor]:
    if not _all_finite(tensors):
        raise Diverged(f"{what} are not finite at the pruning step of iteration {iteration + 1}")
    return tensors


def _all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values())
