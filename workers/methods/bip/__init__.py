"""BiP, pruning as bi-level optimisation (Zhang et al., NeurIPS 2022; code github.com/OPTML-Group/BiP @ c51fc35):
from the seed's dense trained weights θ_T, alternate an SGD step on the weights with the mask fixed and an SGD step
on real-valued scores with the implicit gradient, the mask being the global top-k of |scores|. The result is the
mask and m ⊙ θ, used as they are (the authors: fine-tuning "is not necessary"), or optionally fine-tuned with the
mask fixed. The algorithm is `bilevel.py`; the knobs below are its single source of defaults, from the authors'
configs/CIFAR10/bip.yml (and train.py where the yml is silent).
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from workers.methods.base import MethodConfig, Planner, Runner, SeedStages

IMPLICIT_GRADIENTS = ("paper", "code")


class BiPMethod(MethodConfig):
    """BiP: bi-level optimisation of a top-k score mask and the weights from the dense trained network, used without retraining (optionally fine-tuned)."""
    # The scores make the mask inside the search, so keeping the lowest is no inversion of a finished ranking;
    # the shuffle/reinit ablations retrain its final mask.
    SANITY_CHECKS: ClassVar[tuple[str, ...]] = ("shuffle", "reinit")

    kind: Literal["bip"]
    epoch_fraction: float = Field(
        default=0.5, gt=0, le=10,
        description="BiP epochs as a fraction of the training epochs, rounded, at least 1 (bip.yml's 100 after "
                    "pretrain.yml's 200)")
    # Named `lr` as in the authors' bip.yml (and in specs and stage keys): the search's lr of the weights.
    lr: float = Field(default=0.1, gt=0, le=100,
                      description="lower level: the search's SGD learning rate of the weights, not the training "
                                  "recipe's (which fine-tuning uses), cosine over the BiP epochs (bip.yml lr)")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="lower level: SGD momentum (bip.yml momentum)")
    weight_decay: float = Field(default=1e-4, ge=0, le=1, description="lower level: weight decay γ (bip.yml wd)")
    mask_lr: float = Field(
        default=0.1, gt=0, le=100,
        description="upper level: SGD learning rate of the scores, ×0.1 from half the BiP epochs, ×0.01 from 3/4 "
                    "(bip.yml mask_lr, mask_lr_schedule step)")
    mask_momentum: float = Field(default=0.9, ge=0, lt=1,
                                 description="upper level: SGD momentum of the scores (train.py: the weights' momentum)")
    mask_weight_decay: float = Field(default=1e-4, ge=0, le=1,
                                     description="upper level: weight decay of the scores (train.py: the weights' wd)")
    ig_scale: float = Field(default=1e-4, ge=0, le=100,
                            description="1/γ of the implicit-gradient term (bip.yml lr2); 0 drops the term")
    implicit_gradient: Literal[IMPLICIT_GRADIENTS] = Field(  # type: ignore[valid-type]
        default="paper",
        description="implicit-gradient form: paper (θ⊙g − (1/γ)·m⊙g²) or code (∂ℓ/∂s − (1/γ)(∂ℓ/∂s)², trainer/bilevel.py)")
    lower_steps: int = Field(default=1, ge=1, le=100,
                             description="lower-level weight steps per score step (trainer/bilevel.py: 1)")
    finetune: bool = Field(
        default=False,
        description="retrain the BiP network with its mask fixed, the training schedule replayed from the rewind "
                    "point to the end (the authors' optional finetune.yml)")

    def search_epochs(self, training_epochs: int) -> int:
        return max(1, math.floor(self.epoch_fraction * training_epochs + 0.5))

    def add_stages(self, seed: SeedStages, plan: Planner) -> None:
        # An iteration is lower_steps forward-backward passes on the weights and one on the scores.
        work = (self.lower_steps + 1) * self.search_epochs(plan.training_epochs)
        work += plan.retrain_work if self.finetune else 0.0
        name = self.label()
        for sp in plan.targets:
            stage = plan.point("bip", seed, self, params={"target_sparsity": sp}, parents={"dense": seed.dense.key},
                               inputs=["dense"], cost=[seed.dense.key], work=work,
                               label=f"{name} s={seed.seed} sp={sp:.4f}")
            plan.sanity(self, stage, seed)


CONFIGS = (BiPMethod,)


def bip_stage(stage, inputs, data, on_epoch=None):
    """Runs a `bip` stage; `run` is imported only now, so that the driver reads this module without torch."""
    from workers.methods.bip.run import run_bip
    return run_bip(stage, inputs, data, on_epoch)


RUNNERS: dict[str, Runner] = {"bip": bip_stage}
