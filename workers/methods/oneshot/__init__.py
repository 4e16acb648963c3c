"""One-shot pruning: score the weights once (SynFlow: over rounds) at init, the rewind point or the trained
weights, keep the global top-k, rewind the survivors to θ_k and retrain. The criteria are `criteria.py`."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, create_model, field_validator

from workers.methods.base import MethodConfig, Planner, Runner, SeedStages
from workers.methods.oneshot.criteria import CRITERIA
from workers.strict import OptionValues, validated_options


class OneShotMethod(MethodConfig):
    """One-shot pruning by a saliency criterion, then rewinding and retraining."""
    IDENTITY = ("criterion",)
    OPTION_FIELDS = ("criterion_options",)
    kind: Literal["oneshot"]
    # The registry's names, as a Literal: `--explain` lists them and a misspelt one gets a "did you mean".
    criterion: Literal[tuple(CRITERIA)] = Field(description="saliency criterion (workers/methods/oneshot/criteria.py)",  # type: ignore[valid-type]
                                                json_schema_extra={"listed_under": "criteria"})
    # After `criterion`: its validator reads which criterion they are for.
    criterion_options: OptionValues = Field(
        default_factory=dict, description="the criterion's options, for a criterion that takes some (validate "
                                          "--explain lists them under criteria), e.g. {probes: 16}; a search space "
                                          "tunes one as criterion_options.<name>")
    score_at: Literal["init", "rewind", "trained"] = Field(
        default="rewind", description="weights the scores are computed at: init, the rewind point, or the end of dense training")
    rounds: int | None = Field(default=None, gt=0, le=10_000,
                               description="pruning rounds (default: the criterion's, 100 for synflow, else 1)")
    samples_per_class: int = Field(default=10, gt=0, le=100_000,
                                   description="data for the criteria that score training examples: this many per class")

    @field_validator("criterion_options")
    @classmethod
    def _options_of_the_criterion(cls, options: dict, info: ValidationInfo) -> dict:
        """The options as written (the stage keys hash them so), once the criterion's own class accepts them."""
        name = info.data.get("criterion")  # absent when the criterion itself was refused
        if name is None:
            return options
        typed = CRITERIA[name].options
        if typed is None:
            if options:
                raise ValueError(f"criterion {name} takes no options, got {', '.join(options)}")
            return options
        try:
            validated_options(f"criterion {name}", typed, options)
        except TypeError as err:  # an unknown name: pydantic reports ValueErrors only
            raise ValueError(str(err)) from None
        return options

    def typed_options(self) -> dict:
        """The criterion's options as its function receives them (`fn(scoring, **options)`): validated, with
        its defaults filled in."""
        typed = CRITERIA[self.criterion].options
        return dict(validated_options(f"criterion {self.criterion}", typed, self.criterion_options)) if typed else {}

    def base_name(self) -> str:
        return self.criterion

    def settings(self) -> dict:
        out = super().settings()
        if not out["criterion_options"]:
            del out["criterion_options"]  # none given: the settings, so the stage keys, of a spec without them
        return out

    def varied(self) -> dict:
        """The criterion's options are named as knobs of their own: `obd[probes=16]`."""
        out = super().varied()
        return {**{k: v for k, v in out.items() if k != "criterion_options"}, **out.get("criterion_options", {})}

    def resolved(self, training: dict) -> dict:
        out = {**self.settings(), "rounds": self.rounds or CRITERIA[self.criterion].rounds}
        fields = getattr(CRITERIA[self.criterion].options, "model_fields", {})
        defaults = {n: f.get_default(call_default_factory=True) for n, f in fields.items() if not f.is_required()}
        if defaults or self.criterion_options:
            out["criterion_options"] = {**defaults, **self.criterion_options}
        return out

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
