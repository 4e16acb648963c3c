"""Concrete Ticket Search (CTS, arXiv 2512.07142): learn one Bernoulli logit per prunable weight on frozen
weights (θ_k, or θ₀), with GradBalance holding the expected kept count to the budget, then retrain the top-k
mask from the same weights. The search is `search.py`; defaults follow the authors' code (docs/methods.md)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from workers.methods.base import MethodConfig, Planner, Runner, SeedStages

OBJECTIVES = ("reverse_kl", "forward_kl", "cross_entropy")
SEARCH_BN = ("batch", "running")
SEARCH_WORK = 1.5  # a search epoch costs about 1.5 training epochs (a dense forward + a masked forward/backward)


class CTSMethod(MethodConfig):
    """Concrete Ticket Search: learn a relaxed mask on frozen weights (the rewind point, or init), then retrain from them."""
    IDENTITY = ("objective",)
    kind: Literal["cts"]
    objective: Literal[OBJECTIVES] = Field(  # type: ignore[valid-type]
        default="reverse_kl", description="search objective; reverse_kl to the dense network is CTS-KL")
    search: Literal["long", "short"] | Annotated[float, Field(gt=0, le=100_000)] = Field(
        default="long", description="search length: long = training epochs, short = 1/8 of them, or a number of epochs")
    # Named `lr` in specs (and so in stage keys); the code calls it the mask lr (`mask_lr`).
    lr: float | None = Field(default=None, gt=0, le=100,
                             description="mask lr: the search's Adam learning rate of the mask logits, not the "
                                         "training recipe's (default: training.lr)")
    tau: float = Field(default=2 / 3, gt=0, le=100, description="Concrete temperature")
    slack: float = Field(default=1.1, ge=1, le=100, description="GradBalance budget slack")
    ema: float = Field(default=0.01, gt=0, le=1, description="GradBalance multiplier EMA rate")
    drop_at: float = Field(default=0.88, ge=0, le=1,
                           description="fraction of the search after which the mask learning rate is multiplied by 0.1")
    search_bn: Literal[SEARCH_BN] = Field(  # type: ignore[valid-type]
        default="batch", description="BatchNorm in the search: batch statistics (as the CTS authors) or the saved running statistics")
    search_at: Literal["rewind", "init"] = Field(
        default="rewind", description="search at the rewind point and retrain from it, or search at init and retrain from init for the whole training")

    def base_name(self) -> str:
        return f"cts_{self.objective}"

    def resolved(self, training: dict) -> dict:
        return {**self.settings(), "lr": self.mask_lr(training["lr"])}

    def mask_lr(self, training_lr: float) -> float:
        """The search's learning rate of the mask logits: this method's `lr`, or else the training recipe's."""
        return self.lr or training_lr

    def search_epochs(self, training_epochs: int) -> int:
        if self.search == "long":
            return training_epochs
        if self.search == "short":
            return max(1, round(training_epochs / 8))
        return max(1, int(round(self.search)))

    def add_stages(self, seed: SeedStages, plan: Planner) -> None:
        # Searched at init, the mask retrains from θ₀ for the whole training (the authors' k = 0), so no warm-up
        # is part of it or of its standalone cost.
        at_init = self.search_at == "init"
        role, start = ("init", seed.init) if at_init else ("warmup", seed.warmup)
        work = (plan.warmup_work if at_init else 0.0) + plan.retrain_work + \
            SEARCH_WORK * self.search_epochs(plan.training_epochs)
        name = self.label()
        for sp in plan.targets:
            stage = plan.point("cts", seed, self, params={"target_sparsity": sp}, parents={role: start.key},
                               inputs=[role], cost=[start.key], work=work, label=f"{name} s={seed.seed} sp={sp:.4f}")
            plan.sanity(self, stage, seed, from_init=at_init)


CONFIGS = (CTSMethod,)


def cts_stage(stage, inputs, data, on_epoch=None):
    """Runs a `cts` stage; `run` is imported only now, so that the driver reads this module without torch."""
    from workers.methods.cts.run import run_cts
    return run_cts(stage, inputs, data, on_epoch)


RUNNERS: dict[str, Runner] = {"cts": cts_stage}
