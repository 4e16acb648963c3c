"""Pruning during training: gradual magnitude pruning (`gmp`, Zhu & Gupta 2017) and GraNet (`granet`, Liu et al.
2021), mask schedules that prune while the network trains (`schedules.py`), with no retraining afterwards.

Both start from the seed's warm-up θ_k and train k -> T with the data order every method of the seed shares; the
pruning steps run from max(k, start_fraction·T) on (a step before k would fall in the shared warm-up), so their
standalone cost is the warm-up plus their own run. The knobs below are the single source of the defaults:
GraNet's CIFAR recipe (github.com/Shiweiliuiiiiiiii/GraNet @ f338a24, CIFAR/main.py and sparselearning/core.py;
its GMP baseline takes the same flags), scaled to the run's length.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from workers.methods.base import MethodConfig, Planner, Runner, SeedStages

# The authors' pruning interval relative to their run: --update-frequency 1000 of 160 epochs × 391 iterations.
AUTHORS_EVERY_FRACTION = 1000 / (160 * 391)
INITIAL_DISTRIBUTIONS = ("erk", "uniform")


class GradualConfig(MethodConfig):
    """What GMP and GraNet share: the cubic schedule's interval and its steps."""
    # The schedule can only keep the largest magnitudes, and the shuffle/reinit ablations retrain its final mask.
    SANITY_CHECKS: ClassVar[tuple[str, ...]] = ("shuffle", "reinit")

    start_fraction: float = Field(
        default=0.0, ge=0, lt=1,
        description="first pruning step at this fraction of training (--init-prune-epoch 0), not before the rewind point")
    end_fraction: float = Field(
        default=110 / 160, gt=0, le=1,
        description="last pruning step, where the target sparsity is reached, by this fraction of training "
                    "(--final-prune-epoch 110 of --epochs 160)")
    every: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description="iterations Δt between pruning steps; default: the authors' 1000 of 160×391 iterations, "
                    "scaled to the run (at least 1)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.start_fraction >= self.end_fraction:
            raise ValueError(f"start_fraction {self.start_fraction:g} must be below end_fraction {self.end_fraction:g}")
        return self

    def start_sparsity(self, target: float) -> float:
        """s_i of the cubic for a run to `target`."""
        return 0.0

    def add_stages(self, seed: SeedStages, plan: Planner) -> None:
        name = self.label()
        for sp in plan.targets:
            # One training k -> T per target; pruning and regrowth add a global top-k every Δt, nothing per step.
            stage = plan.point("gradual", seed, self, params={"target_sparsity": sp},
                               parents={"warmup": seed.warmup.key}, inputs=["warmup"], cost=[seed.warmup.key],
                               work=plan.retrain_work, label=f"{name} s={seed.seed} sp={sp:.4f}")
            plan.sanity(self, stage, seed)


class GMPMethod(GradualConfig):
    """Gradual magnitude pruning (Zhu & Gupta 2017): dense start, global magnitude pruning along a cubic schedule while training, no retraining."""
    kind: Literal["gmp"]


class GraNetMethod(GradualConfig):
    """GraNet (Liu et al. 2021): GMP plus layer-wise prune-and-regrow by gradient until the end of training; dense or sparse (ERK) start."""
    kind: Literal["granet"]
    initial_sparsity: float = Field(
        default=0.0, ge=0, lt=1,
        description="sparsity s_i the run starts at: 0 = dense-to-sparse (the paper's s_i = 0); e.g. 0.5 = "
                    "sparse-to-sparse from a random mask (the code's --init-density 0.5); a target below it starts "
                    "at the target")
    initial_distribution: Literal[INITIAL_DISTRIBUTIONS] = Field(  # type: ignore[valid-type]
        default="erk", description="how a sparse start spreads its weights over the layers: erk (--sparse-init ERK) or uniform")
    prune_rate: float = Field(
        default=0.5, gt=0, le=1,
        description="fraction r of each layer's survivors dropped and regrown at the first step (--prune-rate 0.5)")
    prune_rate_min: float = Field(
        default=0.005, ge=0, le=1,
        description="r at the end of training: r decays from prune_rate by a cosine (CosineDecay's eta_min 0.005)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.prune_rate_min > self.prune_rate:
            raise ValueError(f"prune_rate_min {self.prune_rate_min:g} is above prune_rate {self.prune_rate:g}")
        if self.initial_distribution != "erk" and self.initial_sparsity == 0:
            raise ValueError("initial_distribution applies to a sparse start only: set initial_sparsity > 0")
        return self

    def start_sparsity(self, target: float) -> float:
        return min(self.initial_sparsity, target)


CONFIGS = (GMPMethod, GraNetMethod)


def gradual_stage(stage, inputs, data, on_epoch=None):
    """Runs a `gradual` stage; `run` is imported only now, so that the driver reads this module without torch."""
    from workers.methods.gradual.run import run_gradual
    return run_gradual(stage, inputs, data, on_epoch)


RUNNERS: dict[str, Runner] = {"gradual": gradual_stage}
