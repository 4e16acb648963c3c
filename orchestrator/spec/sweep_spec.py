"""Pydantic models of a sweep spec, and loading + validating one from YAML or JSON.

Every field has a description: `orchestrate validate --explain` prints them, so the
spec reference in the README and the code cannot drift apart.
"""
from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, Field, PrivateAttr, ValidationError, ValidationInfo, create_model, field_validator,
                      model_validator)

from orchestrator.analysis.sequential import MAX_SEEDS as MAX_LOOK_SEEDS
from orchestrator.spec.messages import field_line, format_errors
from orchestrator.spec.suggest import suggest
from orchestrator.spec import plugin_set
from workers import methods
from workers.data.registry import dataset_names, get_dataset_descriptor
from orchestrator.analysis.stats import FAILURES
from workers.methods import CONFIGS
from workers.methods.base import MethodResources, knob_value
from workers.methods.oneshot.criteria import CRITERIA
from workers.models.registry import get_model_descriptor, model_names
from workers.strict import OptionValues, Strict
from workers.training.recipe import REWIND_PATTERN, Recipe


class SpecError(ValueError):
    """A spec problem; str() is one line per problem, each naming the field or file."""


# Bounds on what a spec file may hold, whatever it holds: loading stays fast, small and quiet.
MAX_SPEC_BYTES = 1 << 20      # a real spec is a few kB
MAX_YAML_VALUES = 100_000     # values after YAML aliases are expanded (an alias "bomb" expands exponentially)
MAX_SEED = 2 ** 31 - 1


def _registered(value: str, names: tuple[str, ...], what: str) -> str:
    if value not in names:
        raise ValueError(f"unknown {what} {value!r}" + suggest(value, names, list_known=True))
    return value


def _valid_options(descriptor, options: dict, what: str) -> dict:
    """The options as written (the stage keys hash them so), once the descriptor's typed options accept them."""
    try:
        descriptor.options.model_validate(options)
    except ValidationError as err:
        problems = format_errors(err, f"{what} {descriptor.name}", descriptor.options).splitlines()
        raise ValueError("; ".join(problems)) from None
    return options


def _checked_options(get_descriptor, what: str):
    """The validator of an entry's `options`: the registered descriptor its `name` gives accepts them."""
    def check(options: dict, info: ValidationInfo) -> dict:
        name = info.data.get("name")  # absent when the name itself was refused
        return options if name is None else _valid_options(get_descriptor(name), options, what)
    return field_validator("options")(check)


class ModelSpec(Strict):
    """Which network to train."""
    name: str = Field(description="a registered model: `validate --explain` lists them under `models`, each with "
                                  "its options")
    options: OptionValues = Field(default_factory=dict, description="the model's options, e.g. hidden: [300, 100]")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered(v, model_names(), "model")

    _options = _checked_options(get_model_descriptor, "model")


class DatasetSpec(Strict):
    """Which data to train and test on."""
    name: str = Field(description="a registered dataset: `validate --explain` lists them under `datasets`, each "
                                  "with its options")
    root: str | None = Field(default=None, description="data root of a dataset read from files (orchestrate data "
                                                       "fetch fills it); None means $TICKETSWEEP_DATA, else "
                                                       "~/.cache/ticketsweep/data; "
                                                       "a location only: stage keys hash the files' content, so "
                                                       "changed files run again and the same files elsewhere do not")
    options: OptionValues = Field(default_factory=dict, description="the dataset's options, e.g. n_train: 512")
    validation: float = Field(
        default=0.1, ge=0, lt=1,
        description="fraction of the training set held out for validation (stratified, the same examples for every "
                    "seed and method; a dataset with an official validation split uses it instead); results report "
                    "the evaluation with the best validation accuracy; 0: none, the last evaluation is reported")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _registered(v, dataset_names(), "dataset")

    _options = _checked_options(get_dataset_descriptor, "dataset")

    def train_size(self) -> int:
        """The training-set size (before the validation split), for work estimates."""
        return get_dataset_descriptor(self.name).train_size_for(self.options)

    def test_size(self) -> int:
        return get_dataset_descriptor(self.name).test_size_for(self.options)


_KINDS = [c.model_fields["kind"].annotation.__args__[0] for c in CONFIGS]
MethodSpec = Annotated[Union[CONFIGS], Field(discriminator="kind")]  # every family's kinds (workers/methods)


class Ladder(Strict):
    """Geometric ladder of densities base**k for k = start..stop (sparsity = 1 - density)."""
    base: float = Field(gt=0, lt=1, description="kept fraction per step, e.g. 0.8")
    start: int = Field(default=1, ge=1, le=1000, description="first exponent")
    stop: int = Field(ge=1, le=1000, description="last exponent (inclusive)")

    @model_validator(mode="after")
    def _order(self) -> "Ladder":
        if self.stop < self.start:
            raise ValueError("ladder stop must be >= start")
        return self


# Recipe knobs a search space may tune (training.<knob>): not the ones that shape the shared warm-up and data
# order (epochs, batch_size, milestones, rewind), which every method of a seed must share.
TUNABLE_RECIPE = ("lr", "momentum", "nesterov", "weight_decay", "gamma", "grad_clip", "optimizer")


def _distinct(values: list, what: str) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct")
    return values


class TuningSpec(Strict):
    """The budget every tuned method gets (methods with a `tune` search space), and where they are tuned."""
    configurations: int = Field(default=8, ge=2, le=1000,
                                description="configurations tried per method, counting its untuned configuration")
    grace_period: int = Field(default=1, ge=1, le=100_000,
                              description="ASHA: training epochs every configuration runs before it may be stopped")
    reduction_factor: float = Field(default=3, gt=1, le=100, description="ASHA: keep the best 1/this at each rung")
    max_concurrent: int = Field(default=1, ge=1, le=1024,
                                description="trials at once; 1 makes ASHA's stopping, and so the choice, reproducible")
    sparsities: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        min_length=1, max_length=100, description="target sparsities the methods are tuned at (on the validation split)")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [1_000_000], min_length=1, max_length=100,
        description="seeds of the tuning runs, separate from the evaluation seeds by default")
    search_seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of the random search")

    _distinct_seeds = field_validator("seeds")(lambda v: _distinct(v, "tuning seeds"))


class UntilDecidedSpec(Strict):
    """What `submit --until-decided` decides: seeds are added look by look until every comparison is decided or the last look (the seed budget: all of `seeds`) is reached."""
    reference: str = Field(description="the method label every method of `methods` is compared with (A)")
    methods: list[str] = Field(min_length=1, max_length=100, description="method labels compared with the reference (B)")
    sparsities: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        default=None, max_length=1000, description="target sparsities compared (default: every target of the sweep)")
    looks: list[Annotated[int, Field(ge=1, le=MAX_LOOK_SEEDS)]] = Field(
        min_length=1, max_length=MAX_LOOK_SEEDS,
        description=f"seed counts at which the comparisons are analysed, increasing; the last is the seed budget "
                    f"(at most {MAX_LOOK_SEEDS})")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="family-wise error rate over all the comparisons")
    failures: Literal[FAILURES] = Field(
        default="chance", description="a seed whose run diverged (or was skipped after a divergence) counts at chance "
                                      "accuracy, or is left out, as in `compare --failures`")

    _distinct_methods = field_validator("methods")(lambda v: _distinct(v, "until_decided methods"))

    @field_validator("looks")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"looks must be increasing, got {v}")
        return v


class Resources(Strict):
    """What each trial actor gets, and how many run at once."""
    cpus_per_trial: float = Field(default=1, gt=0, le=1024, description="CPUs per trial actor (also its torch thread count)")
    gpus_per_trial: float = Field(default=0, ge=0, le=1, description="GPU share per trial actor; fractions pack trials on one GPU")
    memory_per_trial_gb: float | None = Field(default=None, gt=0, le=65536, description="memory reserved per trial actor in GiB (Ray's memory resource); none by default")
    max_concurrent: int = Field(default=2, gt=0, le=4096, description="trial actors alive at once, over all resource shapes")
    max_retries: int = Field(default=2, ge=0, le=100, description="retries of a stage whose trial actor or node died, or that "
                             "hung, and of a tuning trial that failed, died or hung")
    hang_floor_s: float = Field(default=120, gt=0, le=86_400,
                                description="a running stage silent this long (and longer than hang_factor times its "
                                            "slowest epoch so far) is hung: its actor is killed and it is retried; "
                                            "5x this before any epoch of its kind has finished")
    hang_factor: float = Field(default=10, ge=1, le=1000, description="see hang_floor_s")

    def shape(self, override: "MethodResources | None" = None) -> tuple[float, float, float | None]:
        """(CPUs, GPU share, memory bytes) of a trial actor, with a method's override applied."""
        o = override or MethodResources()
        memory = o.memory_per_trial_gb if o.memory_per_trial_gb is not None else self.memory_per_trial_gb
        return (o.cpus_per_trial if o.cpus_per_trial is not None else self.cpus_per_trial,
                o.gpus_per_trial if o.gpus_per_trial is not None else self.gpus_per_trial,
                memory * 2 ** 30 if memory is not None else None)


class SweepSpec(Strict):
    """A sweep: methods x sparsities x seeds on one model, dataset and training recipe."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100,
                      description="sweep name: up to 100 letters, digits, _ . -, starting with a letter or digit")
    store: str = Field(default="./ticketsweep-store", description="results store: a local path or s3://, gs:// URI; "
                       "a relative path is taken from the spec file's folder; without this key, ./ticketsweep-store "
                       "in the working directory")
    model: ModelSpec
    dataset: DatasetSpec
    training: Recipe
    prune_output: bool | None = Field(default=None, description="prune the output layer (default: per model)")
    methods: list[MethodSpec] = Field(min_length=1, max_length=1000,
                                      description=f"method entries; kind is one of {', '.join(_KINDS)}")
    sparsities: list[float] | Ladder = Field(description="target sparsities in (0, 1), or a density ladder {base, start, stop}")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        min_length=1, max_length=10_000, description="seeds; each gives its own init and data order, shared by all methods")
    resources: Resources = Field(default_factory=Resources)
    tuning: TuningSpec | None = Field(default=None, description="The tuning budget; needed when a method has `tune`.")
    until_decided: UntilDecidedSpec | None = Field(
        default=None, description="What `submit --until-decided` decides; plain `submit` runs every seed.")
    code: list[str] = Field(default_factory=list, max_length=100,
                            description="your own modules or packages (paths relative to the spec file) that "
                                        "`plugins` may import; shipped to every worker with Ray's runtime env")
    plugins: list[str] = Field(default_factory=list, max_length=100,
                               description="plugin modules to import (each registers its criteria, models, datasets "
                                           "or method families: workers/plugins.py); each must live inside a code: "
                                           "path or an installed distribution with a ticketsweep.plugins entry point")
    # What the plugins registered, as the child process that imported them reported it (plugin_set.discover).
    _plugins: dict | None = PrivateAttr(default=None)

    def plugin_manifest(self) -> dict | None:
        return self._plugins

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one sparsity")
            if len(v) > 1000:
                raise ValueError(f"at most 1000 sparsities, got {len(v)}")
            bad = [s for s in v if not 0 < s < 1]
            if bad:
                raise ValueError(f"expected numbers in (0, 1), got {bad}")
        return v

    _distinct_seeds = field_validator("seeds")(lambda v: _distinct(v, "seeds"))

    @model_validator(mode="after")
    def _precision_needs_a_gpu(self) -> "SweepSpec":
        if self.training.precision == "fp32":
            return self
        # The shared stages (init, warm-up, dense) run with the spec's own resources.
        where = "resources.gpus_per_trial is 0" if self.resources.gpus_per_trial == 0 else None
        for i, m in enumerate(self.methods):
            if where is None and self.resources.shape(m.resources)[1] == 0:
                where = f"methods.{i}.resources.gpus_per_trial is 0"
        if where:
            raise ValueError(f"training.precision {self.training.precision} needs CUDA, but {where}: "
                             f"give every trial a GPU share or use fp32")
        return self

    @model_validator(mode="after")
    def _unique_methods(self) -> "SweepSpec":
        labels = [m.label() for m in self.methods]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(f"methods listed twice: {', '.join(sorted(dup))}")
        return self

    @model_validator(mode="after")
    def _tuning_makes_sense(self) -> "SweepSpec":
        tuned = [(i, m) for i, m in enumerate(self.methods) if m.tune]
        if not tuned:
            return self
        if self.tuning is None:
            raise ValueError(f"methods.{tuned[0][0]}.tune needs a `tuning` section: the budget every tuned method "
                             f"gets, and the sparsities it is tuned at")
        if not self.dataset.validation:
            raise ValueError(f"dataset.validation: 0 leaves nothing to tune methods.{tuned[0][0]} on (the test set "
                             f"never selects anything); give a fraction such as 0.1")
        budget = self.tuning
        for i, m in tuned:
            untuned = m.resolved(self.training.model_dump())
            for knob, dimension in m.tune.items():
                if knob.startswith("training."):
                    name = knob[len("training."):]
                    if name not in TUNABLE_RECIPE:
                        raise ValueError(f"methods.{i}.tune.{knob}: not a tunable recipe knob; tunable: "
                                         f"{', '.join('training.' + k for k in TUNABLE_RECIPE)}")
                    for value in dimension.extremes():
                        try:
                            Recipe.model_validate({**self.training.model_dump(), name: value})
                        except ValidationError as err:
                            why = err.errors()[0]["msg"].replace("Value error, ", "")
                            raise ValueError(f"methods.{i}.tune.{knob}: {value!r} is not a valid {name} ({why})") \
                                from None
                # The search tries the untuned configuration first: its value must be one the range can hold.
                default = (getattr(self.training, knob[len("training."):], None) if knob.startswith("training.")
                           else knob_value(untuned, knob))
                if default is None:
                    raise ValueError(f"methods.{i}.tune.{knob}: its default is decided by the run; give {knob} a "
                                     f"value to tune it from")
                if not dimension.holds(default):
                    raise ValueError(f"methods.{i}.tune.{knob}: the untuned value {default!r} is outside the search "
                                     f"range (the search tries the untuned configuration first)")
            sizes = [d.size() for d in m.tune.values()]
            if all(size is not None for size in sizes):
                distinct = 1
                for size in sizes:
                    distinct *= size
                if budget.configurations > distinct:
                    raise ValueError(f"tuning.configurations: {budget.configurations} configurations, but methods.{i}'s "
                                     f"search space holds only {distinct}")
        retrain_epochs = self.training.epochs - _rewind_epochs(self.training)
        if budget.grace_period >= retrain_epochs:
            raise ValueError(f"tuning.grace_period: {budget.grace_period} epochs is not below a retraining's "
                             f"{retrain_epochs:g}: no configuration could be stopped before its first retraining ends")
        return self

    @model_validator(mode="after")
    def _until_decided_names_the_sweep(self) -> "SweepSpec":
        block = self.until_decided
        if block is None:
            return self
        labels = [m.label() for m in self.methods]
        named = [("reference", block.reference)] + [(f"methods.{i}", m) for i, m in enumerate(block.methods)]
        for where, name in named:
            if name not in labels:
                raise ValueError(f"until_decided.{where}: no method {name!r} in the sweep; methods: "
                                 f"{', '.join(labels)}")
        if block.reference in block.methods:
            raise ValueError(f"until_decided.methods: {block.reference!r} is the reference")
        targets = self.target_sparsities()
        for i, sp in enumerate(block.sparsities or []):
            if round(sp, 9) not in targets:
                raise ValueError(f"until_decided.sparsities.{i}: {sp:g} is not a target sparsity of the sweep "
                                 f"({', '.join(f'{t:g}' for t in targets)})")
        if block.looks[-1] != len(self.seeds):
            raise ValueError(f"until_decided.looks: the last look ({block.looks[-1]}) is the seed budget and must "
                             f"equal the number of seeds ({len(self.seeds)})")
        return self

    def target_sparsities(self) -> list[float]:
        """Sorted, de-duplicated target sparsities (rounded to 1e-9 so ladders compare equal)."""
        if isinstance(self.sparsities, Ladder):
            lad = self.sparsities
            values = [1 - lad.base ** k for k in range(lad.start, lad.stop + 1)]
        else:
            values = list(self.sparsities)
        return sorted({round(v, 9) for v in values})


# ---------------------------------------------------------------- loading

class _SafeLoader(yaml.SafeLoader):
    """SafeLoader: YAML tags that would build Python objects are errors, not objects."""


# Words for union fields where the generic "a list of numbers or a mapping {...}" would say less.
_EXPECTED = {"sparsities": "a list of numbers in (0, 1), or a ladder {base, start, stop}",
             "methods.search": "'long', 'short' or a number of epochs"}


def _format_errors(err: ValidationError, source: str, model: type[BaseModel] = SweepSpec) -> str:
    return format_errors(err, source, model, _EXPECTED)


_MODELS: dict[tuple, type] = {}


def spec_model() -> type[SweepSpec]:
    """SweepSpec, or its subclass whose `methods` accept the method kinds and criteria plugins added."""
    configs = methods.CONFIGS
    if configs == CONFIGS:
        return SweepSpec
    if configs not in _MODELS:
        field = SweepSpec.model_fields["methods"]
        kinds = ", ".join(methods.KINDS)
        _MODELS[configs] = create_model(
            "SweepSpec", __base__=SweepSpec, __doc__=SweepSpec.__doc__,
            methods=(list[Annotated[Union[configs], Field(discriminator="kind")]],
                     Field(min_length=1, max_length=1000, description=field.description.rsplit(" one of ", 1)[0]
                           + f" one of {kinds}")))
    return _MODELS[configs]


def parse_spec(data, source: str = "spec", folder: str | Path | None = None) -> SweepSpec:
    """Validate a spec's fields. Its `code:` paths are taken from `folder` (the spec file's; default: the
    working directory); its plugins are imported by a child process, whose answer the spec keeps."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a mapping of fields, got {type(data).__name__}")
    data, manifest = _plugins_of(data, source, Path(folder) if folder is not None else Path.cwd())
    model = spec_model()
    try:
        spec = model.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_errors(err, source, model)) from None
    spec._plugins = manifest
    return spec


def with_plugins(data: dict) -> SweepSpec:
    """A spec dict and its plugin manifest (`spec_dict`) back as a spec, where the plugins are imported already
    (a worker: a tuning trial plans its method as the driver did)."""
    data = dict(data)
    manifest = data.pop("_plugin_manifest", None)
    spec = spec_model().model_validate(data)
    spec._plugins = manifest
    return spec


def spec_dict(spec: SweepSpec) -> dict:
    """The spec as JSON for a worker, its plugin manifest with it (`with_plugins` reads it back)."""
    return {**spec.model_dump(mode="json"), "_plugin_manifest": spec.plugin_manifest()}


def _plugins_of(data: dict, source: str, folder: Path) -> tuple[dict, dict | None]:
    """The spec with its `code:` paths absolute, and the manifest of its plugins (None without any); the driver's
    registries then hold the plugins' names. Any plugin problem is a SpecError of one line."""
    code, modules = data.get("code", []), data.get("plugins", [])
    for key, value in (("code", code), ("plugins", modules)):
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise SpecError(f"{source}: {key}: expected a list of {'paths' if key == 'code' else 'module names'}, "
                            f"got {value!r}")
    if not modules:
        plugin_set.activate(None)
        if code:
            raise SpecError(f"{source}: code: given without plugins: name the modules to import in plugins")
        return data, None
    code = [os.path.normpath(os.path.join(folder, os.path.expanduser(p))) for p in code]
    uses = {k: data.get(k) for k in ("model", "dataset", "methods")}
    try:
        manifest = plugin_set.discover(code, modules, uses, source)
        plugin_set.activate(manifest)
    except plugin_set.PluginSetError as err:
        plugin_set.activate(None)
        raise SpecError(str(err)) from None
    if manifest["problems"]:
        raise SpecError("\n".join(f"{source}: {p}" for p in manifest["problems"]))
    return {**data, "code": code}, manifest


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML or JSON spec; any problem raises SpecError naming the file and field.

    A relative `store:` written in the spec is taken from the spec file's folder, so a spec means the same
    store wherever it is run from; without the key the store is ./ticketsweep-store in the working directory.
    """
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, expected a spec file (.yaml or .json)")
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: {size} bytes is too large for a spec (at most {MAX_SPEC_BYTES // 1024} KiB)")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read spec ({err.__class__.__name__})") from None
    if not text.strip():
        raise SpecError(f"{path}: the spec file is empty")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _load_yaml(text, path)
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: {_yaml_problem(err)}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a spec") from None
    if isinstance(data, dict) and isinstance(data.get("store"), str):
        data = {**data, "store": _store_from(path.parent, data["store"])}
    return parse_spec(data, str(path), path.parent)


def _rewind_epochs(training: Recipe) -> float:
    """The rewind point in epochs, where it is given in epochs (iterations are well inside the first epochs)."""
    num, unit = REWIND_PATTERN.match(training.rewind).groups()
    return float(num) if unit == "ep" else 0.0


def _load_yaml(text: str, path: Path):
    """Safe YAML whose size after alias expansion is bounded: aliases share nodes, so a few lines can stand for
    billions of values, which validation and error messages would then walk one by one."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node, {})
        if values > MAX_YAML_VALUES:
            raise SpecError(f"{path}: YAML aliases expand to more than {MAX_YAML_VALUES} values; "
                            f"a spec holds a few hundred")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is expanded (linear in the distinct nodes)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_YAML_VALUES + 1  # a node reached again while being counted: a cycle, unbounded
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _yaml_problem(err: yaml.YAMLError) -> str:
    # The problem mark is where the parser gave up; marks count from 0, editors from 1.
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        problem += f" ({context} at line {context_mark.line + 1})"
    return f"not valid YAML{where}: {problem}"


def _store_from(folder: Path, store: str) -> str:
    if "://" in store or not store.strip():
        return store
    expanded = os.path.expanduser(store)
    return expanded if os.path.isabs(expanded) else os.path.normpath(os.path.join(folder, expanded))


def describe() -> str:
    """Every spec field with its description, allowed values and default (the README's spec reference)."""
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            path = f"{prefix}{name}"
            ann = f.annotation
            models = [a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)] \
                if get_origin(ann) in (Union, types.UnionType) else [ann]
            if len(models) == 1 and isinstance(models[0], type) and issubclass(models[0], BaseModel):
                lines.append(f"{path}: {models[0].__doc__}{'' if f.is_required() else ' (optional)'}")
                walk(models[0], path + ".")
                continue
            lines.append(field_line(path, f))

    walk(SweepSpec, "")
    lines.append("methods[].tune.<knob>: a search range: {loguniform: [low, high]}, {uniform: [low, high]} or "
                 "{choice: [values]}; <knob> is a knob of the method, an option of a one-shot method's criterion as "
                 "criterion_options.<name>, or training.<name> for "
                 + ", ".join(TUNABLE_RECIPE))
    for method in methods.CONFIGS:
        lines.append(f"methods[] kind={method.model_fields['kind'].annotation.__args__[0]}: {method.__doc__}")
        lines += [field_line(name, f, indent="  ", allowed=_allowed(method, name, f))
                  for name, f in method.model_fields.items() if name != "kind"]
    lines.append(f"sparsities as a ladder: {Ladder.__doc__}")
    return "\n".join(lines)


def _allowed(method, name: str, f) -> list | None:
    if name == "sanity_checks":
        return list(method.SANITY_CHECKS)
    listed = (f.json_schema_extra or {}).get("listed_under")  # a registry's names: in describe_registries
    return [f"the {listed} listed by validate --explain"] if listed else None


def describe_registries() -> str:
    """What the registries hold now: every model and dataset with its options, and every criterion. `validate
    --explain` prints it after `describe()`; the spec reference leaves it out, so adding one changes no doc."""
    lines = ["models (model.name, with their model.options):"]
    for name in model_names():
        d = get_model_descriptor(name)
        lines.append(f"  {name}: {d.description}; output layer {d.output_layer}, "
                     f"pruned unless prune_output says otherwise: {'yes' if d.prune_output else 'no'}")
        lines += [field_line(k, f, indent="    ") for k, f in d.options.model_fields.items()]
    lines.append("datasets (dataset.name, with their dataset.options):")
    for name in dataset_names():
        d = get_dataset_descriptor(name)
        facts = (f"input {d.input_shape_for({})}, {d.num_classes_for({})} classes, {d.train_size_for({})} training / "
                 f"{d.test_size_for({})} test examples" + (" with these options' defaults" if d.options.model_fields
                                                           else ""))
        fetch = f"; `orchestrate data fetch {name}` downloads its files" if d.manifest is not None else ""
        lines.append(f"  {name}: {d.description}; {facts}{fetch}")
        lines += [field_line(k, f, indent="    ") for k, f in d.options.model_fields.items()]
    lines.append("criteria (methods[] kind=oneshot: criterion, with their criterion_options):")
    for c in CRITERIA.values():
        notes = (["scores training examples"] if c.needs_data else []) + ([f"{c.rounds} rounds"] if c.rounds > 1 else [])
        lines.append(f"  {c.name}: {c.description}" + (f" ({', '.join(notes)})" if notes else ""))
        if c.options is not None:  # a plugin criterion's (criterion_options)
            lines += [field_line(k, f, indent="    ") for k, f in c.options.model_fields.items()]
    return "\n".join(lines)
