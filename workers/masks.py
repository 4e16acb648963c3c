"""Which tensors are prunable, the one global top-k that makes every mask, and sparsity accounting.

A mask is a dict {parameter name: bool tensor of the parameter's shape}; True = kept.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from workers.models.registry import PRUNABLE_LAYERS

Mask = dict[str, torch.Tensor]


def prunable_names(model: nn.Module, prune_output: bool | None = None) -> list[str]:
    """Names of the weights that pruning may touch: those of the modules of the model's `prunable_layers`
    classes (torch.nn names; conv and linear layers by default, `workers.models.registry.PRUNABLE_LAYERS`).

    Biases and norm parameters are never prunable.  The output layer follows the
    model's own default (`model.prune_output`) unless `prune_output` overrides it,
    so every method of a sweep prunes exactly the same tensors.
    """
    if prune_output is None:
        prune_output = bool(getattr(model, "prune_output", False))
    output_layer = getattr(model, "output_layer", None)
    layers = tuple(getattr(nn, name) for name in getattr(model, "prunable_layers", PRUNABLE_LAYERS))
    names = []
    for module_name, module in model.named_modules():
        if not isinstance(module, layers):
            continue
        if module_name == output_layer and not prune_output:
            continue
        names.append(f"{module_name}.weight" if module_name else "weight")
    if not names:
        raise ValueError("model has no prunable conv or linear weights")
    return names


def prunable_params(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n] for n in names}


def keep_count(total: int, density: float) -> int:
    """Number of weights kept at `density`: exactly floor(density * total).

    The small epsilon stops binary floating point from turning e.g. 0.29 * 100
    = 28.999999999999996 into 28.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    return int(math.floor(density * total + 1e-9))


def global_topk(scores: dict[str, torch.Tensor], keep: int, generator: torch.Generator,
                largest: bool = True) -> Mask:
    """Keep exactly `keep` entries with the highest (or lowest) scores across all tensors.

    Ties at the threshold are broken by a seeded random choice, so equal scores (e.g.
    many zeros) never make the kept count drift and the result is reproducible. Linear
    time and on the scores' device (no full sort): SynFlow calls this 100 times.
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).double() for n in names])
    total = flat.numel()
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} weights")
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN")
    if not largest:
        flat = -flat
    if keep == 0:
        kept = torch.zeros(total, dtype=torch.bool, device=flat.device)
    else:
        threshold = torch.kthvalue(flat, total - keep + 1).values  # the keep-th largest score
        kept = flat > threshold
        ties = torch.nonzero(flat == threshold).squeeze(1)
        missing = keep - int(kept.sum())
        chosen = torch.randperm(len(ties), generator=generator)[:missing].to(ties.device)
        kept[ties[chosen]] = True
    mask, offset = {}, 0
    for n in names:
        size = scores[n].numel()
        mask[n] = kept[offset:offset + size].reshape(scores[n].shape).to(scores[n].device)
        offset += size
    return mask


def restrict_to_survivors(scores: dict[str, torch.Tensor], mask: Mask, invert: bool = False) -> dict[str, torch.Tensor]:
    """Give pruned weights the worst possible score, so a later pruning round can never revive them."""
    fill = float("inf") if invert else float("-inf")
    return {n: torch.where(mask[n].to(s.device), s, torch.full_like(s, fill)) for n, s in scores.items()}


def full_mask(model: nn.Module, names: list[str]) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    for n, m in mask.items():
        params[n].mul_(m.to(params[n].device, params[n].dtype))


def count_kept(mask: Mask) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def count_total(mask: Mask) -> int:
    return int(sum(m.numel() for m in mask.values()))


def sparsity(mask: Mask) -> float:
    """Fraction of prunable weights that are zero (measured, not the target)."""
    return 1.0 - count_kept(mask) / count_total(mask)


def layer_densities(mask: Mask) -> dict[str, float]:
    return {n: float(m.float().mean()) for n, m in mask.items()}


def layerwise_shuffle(mask: Mask, generator: torch.Generator) -> Mask:
    """Randomly permute which positions are kept inside each tensor; every layer keeps its count."""
    out = {}
    for n, m in mask.items():
        flat = m.reshape(-1).cpu()
        perm = torch.randperm(flat.numel(), generator=generator)
        out[n] = flat[perm].reshape(m.shape).to(m.device)
    return out


def mask_to_cpu(mask: Mask) -> Mask:
    return {n: m.detach().to("cpu", torch.bool) for n, m in mask.items()}
