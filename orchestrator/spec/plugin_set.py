"""A spec's plugins as the driver knows them: learnt from a child process, never imported here (they import torch).

`discover` runs `python -m workers.plugins describe` with the spec's `code:` paths and `plugins:` modules: the
child imports them, checks the spec's options of plugin models, datasets and criteria with the plugins' own
classes, and prints what was registered (names, descriptions, option fields, identities). `activate` then makes the
driver's registries accept those names — criteria, models and datasets as descriptions only; a method
family's module itself, which is torch-free by contract (its configuration is validated and planned here).
The manifest travels with the spec (`SweepSpec.plugin_manifest()`) into the plan: its identities are in the
stage keys, its module names in every stage's payload.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

DESCRIBE_TIMEOUT_S = 600  # importing torch and the plugins on a loaded machine


class PluginSetError(ValueError):
    """A plugin problem; str() is one line."""


def discover(code: list[str], modules: list[str], uses: dict, source: str) -> dict:
    """The manifest of the spec's plugins, from a child process; PluginSetError (one line) otherwise."""
    for path in code:
        if not os.path.exists(path):
            raise PluginSetError(f"{source}: code: {path}: no such file or directory")
        if not (os.path.isdir(path) or path.endswith(".py")):
            raise PluginSetError(f"{source}: code: {path}: expected a package folder or a .py module")
    argv = [sys.executable, "-m", "workers.plugins", "describe", "--uses", json.dumps(uses, default=str)]
    for path in code:
        argv += ["--code", path]
    for module in modules:
        argv += ["--plugin", module]
    # The child finds ticketsweep as this process does (PYTHONPATH, the working directory) and nothing more.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=DESCRIBE_TIMEOUT_S, env=env,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PluginSetError(f"{source}: plugins: importing them took longer than {DESCRIBE_TIMEOUT_S} s") from None
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        why = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        raise PluginSetError(f"{source}: plugins: importing them failed: {why}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise PluginSetError(f"{source}: {answer['error']}")
    return {"code": list(code), "modules": list(modules), **answer}


_ACTIVE: dict = {"code": [], "families": []}


def activate(manifest: dict | None) -> None:
    """Make the driver's registries hold exactly the built-in things and those of `manifest` (None: none)."""
    from workers import methods, plugins
    from workers.data import registry as datasets
    from workers.methods.oneshot import criteria
    from workers.models import registry as models

    for key in plugins.REGISTERED:
        what, name = key.split(":", 1)
        if what == "model":
            models.remove_model_descriptor(name)
        elif what == "dataset":
            datasets.remove_dataset_descriptor(name)
    plugins.REGISTERED.clear()  # a family module imported here registers itself again
    for name in [n for n, c in criteria.CRITERIA.items() if c.plugin is not None]:
        del criteria.CRITERIA[name]
    methods.reset()
    _forget_modules(_ACTIVE["code"])
    _ACTIVE.update(code=[], families=[])
    if not manifest:
        return
    for key, thing in manifest["things"].items():
        what, name = key.split(":", 1)
        if what == "criterion":
            options = _described_options(name, thing["options"]) if thing["options"] else None
            criteria.CRITERIA[name] = criteria.Criterion(name, _runs_in_workers(name), thing["description"],
                                                         thing["needs_data"], thing["rounds"], plugin=thing["module"],
                                                         options=options)
        elif what == "model":
            models.register_model_descriptor(models.ModelDescriptor(
                name, thing["description"] or f"plugin {thing['module']}", _runs_in_workers(name),
                _described_options(name, thing["options"])))
        elif what == "dataset" and "test_size" in thing:  # the spec's dataset: its facts for the spec's options
            datasets.register_dataset_descriptor(datasets.DatasetDescriptor(
                name, thing["description"] or f"plugin {thing['module']}", _runs_in_workers(name),
                thing["train_size"], tuple(thing["input_shape"]), thing["num_classes"], thing["test_size"],
                _described_options(name, thing["options"])))
        if what in ("model", "dataset"):
            plugins.REGISTERED[key] = {**thing, "obj": None}
    methods.oneshot.use_criteria()
    _ACTIVE["code"] = list(manifest["code"])
    families = sorted({t["family"] for t in manifest["things"].values() if t["what"] == "family"})
    if families:
        _import_families(families, manifest)
    methods.refresh()


def _runs_in_workers(name: str):
    def run(*_, **__):
        raise RuntimeError(f"{name} is a plugin's: it runs in workers, which import the plugin")
    return run


def _described_options(name: str, fields: list[dict]) -> type:
    """The options of a plugin's model or dataset as the driver knows them: their names, defaults and
    descriptions (the child process validated the values with the plugin's own class)."""
    from typing import Any

    from pydantic import Field, create_model

    from workers.strict import Strict

    return create_model(f"{name}_options", __base__=Strict, **{
        f["name"]: (Any, Field(... if f["required"] else f["default"], description=f["description"]))
        for f in fields})


def _import_families(families: list[str], manifest: dict) -> None:
    """A plugin family's module, imported here: it must not import torch (the driver never does)."""
    from workers import methods, plugins

    for root in plugins.code_roots(manifest["code"]):
        if root not in sys.path:
            sys.path.append(root)
    had_torch = "torch" in sys.modules
    for name in families:
        try:
            module = importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - it imported in the child; here it may not (one line)
            raise PluginSetError(f"plugin family {name}: cannot be imported by the driver "
                                 f"({type(err).__name__}: {err})") from None
        if not had_torch and "torch" in sys.modules:
            raise PluginSetError(f"plugin family {name} ({module.__file__}) imports torch: a family's module holds "
                                 f"configuration and planning only, its runners (RUNNERS) import torch in workers")
        if module not in methods.FAMILIES:
            methods.add_family(module)


def _forget_modules(code: list[str]) -> None:
    """Drop modules imported from earlier `code:` paths, so another spec (or an edited file) imports afresh."""
    from workers import plugins

    for name, module in list(sys.modules.items()):
        if plugins.inside(getattr(module, "__file__", None), code):
            del sys.modules[name]
    for root in plugins.code_roots(code):
        while root in sys.path:
            sys.path.remove(root)


def things_of(manifest: dict | None, what: str) -> dict[str, dict]:
    return {k.split(":", 1)[1]: t for k, t in (manifest or {}).get("things", {}).items() if t["what"] == what}


def identities(manifest: dict | None, method) -> dict[str, str]:
    """{"<what>:<name>": identity} of the plugins a method entry uses: its family, its criterion."""
    if not manifest:
        return {}
    things, out = manifest["things"], {}
    family = things.get(f"family:{method.kind}")
    if family:
        out[f"family:{method.kind}"] = family["identity"]
    criterion = getattr(method, "criterion", None)
    if criterion is not None and f"criterion:{criterion}" in things:
        out[f"criterion:{criterion}"] = things[f"criterion:{criterion}"]["identity"]
    return out


def used_text(manifest: dict | None, model: str, dataset: str, params: dict) -> str | None:
    """Which plugins produced a stage's result, for its row's `versions`: its model's and dataset's, and those
    its method uses (params["plugins"]), each with its identity; None for a stage of built-in things only."""
    if not manifest:
        return None
    keys = [f"model:{model}", f"dataset:{dataset}", *params.get("plugins", {})]
    things = [manifest["things"][k] for k in dict.fromkeys(keys) if k in manifest["things"]]
    return "; ".join(f"{t['what']} {t['name']} from {t['module']} {t['identity']}" for t in things) or None


def payload(manifest: dict | None) -> dict | None:
    """What a worker needs to import the plugins and check their identities (the plan config's `plugins`)."""
    if not manifest:
        return None
    return {"code": manifest["code"], "modules": manifest["modules"],
            "things": {k: {"module": t["module"], "identity": t["identity"]} for k, t in manifest["things"].items()}}


def files_line(manifest: dict | None) -> str | None:
    """`validate` and `plan`: which plugin files the sweep imports."""
    if not manifest:
        return None
    files = [f"{m} ({f})" for m, f in manifest.get("files", {}).items()]
    return "plugins imported: " + ", ".join(files)

