"""What every method family shares: its configuration's base class and the planning surface it adds stages
through.

A method family is one package under `workers/methods/`: its `__init__` holds the typed configuration of each
of its spec kinds (a pydantic model: the spec parses it, `validate --explain` prints it, the stage key hashes
it and the worker receives it, one name and one default per knob) and the stages it adds to a seed's DAG; its
`run` module holds the worker code. Configurations and planning import no torch, so the driver validates and
plans specs without paying torch's import.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

SanityCheck = Literal["shuffle", "reinit", "invert"]


class Strict(BaseModel):
    """Unknown keys are errors and non-finite numbers are refused: a NaN or an infinity would only fail later."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MethodResources(Strict):
    """A method's own trial resources; unset fields fall back to the spec's `resources`."""
    cpus_per_trial: float | None = Field(default=None, gt=0, le=1024, description="CPUs per trial actor")
    gpus_per_trial: float | None = Field(default=None, ge=0, le=1, description="GPU share per trial actor")
    memory_per_trial_gb: float | None = Field(default=None, gt=0, le=65536,
                                              description="memory reserved per trial actor, GiB")


class MethodConfig(Strict):
    """Base of every method entry. Subclasses add `kind: Literal[...]`, their knobs, and `add_stages`."""
    # Knobs that name the method rather than vary it (they are in its base name, not its bracketed options).
    IDENTITY: ClassVar[tuple[str, ...]] = ()
    # Sanity checks this family's stages support.
    SANITY_CHECKS: ClassVar[tuple[str, ...]] = ("shuffle", "reinit", "invert")
    # Fields that change no stage's output: never hashed, never in a label.
    UNHASHED: ClassVar[tuple[str, ...]] = ("resources", "sanity_checks")

    resources: MethodResources | None = Field(
        default=None, description="this method's trial resources {cpus_per_trial, gpus_per_trial, memory_per_trial_gb}; "
                                  "unset fields come from the spec's resources; actors are pooled per shape")
    sanity_checks: list[SanityCheck] = Field(
        default_factory=list,
        description="ablations that add rows: shuffle (layerwise), reinit (fresh weights), invert (keep the lowest scores)")

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
        defaults, e.g. `snip`, `magnitude[score_at=trained]`, `cts_reverse_kl[search_bn=running]`; sanity checks
        append `+<check>` to it."""
        options = ",".join(f"{k}={_text(v)}" for k, v in self.varied().items())
        return self.base_name() + (f"[{options}]" if options else "")

    def settings(self) -> dict:
        """What the stage key hashes and the worker receives: every knob that changes a result, as plain JSON."""
        return self.model_dump(mode="json", exclude=set(self.UNHASHED))

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
    """A planned stage as a family sees it (orchestrator.plan.Stage)."""
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
    """The planning surface (orchestrator.plan.Planner) a family adds its stages through."""
    targets: list[float]          # sorted target sparsities
    training_epochs: int
    warmup_work: float            # epochs 0 -> k
    retrain_work: float           # epochs k -> T

    def point(self, kind: str, seed: SeedStages, method: MethodConfig, *, params: dict, parents: dict,
              inputs: list[str], cost: list[str], work: float, label: str, level: int | None = None,
              requested: bool = True) -> StageRef: ...

    def sanity(self, method: MethodConfig, source: StageRef, seed: SeedStages, from_init: bool = False) -> None: ...
