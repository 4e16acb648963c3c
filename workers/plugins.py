"""The plugin API: a researcher's criterion, model, dataset or method family enters a sweep from their own files.

A plugin module calls these when it is imported (docs/extending.md has the recipes):

    register_criterion(fn, description=..., needs_data=..., rounds=..., options=...)   a one-shot criterion
    register_model(name, builder, options=..., output_layer=..., prune_output=...)
    register_dataset(name, loader, train_size=..., options=..., fingerprint=...)
    register_family(module)                                                a whole method family

A spec names its plugins explicitly: `code:` (paths relative to the spec file) and `plugins:` (module names).
A plugin module must live inside a `code:` path, or belong to an installed distribution that declares a
`ticketsweep.plugins` entry point; nothing else is ever imported because a spec named it.

The driver never imports torch, and a plugin usually does at its top: the driver learns what the plugins
register (names, option fields, their identities) from `python -m workers.plugins describe ...`, a child
process that imports them and prints JSON; workers import them before a stage runs. A plugin's identity is a
digest of its source (the module defining the registered function and every module of the `code:` paths it
imports, found statically), or its distribution's name and version: it is part of the key of every stage
that uses it, so editing a plugin runs its stages again and nothing else.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import sys
import traceback
from modulefinder import ModuleFinder
from pathlib import Path
from typing import Callable

from workers import methods
from workers.methods.oneshot import criteria as _criteria

ENTRY_POINT_GROUP = "ticketsweep.plugins"

__all__ = ["register_criterion", "register_model", "register_dataset", "register_family", "PluginError",
           "ENTRY_POINT_GROUP"]


class PluginError(ValueError):
    """A plugin that cannot be used; str() is one line naming the plugin (its file and line where known)."""


# What plugins registered in this process: "<what>:<name>" -> entry ({"what", "name", "module", "where", ...,
# and the object itself under "obj", never sent anywhere}).
REGISTERED: dict[str, dict] = {}
_loading: list[str] = []   # the plugin modules being imported (registrations are attributed to the innermost)
_CODE: list[str] = []      # the code: paths plugins were imported from in this process (on a worker: Ray's copies)


# ------------------------------------------------------------------ the public registration functions

def register_criterion(fn: Callable | None = None, *, name: str | None = None, description: str = "",
                       needs_data: bool = False, rounds: int = 1, options: type | None = None):
    """Register a one-shot saliency criterion: `fn(scoring, **options) -> {parameter name: score}`, higher =
    keep, with the same toolkit (workers/methods/oneshot/scoring.py `Scoring`) as the built-in ones. A spec
    uses it as `{kind: oneshot, criterion: <name>, criterion_options: {...}}`. Usable as a decorator, with or
    without arguments.

    `options`: a pydantic model class of the criterion's options (typed, with defaults); without it the
    function's keyword parameters after the toolkit are its options (none: it takes none). The function
    receives them validated, defaults filled in, as keyword arguments; a search space tunes one as
    `criterion_options.<name>`. An option may not be named like a one-shot knob (`rounds`, ...): labels name
    both alike (`obd[probes=16]`)."""
    def register(f: Callable) -> Callable:
        label = name or f.__name__
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise PluginError(f"{_caller()}: criterion {label}: rounds must be a positive integer, got {rounds!r}")
        _check_options(options, "criterion", label)
        typed = options or _signature_options(f, 1)
        knobs = [n for n in typed.model_fields if n in methods.oneshot.OneShotMethod.model_fields]
        if knobs:
            raise PluginError(f"{_caller()}: criterion {label}: option {knobs[0]!r} is named like a one-shot knob; "
                              f"choose another name")
        _claim("criterion", label, [n for n, c in _criteria.CRITERIA.items() if c.plugin is None], f)
        _criteria.CRITERIA[label] = _criteria.Criterion(label, f, description or (f.__doc__ or label).strip(),
                                                        bool(needs_data), rounds, plugin=_module_of(f),
                                                        options=typed if typed.model_fields else None)
        REGISTERED["criterion:" + label].update(description=_criteria.CRITERIA[label].description,
                                               needs_data=bool(needs_data), rounds=rounds,
                                               options=_option_fields(typed))
        methods.oneshot.use_criteria()
        methods.refresh()
        return f

    return register(fn) if fn is not None else register


def register_model(name: str, builder: Callable, *, options: type | None = None, output_layer: str | None = None,
                   prune_output: bool = False, description: str = "") -> None:
    """Register a model: `builder(input_shape, num_classes, **options) -> nn.Module`.

    `options`: a pydantic model class of the builder's options (typed, with defaults); without it the
    builder's own keyword parameters are its options. Prunable are the weights of every Linear, Conv1d and
    Conv2d; the output layer (`output_layer`, default: the last Linear module) is pruned only with
    `prune_output` (default False) or the spec's `prune_output`. A built module's own `output_layer`,
    `prune_output` and `prunable_layers` attributes win over these."""
    from workers.models.registry import ModelDescriptor, model_names, register_model_descriptor

    _check_callable(builder, "model", name)
    _check_options(options, "model", name)
    _claim("model", name, [n for n in model_names() if f"model:{n}" not in REGISTERED], builder)
    label = f"model {name} (plugin {REGISTERED['model:' + name]['module']})"
    typed = options or _signature_options(builder, 2)

    def build(input_shape, num_classes, **chosen):
        from torch import nn

        try:
            model = builder(input_shape, num_classes, **chosen)
        except Exception as err:  # noqa: BLE001 - the plugin's failure, on one line naming it
            raise PluginError(f"{label}: the builder raised {failure_text(err)}") from None
        if not isinstance(model, nn.Module):
            raise PluginError(f"{label}: the builder returned {type(model).__name__}, not a torch.nn.Module")
        if not hasattr(model, "output_layer"):
            linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
            model.output_layer = output_layer or (linear[-1] if linear else None)
        return model

    register_model_descriptor(ModelDescriptor(name, description or (builder.__doc__ or name).strip(), build, typed,
                                              output_layer=None, prune_output=bool(prune_output)))
    REGISTERED["model:" + name].update(options=_option_fields(typed), description=description,
                                       output_layer=output_layer, prune_output=bool(prune_output))


def register_dataset(name: str, loader: Callable, *, train_size: int, options: type | None = None,
                     fingerprint: Callable | None = None, description: str = "") -> None:
    """Register a dataset: `loader(**options)` returns a mapping with `x_train`, `y_train`, `x_test`, `y_test`
    (tensors or arrays; x float, y class indices) and optionally `x_val`, `y_val` (an official validation
    split: used instead of holding out `dataset.validation` of the training set) and `num_classes`.

    `train_size`: the number of training examples (the driver's work estimate before anything ran).
    `fingerprint(**options) -> str`: the content of files the loader reads, if it reads any: it is part of the
    stage keys (so changed files run again) and checked by every worker before it trains."""
    from workers.data.registry import DatasetDescriptor, dataset_names, register_dataset_descriptor

    _check_callable(loader, "dataset", name)
    _check_options(options, "dataset", name)
    if fingerprint is not None:
        _check_callable(fingerprint, "dataset", name)
    if not isinstance(train_size, int) or isinstance(train_size, bool) or train_size < 1:
        raise PluginError(f"{_caller()}: dataset {name}: train_size must be a positive integer, got {train_size!r}")
    _claim("dataset", name, [n for n in dataset_names() if f"dataset:{n}" not in REGISTERED], loader)
    label = f"dataset {name} (plugin {REGISTERED['dataset:' + name]['module']})"
    typed = options or _signature_options(loader, 0)
    loaded: dict[str, tuple] = {}

    def facts(chosen: dict) -> tuple:
        key = json.dumps(chosen, sort_keys=True, default=str)
        if key not in loaded:  # loaded once per process and options: the facts below read the same tensors
            loaded[key] = _tensors(label, loader, chosen, train_size)
        return loaded[key]

    def load(root=None, **chosen) -> tuple:
        return facts(chosen)[:-1]

    def fact(index):
        return lambda validated: facts(dict(validated))[-1][index]

    register_dataset_descriptor(DatasetDescriptor(
        name, description or (loader.__doc__ or name).strip(), load, train_size=train_size, input_shape=fact(1),
        num_classes=fact(2), test_size=fact(3), options=typed))
    REGISTERED["dataset:" + name].update(options=_option_fields(typed), train_size=train_size,
                                         description=description, fingerprint=fingerprint)


def _tensors(label: str, loader: Callable, chosen: dict, train_size: int) -> tuple:
    """The loader's data as the registry's tuple of tensors, and (train size, input shape, classes, test size)."""
    import numpy as np
    import torch

    from workers.data.files import DataError

    try:
        parts = loader(**chosen)
    except Exception as err:  # noqa: BLE001 - the plugin's failure, on one line naming it
        raise DataError(f"{label}: the loader raised {failure_text(err)}") from None
    if not isinstance(parts, dict) or not {"x_train", "y_train", "x_test", "y_test"} <= set(parts):
        raise DataError(f"{label}: the loader must return a mapping with x_train, y_train, x_test, y_test "
                        f"(and optionally x_val, y_val, num_classes)")
    order = ["x_train", "y_train", "x_test", "y_test"] + (["x_val", "y_val"] if parts.get("x_val") is not None else [])
    t = [torch.as_tensor(np.asarray(parts[k])) for k in order]
    t = [x.float() if k.startswith("x") else x.long() for k, x in zip(order, t)]
    if len(t[0]) != train_size:
        raise DataError(f"{label}: the loader gave {len(t[0])} training examples, registered train_size {train_size}")
    labels = torch.cat(t[1::2])
    classes = int(parts.get("num_classes") or int(labels.max()) + 1)
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise DataError(f"{label}: labels must lie in 0..{classes - 1}")
    return (*t, (len(t[0]), tuple(t[0].shape[1:]), classes, len(t[2])))


def _signature_options(fn: Callable, skip: int) -> type:
    """A typed options class from a function's keyword parameters (their defaults; no default: required)."""
    from typing import Any

    from pydantic import create_model

    from workers.strict import Strict

    params = list(inspect.signature(fn).parameters.values())[skip:]
    fields = {p.name: (Any, ... if p.default is p.empty else p.default) for p in params
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return create_model(f"{getattr(fn, '__name__', 'plugin')}_options", __base__=Strict, **fields)


def dataset_content(name: str, options: dict) -> str | None:
    """A plugin dataset's content fingerprint for `options`, or None (not a plugin's, or it gives none)."""
    entry = REGISTERED.get(f"dataset:{name}")
    if entry is None or entry.get("fingerprint") is None:
        return None
    from workers.data.registry import get_dataset_descriptor

    return str(entry["fingerprint"](**dict(get_dataset_descriptor(name).validated(options))))


def register_family(family) -> None:
    """Register a method family: a module shaped like a package of workers/methods/ — `CONFIGS` (its
    MethodConfig subclasses, each with a `kind` Literal and `add_stages`) and `RUNNERS` ({kind:
    "module:function"}). The module holds configuration and planning only and must not import torch: the
    driver imports it to validate and plan; the runners are imported by workers."""
    where = _caller()
    configs, runners = getattr(family, "CONFIGS", None), getattr(family, "RUNNERS", None)
    if not isinstance(configs, tuple) or not configs or not isinstance(runners, dict):
        raise PluginError(f"{where}: register_family({getattr(family, '__name__', family)!r}): a family module "
                          f"has CONFIGS (a tuple of MethodConfig classes) and RUNNERS ({{kind: 'module:function'}})")
    from workers.methods.base import MethodConfig

    for config in configs:
        if not (isinstance(config, type) and issubclass(config, MethodConfig)) or "kind" not in config.model_fields:
            raise PluginError(f"{where}: {family.__name__}.CONFIGS: {config!r} is not a MethodConfig with a kind")
        kind = methods.kind_of(config)
        if kind not in runners or not (callable(runners[kind]) or ":" in str(runners[kind])):
            raise PluginError(f"{where}: {family.__name__}.RUNNERS has no runner for kind {kind} (a function, or "
                              f"'module:function')")
    for config in configs:
        built_in = [methods.kind_of(c) for f in methods.BUILT_IN for c in f.CONFIGS]
        _claim("family", methods.kind_of(config), built_in, family, what_word="method kind")
        # The runners' modules are part of the family's identity (a function's: where it is defined).
        REGISTERED["family:" + methods.kind_of(config)].update(family=family.__name__, runners=sorted(
            {r.__module__ if callable(r) else str(r).split(":")[0] for r in runners.values()}))
    methods.add_family(family)


# ------------------------------------------------------------------ registration helpers

def _caller() -> str:
    """file:line of the plugin code that called a register function."""
    here = os.path.abspath(__file__)
    for frame in inspect.stack()[1:]:
        if os.path.abspath(frame.filename) != here:
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def _module_of(obj) -> str:
    return _loading[-1] if _loading else getattr(obj, "__module__", "?")


def _claim(what: str, name: str, taken, obj, what_word: str | None = None) -> None:
    where = _caller()
    word = what_word or what
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"{where}: {word} name {name!r} must be an identifier (letters, digits, _)")
    key = f"{what}:{name}"
    if key in REGISTERED:
        raise PluginError(f"{where}: {word} {name!r} is already registered by plugin {REGISTERED[key]['module']} "
                          f"({REGISTERED[key]['where']})")
    if name in taken:
        raise PluginError(f"{where}: {word} {name!r} is a built-in {word}; choose another name")
    REGISTERED[key] = {"what": what, "name": name, "module": _module_of(obj), "where": where,
                       "source": getattr(obj, "__module__", None), "obj": obj}


def _check_callable(fn, what: str, name: str) -> None:
    if not callable(fn):
        raise PluginError(f"{_caller()}: {what} {name}: expected a function, got {type(fn).__name__}")


def _check_options(options, what: str, name: str) -> None:
    from pydantic import BaseModel

    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(f"{_caller()}: {what} {name}: options must be a pydantic model class, got {options!r}")


def _option_fields(options) -> list[dict]:
    """The options a thing takes, as `validate --explain` shows them (a default as JSON, where it is JSON)."""
    out = []
    for n, f in options.model_fields.items():
        default = None if f.is_required() else f.get_default(call_default_factory=True)
        try:
            json.dumps(default)
        except TypeError:
            default = repr(default)
        out.append({"name": n, "type": _type_name(f.annotation), "required": f.is_required(), "default": default,
                    "description": f.description or ""})
    return out


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


# ------------------------------------------------------------------ which modules may be imported

def code_roots(code: list[str]) -> list[str]:
    """The sys.path entries that make the `code:` paths importable: each path's parent folder."""
    return list(dict.fromkeys(str(Path(p).parent) for p in code))


def inside(path: str | None, code: list[str]) -> bool:
    if not path:
        return False
    path = os.path.realpath(path)
    for c in code:
        c = os.path.realpath(c)
        if path == c or path.startswith(c.rstrip(os.sep) + os.sep):
            return True
    return False


def entry_point_distributions() -> dict[str, tuple[str, str]]:
    """Top-level module name -> (distribution, version) of every installed distribution that declares a
    `ticketsweep.plugins` entry point."""
    out = {}
    for dist in importlib.metadata.distributions():
        if not any(ep.group == ENTRY_POINT_GROUP for ep in dist.entry_points):
            continue
        tops = (dist.read_text("top_level.txt") or "").split()
        tops += [ep.value.split(":")[0].split(".")[0] for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        for top in tops:
            out[top] = (dist.metadata["Name"], dist.version)
    return out


def source_of(module: str, code: list[str]) -> dict:
    """Where a plugin module may be imported from: {"code": True} inside a `code:` path, {"distribution",
    "version"} for an installed plugin distribution; PluginError for anything else. Looks before importing:
    only the top-level name is resolved, which runs no code."""
    if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
        raise PluginError(f"plugins: {module!r} is not a module name")
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        places = [spec.origin] + list(spec.submodule_search_locations or [])
        if any(inside(p, code) for p in places):
            return {"code": True}
    installed = entry_point_distributions()
    if top in installed:
        return {"distribution": installed[top][0], "version": installed[top][1]}
    where = ("not found" if spec is None else f"found at {spec.origin or list(spec.submodule_search_locations)[0]}")
    raise PluginError(f"plugins: {module} ({where}) is neither inside a code: path nor part of an installed "
                      f"distribution declaring a {ENTRY_POINT_GROUP} entry point; a spec imports only those")


# ------------------------------------------------------------------ importing plugins

def import_plugins(modules: list[str], code: list[str]) -> None:
    """Import the plugin modules (each registers what it defines); PluginError, one line naming the file and
    line, for a module that may not be imported, fails to import, or registers something wrongly."""
    for root in code_roots(code):
        if root not in sys.path:
            sys.path.append(root)  # after everything else: a user module never shadows a library
    _CODE.extend(c for c in code if c not in _CODE)
    for module in modules:
        if module in sys.modules and any(e["module"] == module for e in REGISTERED.values()):
            continue
        source_of(module, code)
        _loading.append(module)
        try:
            importlib.import_module(module)
        except PluginError as err:
            raise PluginError(f"plugin {module}: {err}") from None
        except BaseException as err:  # noqa: BLE001 - any failure of user code at import is reported on one line
            raise PluginError(f"plugin {module}: {_where_it_failed(err, code)}") from None
        finally:
            _loading.pop()


def _where_it_failed(err: BaseException, code: list[str]) -> str:
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}: SyntaxError: {err.msg}"
    frames = traceback.extract_tb(err.__traceback__)
    user = [f for f in frames if inside(f.filename, code)] or frames
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    at = f"{user[-1].filename}:{user[-1].lineno}: " if user else ""
    return f"{at}{type(err).__name__}" + (f": {message}" if message else "")


def failure_text(err: BaseException) -> str:
    """`Type: message at file:line`, the line in the plugin's own code (as a path inside its code: path)."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}{': ' + first if first else ''}{where_in_plugin(err)}"


def where_in_plugin(err: BaseException) -> str:
    """' at <file>:<line>' of the innermost frame of an exception in plugin code, the file as a path below its
    code: path's folder (the same on every node, wherever Ray unpacked the code); '' if none is."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if inside(f.filename, _CODE)]
    if not frames:
        return ""
    path = os.path.realpath(frames[-1].filename)
    root = next(os.path.realpath(r) for r in code_roots(_CODE)
                if path.startswith(os.path.realpath(r) + os.sep))
    return f" at {os.path.relpath(path, root)}:{frames[-1].lineno}"


def identity(entry: dict, code: list[str]) -> str:
    """The identity of a registered thing: `sha256:<digest>` of its source files for a `code:` plugin,
    `<distribution>==<version>` for an installed one."""
    modules = [entry.get("source") or entry["module"], *entry.get("runners", []),
               *([entry["family"]] if entry.get("family") else [])]
    found = source_of(entry["module"], code)
    if "distribution" in found:
        return f"{found['distribution']}=={found['version']}"
    return "sha256:" + source_digest(modules, code)


def source_digest(modules: list[str], code: list[str]) -> str:
    """sha256 over (path relative to its code root, content) of the files of `modules` and of every module of
    the `code:` paths they import, transitively (read statically: nothing runs)."""
    roots = code_roots(code)
    finder = ModuleFinder(path=roots)
    tops = {Path(c).name[:-3] if c.endswith(".py") else Path(c).name for c in code}
    for module in modules:
        if module.split(".")[0] not in tops:
            continue  # not the user's code (e.g. a family reusing a built-in runner): ticketsweep's version covers it
        try:
            finder.import_hook(module)
        except ImportError as err:
            raise PluginError(f"plugin {module}: its source cannot be read ({err})") from None
    files = sorted({os.path.realpath(m.__file__) for m in finder.modules.values()
                    if m.__file__ and inside(m.__file__, code)})
    h = hashlib.sha256()
    for path in files:
        root = next(r for r in roots if path.startswith(os.path.realpath(r) + os.sep))
        h.update(os.path.relpath(path, os.path.realpath(root)).encode() + b"\0")
        h.update(Path(path).read_bytes() + b"\0")
    return h.hexdigest()


def describe(modules: list[str], code: list[str], uses: dict | None = None) -> dict:
    """What importing the plugins registers, as JSON: every thing with its identity and options, and the
    problems of the spec's options for plugin models and datasets (`uses`: the spec's model and dataset)."""
    import_plugins(modules, code)
    things = {}
    for key, entry in REGISTERED.items():
        out = {k: v for k, v in entry.items() if k not in ("obj", "fingerprint")}
        out["identity"] = identity(entry, code)
        out["file"] = entry["where"].rsplit(":", 1)[0]
        things[key] = out
    problems, content = [], None
    from workers.data.registry import get_dataset_descriptor
    from workers.models.registry import get_model_descriptor

    for section, get in (("model", get_model_descriptor), ("dataset", get_dataset_descriptor)):
        given = (uses or {}).get(section) or {}
        name = given.get("name") if isinstance(given, dict) else None
        if not isinstance(name, str) or f"{section}:{name}" not in things:
            continue
        options = given.get("options") or {}
        descriptor = get(name)
        try:
            if not isinstance(options, dict):
                raise ValueError(f"expected a mapping of options, got {options!r}")
            descriptor.validated(options)
        except (TypeError, ValueError) as err:
            problems.append(f"{section}.options: {err}")
            continue
        if section == "dataset":
            try:
                things[f"dataset:{name}"].update(
                    train_size=descriptor.train_size_for(options), test_size=descriptor.test_size_for(options),
                    input_shape=list(descriptor.input_shape_for(options)),
                    num_classes=descriptor.num_classes_for(options))
                content = dataset_content(name, options)
            except Exception as err:  # noqa: BLE001 - the plugin's own failure, reported on one line
                problems.append(f"dataset: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    problems += _criterion_option_problems((uses or {}).get("methods"), things)
    files = {m: getattr(sys.modules.get(m), "__file__", None) for m in modules}
    return {"things": things, "files": files, "problems": problems, "dataset_content": content}


def _criterion_option_problems(entries, things: dict) -> list[str]:
    """The spec's `criterion_options` of plugin criteria, and the search ranges over them, checked by the
    criteria's own classes (the driver knows only the options' names). Only these: the driver reports any
    other problem of a method entry in its own words."""
    from pydantic import ValidationError

    field = methods.oneshot.OneShotMethod.OPTION_FIELDS[0]
    problems = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict) or entry.get("kind") != "oneshot" or \
                f"criterion:{entry.get('criterion')}" not in things:
            continue
        tune = entry.get("tune") if isinstance(entry.get("tune"), dict) else {}
        probe = {"kind": "oneshot", "criterion": entry["criterion"], field: entry.get(field, {}),
                 "tune": {k: v for k, v in tune.items() if k.startswith(field + ".")} or None}
        try:
            methods.oneshot.CONFIGS[0].model_validate(probe)
        except ValidationError as err:
            for e in err.errors():
                where, message = ".".join(map(str, e["loc"])), e["msg"].replace("Value error, ", "")
                if where.startswith(field) or (not where and message.startswith(f"tune.{field}.")):
                    problems.append(f"methods.{i}{'.' + where if where else ''}: {message}")
    return problems


# ------------------------------------------------------------------ in workers

def ensure(plugins: dict | None, shipped: bool = True) -> None:
    """Before a stage runs in a worker: import the sweep's plugins (once per process) and check that each thing
    a stage may use has the identity the sweep was planned with, so a worker never runs other code than the
    keys name. `plugins` is the plan's `config["plugins"]` (None: the sweep uses none). On Ray (`shipped`) the
    code comes only from the runtime env the driver gave the actor; without Ray (`python -m workers`, the
    driver's input check) from the spec's own `code:` paths."""
    if not plugins:
        return
    local = [] if shipped else [p for p in plugins.get("code", []) if os.path.exists(p)]
    for root in code_roots(local):
        if root not in sys.path:
            sys.path.append(root)
    # Where each plugin resolves here first (on Ray: the runtime env's copy).
    code = list(dict.fromkeys(_shipped(plugins.get("code", [])) + local))
    import_plugins(plugins["modules"], code)
    for key, planned in plugins.get("things", {}).items():
        entry = REGISTERED.get(key)
        if entry is None:
            raise PluginError(f"plugin {planned['module']}: registered no {key.replace(':', ' ')} in this worker")
        if "found" not in entry:
            entry["found"] = identity(entry, code)
        if entry["found"] != planned["identity"]:
            raise PluginError(f"plugin {planned['module']}: its source here ({entry['found'][:19]}) is not the "
                              f"source the sweep was planned with ({planned['identity'][:19]}): submit again")


def _shipped(code: list[str]) -> list[str]:
    """Where the `code:` paths (the driver's) resolve on this node: each package folder or module file by its
    name, found on sys.path (on Ray: where the runtime env unpacked it)."""
    out = []
    for path in code:
        name = Path(path).name[:-3] if path.endswith(".py") else Path(path).name
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            out.append(list(spec.submodule_search_locations)[0])
        elif spec is not None and spec.origin:
            out.append(spec.origin)
    return out


# ------------------------------------------------------------------ python -m workers.plugins

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.plugins",
                                     description="Import a spec's plugins and print what they register, as JSON.")
    parser.add_argument("command", choices=["describe"])
    parser.add_argument("--code", action="append", default=[], help="a code: path (absolute)")
    parser.add_argument("--plugin", action="append", default=[], help="a plugin module name")
    parser.add_argument("--uses", default="{}", help="the spec's model and dataset sections, as JSON")
    args = parser.parse_args(argv)
    try:
        out = describe(args.plugin, args.code, json.loads(args.uses))
    except PluginError as err:
        print(json.dumps({"error": str(err)}))
        return 2
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    # Run as the module plugins import (`workers.plugins`), not as a second copy named __main__ whose
    # registry they would never see.
    from workers.plugins import main as _main

    sys.exit(_main())
