"""Optimal Brain Damage (LeCun, Denker & Solla, NeurIPS 1990) as a one-shot pruning criterion.

OBD keeps the weights whose removal would raise the loss most to second order: saliency s_i = ½·h_ii·θ_i²,
h_ii the i-th diagonal entry of the Hessian of the training loss. The diagonal is estimated with
Hutchinson's estimator, diag(H) ≈ mean over probes z (Rademacher ±1) of z ⊙ Hz (Bekas, Kokiopoulou & Saad
2007), each Hz an exact Hessian-vector product from the scoring toolkit on the criterion's training sample.
"""
import torch
from pydantic import BaseModel, Field

from workers.plugins import register_criterion


class OBDOptions(BaseModel):
    probes: int = Field(default=8, ge=1, le=1000,
                        description="Hutchinson probes; more lowers the variance of the diagonal estimate")


@register_criterion(description="Optimal Brain Damage, ½·h_ii·θ² with diag(H) by Hutchinson's estimator "
                                "(LeCun et al. 1990)", needs_data=True, options=OBDOptions)
def obd(s, probes):
    diagonal = {n: torch.zeros_like(w) for n, w in s.weights.items()}
    for _ in range(probes):
        # Drawn on the CPU from the toolkit's seeded generator: the same probes on every device.
        z = {n: (torch.randint(0, 2, w.shape, generator=s.generator) * 2 - 1).to(w.device, w.dtype)
             for n, w in s.weights.items()}
        hz = s.hessian_vector(z)
        for n in diagonal:
            diagonal[n] += z[n] * hz[n]
    return {n: 0.5 * diagonal[n] / probes * w ** 2 for n, w in s.weights.items()}
