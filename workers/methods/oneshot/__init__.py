"""One-shot pruning: score the weights once (SynFlow: over rounds) at init, the rewind point or the trained
weights, keep the global top-k, rewind the survivors to θ_k and retrain. The criteria are `criteria.py`."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from workers.methods.base import MethodConfig, Planner, Runner, SeedStages
from workers.methods.oneshot.criteria import CRITERIA



class OneShotMethod(MethodConfig):
    """One-shot pruning by a saliency criterion, then rewinding and retraining."""
    IDENTITY = ("criterion",)
    kind: Literal["oneshot"]
    # The registry's names, as a Literal: `--explain` lists them and a misspelt one gets a "did you mean".
    criterion: Literal[tuple(CRITERIA)] = Field(description="saliency criterion (workers/methods/oneshot/criteria.py)",  # type: ignore[valid-type]
                                                json_schema_extra={"listed_under": "criteria"})
    score_at: Literal["init", "rewind", "trained"] = Field(
        default="rewind", description="weights the scores are computed at: init, the rewind point, or the end of dense training")
    rounds: int | None = Field(default=None, gt=0, le=10_000,
                               description="pruning rounds (default: the criterion's, 100 for synflow, else 1)")
    samples_per_class: int = Field(default=10, gt=0, le=100_000,
                                   description="data for the criteria that score training examples: this many per class")

    def base_name(self) -> str:
        return self.criterion

    def resolved(self, training: dict) -> dict:
        return {**self.settings(), "rounds": self.rounds or CRITERIA[self.criterion].rounds}

    def add_stages(self, seed: SeedStages, plan: Planner) -> None:
        score_from = {"init": seed.init, "rewind": seed.warmup, "trained": seed.dense}[self.score_at]
        scoring_work = 0.2 if CRITERIA[self.criterion].needs_data or self.criterion == "synflow" else 0.05
        name = self.label()
        for sp in plan.targets:
            stage = plan.point("oneshot", seed, self, params={"target_sparsity": sp},
                               parents={"score_weights": score_from.key, "warmup": seed.warmup.key},
                               inputs=["score_weights", "warmup"], cost=[score_from.key, seed.warmup.key],
                               work=plan.retrain_work + scoring_work, label=f"{name} s={seed.seed} sp={sp:.4f}")
            plan.sanity(self, stage, seed)


CONFIGS = (OneShotMethod,)


def oneshot_stage(stage, inputs, data, on_epoch=None):
    """Runs a `oneshot` stage; `run` is imported only now, so that the driver reads this module without torch."""
    from workers.methods.oneshot.run import run_oneshot
    return run_oneshot(stage, inputs, data, on_epoch)


RUNNERS: dict[str, Runner] = {"oneshot": oneshot_stage}


BUILT_IN_CRITERIA = tuple(CRITERIA)


def use_criteria() -> None:
    """Make `criterion` accept every criterion registered now (a plugin's too), keeping the Literal that lists
    them in `--explain` and gives a misspelt one its "did you mean"."""
    global CONFIGS
    names = tuple(CRITERIA)
    if names == BUILT_IN_CRITERIA:
        CONFIGS = (OneShotMethod,)
        return
    field = OneShotMethod.model_fields["criterion"]
    CONFIGS = (create_model("OneShotMethod", __base__=OneShotMethod, __doc__=OneShotMethod.__doc__,
                            criterion=(Literal[names], Field(description=field.description))),)
