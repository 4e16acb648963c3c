"""The method families: every kind a spec's `methods` may name, with its configuration, planning and runners.

Adding a family is one package here plus its line in FAMILIES, or a plugin's `register_family`
(workers/plugins.py); nothing else in the driver or the workers branches on method kinds. Torch-free: each
family's `__init__` holds configuration, planning and RUNNERS, whose functions import the family's worker code
(`run.py`) only when `workers.stages.dispatch` runs a stage of theirs.
"""
from __future__ import annotations

from workers.methods import bip, cts, gradual, imp, oneshot
from workers.methods.base import MethodConfig, Runner

BUILT_IN = (imp, oneshot, cts, gradual, bip)
FAMILIES: tuple = BUILT_IN
CONFIGS: tuple[type[MethodConfig], ...] = ()
RUNNERS: dict[str, Runner] = {}
_BY_KIND: dict[str, type[MethodConfig]] = {}
KINDS: tuple[str, ...] = ()


def kind_of(config: type[MethodConfig]) -> str:
    return config.model_fields["kind"].annotation.__args__[0]


def refresh() -> None:
    """Index the families' configurations and runners again (a plugin added a family or a criterion). Readers
    look these up as `workers.methods.CONFIGS` at call time, not as names imported once."""
    global CONFIGS, RUNNERS, _BY_KIND, KINDS
    CONFIGS = tuple(c for family in FAMILIES for c in family.CONFIGS)
    RUNNERS = {kind: _runner(run) for family in FAMILIES for kind, run in family.RUNNERS.items()}
    _BY_KIND = {kind_of(c): c for c in CONFIGS}
    KINDS = tuple(_BY_KIND)


def _runner(run) -> Runner:
    """A family's runner: a function, or (a plugin's) 'module:function', imported when a stage first runs."""
    if callable(run):
        return run
    module, _, name = str(run).partition(":")

    def imported(stage, inputs, data, on_epoch=None):
        import importlib

        return getattr(importlib.import_module(module), name)(stage, inputs, data, on_epoch)
    return imported


def add_family(family) -> None:
    """Add a plugin's family (a module with CONFIGS and RUNNERS, the shape of a package here)."""
    global FAMILIES
    FAMILIES = (*FAMILIES, family)
    refresh()


def reset() -> None:
    """Only the built-in families again (the driver, before it activates another spec's plugins)."""
    global FAMILIES
    FAMILIES = BUILT_IN
    oneshot.use_criteria()
    refresh()


refresh()


def config_from(settings: dict) -> MethodConfig:
    """A method configuration back from the settings a stage carries (`MethodConfig.settings()`)."""
    kind = settings.get("kind")
    if kind not in _BY_KIND:
        raise ValueError(f"unknown method kind {kind!r}; known: {', '.join(KINDS)}")
    return _BY_KIND[kind].model_validate(settings)
