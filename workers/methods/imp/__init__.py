"""Iterative magnitude pruning: one chain of levels per seed, each pruning the previous level's trained weights
by global magnitude and retraining. The three kinds differ only in what a level retrains from:

- `ltr`, Lottery Ticket Rewinding (Frankle et al.): the survivors are rewound to θ_k and retrained k -> T;
- `lrr`, learning-rate rewinding (Renda, Frankle, Carbin, ICLR 2020): the survivors keep the previous level's
  trained weights and the learning-rate schedule is replayed from k (the same k -> T iterations and data order);
- `finetune`, the classic baseline: the previous level's trained weights retrained k -> T at the schedule's final
  learning rate.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from workers.methods.base import MethodConfig, Planner, Runner, SeedStages



def ltr_schedule(target_sparsities: list[float], max_prune_fraction: float) -> list[tuple[float, bool]]:
    """Levels (sparsity, requested) of one IMP chain.

    Each level prunes `max_prune_fraction` of the survivors, except that the level
    before a requested sparsity prunes just what is needed to land on it exactly.
    """
    levels: list[tuple[float, bool]] = []
    density = 1.0
    for target in sorted(target_sparsities):
        goal = 1 - target
        while density * (1 - max_prune_fraction) > goal + 1e-12:
            density *= 1 - max_prune_fraction
            levels.append((round(1 - density, 12), False))
        density = goal
        levels.append((round(target, 12), True))
    return levels


class IMPConfig(MethodConfig):
    # What a level retrains from: "rewind" = θ_k; "replay" = the trained weights, schedule replayed from k;
    # "final_lr" = the trained weights at the schedule's final learning rate.
    RETRAIN: ClassVar[str]
    max_prune_fraction: float = Field(default=0.2, gt=0, lt=1, description="at most this fraction of survivors pruned per level")

    def add_stages(self, seed: SeedStages, plan: Planner) -> None:
        previous = seed.dense
        name = self.label()
        for level, (sp, requested) in enumerate(ltr_schedule(plan.targets, self.max_prune_fraction), start=1):
            parents, inputs = {"previous": previous.key}, ["previous"]
            if self.RETRAIN == "rewind":
                parents["warmup"] = seed.warmup.key
                inputs.append("warmup")
            stage = plan.point("imp_level", seed, self, params={"target_sparsity": sp}, parents=parents,
                               inputs=inputs, cost=[previous.key], work=plan.retrain_work,
                               label=f"{name} s={seed.seed} L={level}", level=level, requested=requested)
            if requested:
                plan.sanity(self, stage, seed)
            previous = stage


class LTRMethod(IMPConfig):
    """Lottery Ticket Rewinding: iterative global magnitude pruning, rewinding survivors to the rewind point."""
    RETRAIN: ClassVar[str] = "rewind"
    kind: Literal["ltr"]


class LRRMethod(IMPConfig):
    """Learning-rate rewinding: iterative global magnitude pruning; survivors keep their trained weights and the learning-rate schedule is replayed from the rewind point."""
    RETRAIN: ClassVar[str] = "replay"
    kind: Literal["lrr"]


class FineTuneMethod(IMPConfig):
    """Fine-tuning: iterative global magnitude pruning; survivors keep their trained weights and retrain at the schedule's final learning rate."""
    RETRAIN: ClassVar[str] = "final_lr"
    kind: Literal["finetune"]


CONFIGS = (LTRMethod, LRRMethod, FineTuneMethod)


def imp_level_stage(stage, inputs, data, on_epoch=None):
    """Runs a `imp_level` stage; `run` is imported only now, so that the driver reads this module without torch."""
    from workers.methods.imp.run import run_imp_level
    return run_imp_level(stage, inputs, data, on_epoch)


RUNNERS: dict[str, Runner] = {"imp_level": imp_level_stage}
