"""The method families: every kind a spec's `methods` may name, with its configuration, planning and runners.

Adding a family is one package here plus its line in FAMILIES; nothing else in the driver or the workers
branches on method kinds. Torch-free: each family's `__init__` holds configuration, planning and RUNNERS, whose
functions import the family's worker code (`run.py`) only when `workers.stages.dispatch` runs a stage of theirs.
"""
from __future__ import annotations

from workers.methods import bip, cts, gradual, imp, oneshot
from workers.methods.base import MethodConfig, Runner

FAMILIES = (imp, oneshot, cts, gradual, bip)
CONFIGS: tuple[type[MethodConfig], ...] = tuple(c for family in FAMILIES for c in family.CONFIGS)
RUNNERS: dict[str, Runner] = {kind: run for family in FAMILIES for kind, run in family.RUNNERS.items()}
_BY_KIND = {c.model_fields["kind"].annotation.__args__[0]: c for c in CONFIGS}
KINDS = tuple(_BY_KIND)


def config_from(settings: dict) -> MethodConfig:
    """A method configuration back from the settings a stage carries (`MethodConfig.settings()`)."""
    kind = settings.get("kind")
    if kind not in _BY_KIND:
        raise ValueError(f"unknown method kind {kind!r}; known: {', '.join(KINDS)}")
    return _BY_KIND[kind].model_validate(settings)
