"""Concrete Ticket Search: learn one Bernoulli logit per prunable weight on frozen weights.

Each step samples a relaxed mask m̃ = σ(ℓ/τ + s) (ℓ fresh logistic noise), runs the network
with θ ⊙ m̃, and moves the logits s by Adam on the objective plus a GradBalance budget term
that only pushes back once the expected kept count Σσ(s) exceeds slack·κ·d.  The hard mask
is the global top-⌊κ·d⌋ of s.  docs/methods.md gives the equations and the source of every
constant (the CTS authors' code).

BatchNorm during the search (`search_bn`): "batch" (default) normalises the dense teacher and
the masked student alike with the current batch's statistics, as the authors' BN (which keeps
no running statistics) does; "running" uses the running statistics saved with the weights.
With the saved statistics, a soft mask keeping a few percent of the weights shrinks every
activation and BN never rescales it, which misleads the search at high sparsity.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workers import liveness, masks
from workers.masks import Mask
from workers.methods.cts import OBJECTIVES, SEARCH_BN, CTSMethod
from workers.training.loop import Diverged

OBJECTIVE_SCALE = 100.0  # the reference code multiplies every objective by 100
BUDGET_SCALE = 100.0     # c(s) = 100·(Σσ(s)/B − 1)
NOISE_CLIP = 1e-10


def objective_value(objective: str, sparse_logits: torch.Tensor, dense_logits: torch.Tensor | None,
                    labels: torch.Tensor) -> torch.Tensor:
    """The search objective on one batch (×100); KLs are batch means of per-example KLs."""
    if objective == "cross_entropy":
        return OBJECTIVE_SCALE * F.cross_entropy(sparse_logits, labels)
    log_s = F.log_softmax(sparse_logits, dim=1)
    log_d = F.log_softmax(dense_logits, dim=1)
    if objective == "reverse_kl":   # KL(p_sparse || p_dense): mode-seeking
        kl = (log_s.exp() * (log_s - log_d)).sum(dim=1)
    elif objective == "forward_kl":  # KL(p_dense || p_sparse)
        kl = (log_d.exp() * (log_d - log_s)).sum(dim=1)
    else:
        raise ValueError(f"unknown CTS objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    return OBJECTIVE_SCALE * kl.mean()


class GradBalance:
    """Budget multiplier λ that scales the budget gradient to the objective gradient's size.

    λ* = ‖g_R‖/‖g_c‖ while the budget is exceeded (c > 0), else 0; λ follows λ* by an EMA
    (started at the first λ*).  The combined gradient is g_R + λ·g_c.  λ and c stay on the
    logits' device, so a step never waits for the device (λ in float64: the EMA accumulates
    over thousands of steps); the `lam` and `violation` properties read them back.
    """

    def __init__(self, budget: float, ema: float):
        self.budget = budget
        self.ema = ema
        self._lam: torch.Tensor | None = None
        self._violation: torch.Tensor | None = None

    @property
    def lam(self) -> float | None:
        return None if self._lam is None else float(self._lam)

    @property
    def violation(self) -> float:
        return 0.0 if self._violation is None else float(self._violation)

    def combined_gradient(self, s: torch.Tensor, g_objective: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(s)
        self._violation = BUDGET_SCALE * (p.sum() / self.budget - 1)
        g_budget = (BUDGET_SCALE / self.budget) * p * (1 - p)
        norm_budget = _norm(g_budget)
        over = (self._violation > 0) & (norm_budget > 0)
        # where() picks 0 for the masked-out lanes, so a 0/0 there never reaches λ.
        target = torch.where(over, _norm(g_objective) / norm_budget, torch.zeros_like(norm_budget))
        self._lam = target if self._lam is None else (1 - self.ema) * self._lam + self.ema * target
        return g_objective + self._lam * g_budget


def search_mask(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, density: float,
                cfg: CTSMethod, generator: torch.Generator, *, epochs: int, mask_lr: float, batch_size: int,
                on_epoch: Callable[[int, dict], None] | None = None, invert: bool = False) -> tuple[Mask, dict]:
    """Search a mask keeping ⌊density·d⌋ of the prunable weights `names` of `model`, for `epochs` epochs of
    Adam at `mask_lr` (the logits' learning rate, `CTSMethod.mask_lr`) on mini-batches of `batch_size`, with the
    knobs of `cfg`.

    `x`, `y` are the whole training set (on the model's device; no augmentation).  The
    model's weights and buffers (BN running statistics included) are read, never written;
    its modes are set by `search_mode` and restored afterwards.  `invert` keeps the lowest
    logits (score-inversion check).  A non-finite objective raises `Diverged` at the end of
    its epoch.  Returns the mask and {expected_kept_fraction, lambda, steps, objective,
    budget_violation}.
    """
    if not 0 < density < 1:
        raise ValueError(f"CTS density must be in (0, 1), got {density}")
    if int(epochs) != epochs or epochs < 1 or int(batch_size) != batch_size or batch_size < 1 or not mask_lr > 0:
        raise ValueError(f"CTS needs whole epochs >= 1, a whole batch size >= 1 and a mask lr > 0, got {epochs}, "
                         f"{batch_size}, {mask_lr}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"CTS needs matching non-empty x and y, got {len(x)} and {len(y)} examples")
    frozen = {n: p.detach() for n, p in model.named_parameters()}
    weights = [frozen[n] for n in names]
    device = weights[0].device
    sizes = [w.numel() for w in weights]
    d = sum(sizes)

    s = torch.full((d,), math.log(density / (1 - density)), device=device, requires_grad=True)
    opt = torch.optim.Adam([s], lr=mask_lr)
    balance = GradBalance(cfg.slack * density * d, cfg.ema)
    # Noise is drawn on the model's device from a generator seeded by the caller's one.
    noise_gen = torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
    drop_epoch = math.floor(cfg.drop_at * epochs)
    needs_dense = cfg.objective != "cross_entropy"

    steps, last = 0, torch.full((), float("nan"), device=device)
    with search_mode(model, cfg.search_bn):
        for epoch in range(int(epochs)):
            order = torch.randperm(len(x), generator=generator).to(x.device)
            # Summed on the device and read once per epoch: a per-step read would stall a GPU.
            epoch_sum = torch.zeros((), dtype=torch.float64, device=device)
            for start in range(0, len(x), int(batch_size)):
                liveness.beat()
                idx = order[start:start + int(batch_size)]
                xb, yb = x[idx], y[idx]
                dense = None
                if needs_dense:
                    with torch.no_grad():
                        dense = functional_call(model, frozen, (xb,))
                soft = relaxed_sample(s, cfg.tau, noise_gen)
                params = dict(frozen)
                for n, w, m in zip(names, weights, soft.split(sizes)):
                    params[n] = w * m.view_as(w)
                loss = objective_value(cfg.objective, functional_call(model, params, (xb,)), dense, yb)
                (g_objective,) = torch.autograd.grad(loss, s)
                with torch.no_grad():
                    s.grad = balance.combined_gradient(s.detach(), g_objective)
                opt.step()
                steps += 1
                last = loss.detach()
                epoch_sum += last
            if not math.isfinite(float(epoch_sum)):
                raise Diverged(f"CTS search objective is not finite in search epoch {epoch + 1} (step {steps})")
            if on_epoch is not None:  # lr: the rate this epoch used
                on_epoch(epoch, _info(s, d, balance, steps, last) | {"lr": opt.param_groups[0]["lr"]})
            if epoch + 1 == drop_epoch:
                for group in opt.param_groups:
                    group["lr"] *= 0.1

    logits = {n: part.view_as(w) for n, w, part in zip(names, weights, s.detach().split(sizes))}
    mask = masks.global_topk(logits, masks.keep_count(d, density), generator, largest=not invert)
    return mask, _info(s, d, balance, steps, last)


@contextlib.contextmanager
def search_mode(model: nn.Module, search_bn: str) -> Iterator[nn.Module]:
    """The model as the search runs it; every module's mode is restored afterwards.

    Eval mode (no dropout), except that with search_bn "batch" every BatchNorm normalises with
    the current batch's statistics and leaves its running statistics and counter untouched:
    a BN in training mode that does not track running statistics does exactly that.
    """
    if search_bn not in SEARCH_BN:
        raise ValueError(f"unknown CTS search_bn {search_bn!r}; known: {', '.join(SEARCH_BN)}")
    flags = {m: m.training for m in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = {m: m.track_running_stats for m in norms}
    model.eval()
    try:
        if search_bn == "batch":
            for m in norms:
                m.train()
                m.track_running_stats = False
        yield model
    finally:
        for m, training in flags.items():
            m.training = training
        for m, track in tracking.items():
            m.track_running_stats = track


def relaxed_sample(s: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Binary Concrete sample m̃ = σ(ℓ/τ + s), ℓ = log u − log(1−u), fresh u ~ U(0,1) per entry.

    P(m̃ > ½) = σ(τ·s) and ∂m̃/∂s = m̃(1−m̃): τ sharpens the sample, not the gradient.
    """
    u = torch.rand(s.shape, generator=generator, device=s.device).clamp_(NOISE_CLIP, 1 - NOISE_CLIP)
    return torch.sigmoid((torch.log(u) - torch.log1p(-u)) / tau + s)


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm (a float64 scalar on v's device) with max-rescaling, so tiny or huge
    entries neither underflow nor overflow; 0 for an all-zero v."""
    scale = v.abs().max()
    norm = torch.linalg.vector_norm(v / scale) * scale
    return torch.where(scale > 0, norm, torch.zeros_like(norm)).double()


def _info(s: torch.Tensor, d: int, balance: GradBalance, steps: int, objective: torch.Tensor) -> dict:
    return {"expected_kept_fraction": float(torch.sigmoid(s.detach()).sum()) / d,
            "lambda": balance.lam or 0.0, "steps": steps, "objective": float(objective),
            "budget_violation": balance.violation}
