"""What every method family shares: its configuration's base class and the planning surface it adds stages
through.

A method family is one package under `workers/methods/`: its `__init__` holds the typed configuration of each
of its spec kinds (a pydantic model: the spec parses it, `validate --explain` prints it, the stage key hashes
it and the worker receives it, one name and one default per knob), the stages it adds to a seed's DAG, and its
RUNNERS: each stage kind it plans mapped to a function that imports its `run` module (the worker code) and runs
the stage. Configurations and planning import no torch, so the driver validates and plans specs without paying
torch's import.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Literal, Protocol

from pydantic import Field, ValidationError, field_validator, model_validator

from workers.strict import Strict

SanityCheck = Literal["shuffle", "reinit", "invert"]


class Runner(Protocol):
    """What runs a stage: its payload and its parents' outputs by role, on the dataset, to a
    `workers.stages.kit.StageResult` (typed loosely here, where no torch is imported)."""
    def __call__(self, stage: dict, inputs: dict, data: Any, on_epoch: Callable[[dict], None] | None = None) -> Any: ...


class MethodResources(Strict):
    """A method's own trial resources; unset fields fall back to the spec's `resources`."""
    cpus_per_trial: float | None = Field(default=None, gt=0, le=1024, description="CPUs per trial actor")
    gpus_per_trial: float | None = Field(default=None, ge=0, le=1, description="GPU share per trial actor")
    memory_per_trial_gb: float | None = Field(default=None, gt=0, le=65536,
                                              description="memory reserved per trial actor, GiB")


class SearchDimension(Strict):
    """One knob's search range: exactly one of loguniform [low, high], uniform [low, high], or choice [values]."""
    loguniform: tuple[float, float] | None = Field(default=None, description="log-uniform on [low, high], low > 0")
    uniform: tuple[float, float] | None = Field(default=None, description="uniform on [low, high]")
    choice: list[float | int | str | bool] | None = Field(default=None, min_length=1, max_length=1000,
                                                          description="one of these values")

    @model_validator(mode="after")
    def _one_range(self) -> "SearchDimension":
        given = [k for k in ("loguniform", "uniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, choice (got {', '.join(given) or 'none'})")
        for kind in ("loguniform", "uniform"):
            bounds = getattr(self, kind)
            if bounds is not None:
                low, high = bounds
                if not low < high:
                    raise ValueError(f"{kind} [{low:g}, {high:g}] is an empty range: low must be below high")
                if kind == "loguniform" and low <= 0:
                    raise ValueError(f"loguniform needs low > 0, got {low:g}")
        if self.choice is not None and len(set(map(repr, self.choice))) != len(self.choice):
            raise ValueError("choice lists a value twice")
        return self

    def extremes(self) -> list:
        """The values a knob must accept for every draw to be valid: the choices, or a range's bounds and a
        fractional draw inside it (so a whole-number knob refuses a continuous range before any trial runs)."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.loguniform or self.uniform
        return [low, high, low + (high - low) * 0.381966]

    def holds(self, value) -> bool:
        """Whether `value` lies in the range (or is one of the choices)."""
        if self.choice is not None:
            return value in self.choice
        low, high = self.loguniform or self.uniform
        return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high

    def size(self) -> int | None:
        """How many distinct values the range holds (None: a continuum)."""
        return len(self.choice) if self.choice is not None else None


TRAINING_PREFIX = "training."  # a search-space key on the retraining recipe, e.g. training.lr


def knob_value(settings: dict, knob: str):
    """A search-space knob's value in a configuration's settings (None where unset): `<field>.<option>` is one
    option of a mapping of options (criterion_options.damping)."""
    field, dot, option = knob.partition(".")
    if dot and isinstance(settings.get(field), dict):
        return settings[field].get(option)
    return settings.get(knob)


class MethodConfig(Strict):
    """Base of every method entry. Subclasses add `kind: Literal[...]`, their knobs, and `add_stages`."""
    # Knobs that name the method rather than vary it (they are in its base name, not its bracketed options).
    IDENTITY: ClassVar[tuple[str, ...]] = ()
    # Sanity checks this family's stages support.
    SANITY_CHECKS: ClassVar[tuple[str, ...]] = ("shuffle", "reinit", "invert")
    # Fields that change no stage's output: never hashed, never in a label.
    UNHASHED: ClassVar[tuple[str, ...]] = ("resources", "sanity_checks", "tune")
    # Fields that are a mapping of options: a search space tunes one option as `<field>.<option>`.
    OPTION_FIELDS: ClassVar[tuple[str, ...]] = ()

    resources: MethodResources | None = Field(
        default=None, description="this method's trial resources {cpus_per_trial, gpus_per_trial, memory_per_trial_gb}; "
                                  "unset fields come from the spec's resources; actors are pooled per shape")
    sanity_checks: list[SanityCheck] = Field(
        default_factory=list,
        description="ablations that add rows: shuffle (layerwise), reinit (fresh weights), invert (keep the lowest scores)")
    tune: dict[str, SearchDimension] | None = Field(
        default=None, description="tune this method with the spec's tuning budget: a search space over its own knobs "
                                  "and the retraining recipe's (training.lr, ...), e.g. {training.lr: {loguniform: [0.01, 0.3]}}; "
                                  "its rows are labelled [tuned]")

    @model_validator(mode="after")
    def _tunable_knobs(self) -> "MethodConfig":
        """Every knob of the search space exists, and every value the space can draw is valid for it."""
        for knob, dimension in (self.tune or {}).items():
            if knob.startswith(TRAINING_PREFIX):
                continue  # recipe knobs are checked by the spec, which knows the recipe
            fields = [f for f in type(self).model_fields if f not in ("kind", *self.UNHASHED, "tune")]
            if knob not in fields and knob.partition(".")[0] not in self.OPTION_FIELDS:
                options = "".join(f", an option of {f} as {f}.<name>" for f in self.OPTION_FIELDS)
                raise ValueError(f"tune.{knob}: {self.kind} has no knob {knob!r}; its knobs: {', '.join(fields)}"
                                 f"{options}, and the recipe's as training.<name>")
            for value in dimension.extremes():
                try:
                    type(self).model_validate(self._with(self.settings(), knob, value))
                except ValidationError as err:
                    why = err.errors()[0]["msg"].replace("Value error, ", "")
                    hint = "; a whole-number knob takes {choice: [...]}" if "fractional" in why else ""
                    raise ValueError(f"tune.{knob}: {value:.6g} is not a valid {knob} ({why}){hint}"
                                     if isinstance(value, float) else
                                     f"tune.{knob}: {value!r} is not a valid {knob} ({why})") from None
        return self

    @field_validator("sanity_checks")
    @classmethod
    def _supported_checks(cls, checks: list[str]) -> list[str]:
        unsupported = [c for c in checks if c not in cls.SANITY_CHECKS]
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)} not available for this method; "
                             f"it supports {', '.join(cls.SANITY_CHECKS) or 'none'}")
        if len(set(checks)) != len(checks):
            raise ValueError("a sanity check is listed twice")
        return checks

    # ------------------------------------------------------------ naming
    def base_name(self) -> str:
        """The method's name before its options: the kind, unless a family names itself by an identity knob."""
        return self.kind  # type: ignore[attr-defined]

    def varied(self) -> dict[str, Any]:
        """Knobs set away from their defaults (identity knobs, kind and unhashed fields aside), in field order."""
        out = {}
        for name, field in type(self).model_fields.items():
            if name in ("kind", *self.IDENTITY, *self.UNHASHED):
                continue
            value = getattr(self, name)
            if value != field.get_default(call_default_factory=True):
                out[name] = value
        return out

    def label(self) -> str:
        """The one naming rule of every result: `<base name>[knob=value,...]` with the knobs set away from their
        defaults, then `tuned` for a tuned method, e.g. `snip`, `magnitude[score_at=trained]`,
        `cts_reverse_kl[search_bn=running]`, `ltr[tuned]`; sanity checks append `+<check>` to it."""
        options = [f"{k}={_text(v)}" for k, v in self.varied().items()] + (["tuned"] if self.tune else [])
        return self.base_name() + (f"[{','.join(options)}]" if options else "")

    def settings(self) -> dict:
        """What the stage key hashes and the worker receives: every knob that changes a result, as plain JSON
        (for a tuned method, before tuning: the chosen values come from its tune stage)."""
        return self.model_dump(mode="json", exclude=set(self.UNHASHED))

    def resolved(self, training: dict) -> dict:
        """`settings()` with the defaults that depend on the run filled in (e.g. CTS's lr None: the training lr),
        as the untuned configuration a search starts from. A knob whose default the run alone decides stays None."""
        return self.settings()

    def tuned(self, values: dict) -> "MethodConfig":
        """This configuration with the method knobs of a tuning result applied (recipe knobs are the stage's)."""
        settings = self.settings()
        for knob, value in values.items():
            if not knob.startswith(TRAINING_PREFIX):
                settings = self._with(settings, knob, value)
        return type(self).model_validate(settings)

    @classmethod
    def _with(cls, settings: dict, knob: str, value) -> dict:
        """`settings` with one knob set; `<field>.<option>` sets one option of an OPTION_FIELDS mapping."""
        field, dot, option = knob.partition(".")
        if dot and field in cls.OPTION_FIELDS:
            return {**settings, field: {**(settings.get(field) or {}), option: value}}
        return {**settings, knob: value}

    # ------------------------------------------------------------ planning
    def add_stages(self, seed: "SeedStages", plan: "Planner") -> None:
        raise NotImplementedError(f"method kind {getattr(self, 'kind', '?')} adds no stages")


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "/".join(_text(v) for v in value)
    return str(value)


class StageRef(Protocol):
    """A planned stage as a family sees it (orchestrator.spec.plan.Stage)."""
    kind: str
    key: str
    seed: int
    params: dict
    parents: dict
    inputs: tuple
    cost_parents: tuple
    meta: dict
    work: float


class SeedStages(Protocol):
    """The stages every method of one seed shares, so that comparisons are paired."""
    seed: int
    init: StageRef      # θ₀
    warmup: StageRef    # dense training 0 -> k: θ_k
    dense: StageRef     # dense training k -> T: the dense baseline and θ_T


class Planner(Protocol):
    """The planning surface (orchestrator.spec.plan.Planner) a family adds its stages through."""
    targets: list[float]          # sorted target sparsities
    training_epochs: int
    warmup_work: float            # epochs 0 -> k
    retrain_work: float           # epochs k -> T

    def point(self, kind: str, seed: SeedStages, method: MethodConfig, *, params: dict, parents: dict,
              inputs: list[str], cost: list[str], work: float, label: str, level: int | None = None,
              requested: bool = True) -> StageRef: ...

    def sanity(self, method: MethodConfig, source: StageRef, seed: SeedStages, from_init: bool = False) -> None: ...
