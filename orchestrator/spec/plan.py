"""Spec -> DAG of stages, each named by a content key.

The key of a stage is computed in exactly one place (`stage_key`): a hash of the settings that change its
output (the method's typed configuration among them), its parents' keys and the code version. Resources, the
store location, the data root and cosmetic labels are not in it, so re-submitting a spec resumes it and adding
seeds or sparsities runs only what is missing. The data's content is: a file dataset's fingerprint
(`workers/data/files.py`; `sweep_plan` reads it), a generated dataset's options.

The planner adds each seed's shared stages (init, warm-up, dense) and asks every method entry to add its own
(`MethodConfig.add_stages`, in `workers/methods/`); sanity checks are extra stages it adds for any method.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from orchestrator.spec.sweep_spec import SweepSpec
from orchestrator.spec import plugin_set
from workers.methods.base import MethodConfig

# Bump when the meaning of stored results changes, so old results are not reused for new code.
# 3: keys hash each method's typed configuration; curves and rows carry validation metrics.
CODE_VERSION = "3"

@dataclass(frozen=True)
class Stage:
    kind: str
    key: str
    seed: int
    params: dict                      # settings that change the output (hashed)
    parents: dict[str, str]           # role -> parent key (hashed; ordering)
    inputs: tuple[str, ...]           # roles whose outputs the worker reads
    cost_parents: tuple[str, ...]     # parents whose cost is part of this result's standalone cost
    meta: dict = field(default_factory=dict)  # labels that change nothing (method, level, requested)
    work: float = 0.0                 # estimated epochs of training

    @property
    def label(self) -> str:
        return self.meta.get("label", self.kind)

    @property
    def produces_point(self) -> bool:
        return self.kind not in ("init", "warmup", "tune")

    def payload(self, config: dict) -> dict:
        """What a worker gets: the stage as plain data."""
        return {"kind": self.kind, "key": self.key, "seed": self.seed, "label": self.label,
                "params": {**self.params, **self.meta}, "config": config,
                "inputs": {role: self.parents[role] for role in self.inputs}}


@dataclass
class Plan:
    sweep: str
    config: dict
    stages: dict[str, Stage]  # in topological order

    def children(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {k: [] for k in self.stages}
        for s in self.stages.values():
            for p in set(s.parents.values()):
                out[p].append(s.key)
        return out

    def ancestors_for_cost(self, key: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.stages[key].cost_parents)
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo.extend(self.stages[k].cost_parents)
        return seen

    def remaining_path(self) -> dict[str, float]:
        """Longest path of estimated work from each stage to the end of the DAG (for scheduling)."""
        children = self.children()
        out: dict[str, float] = {}
        for key in reversed(list(self.stages)):
            out[key] = self.stages[key].work + max((out[c] for c in children[key]), default=0.0)
        return out

    def points(self) -> list[Stage]:
        return [s for s in self.stages.values() if s.produces_point]


canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def stage_key(kind: str, seed: int, params: dict, parents: dict[str, str], config: dict,
              config_json: str | None = None) -> str:
    """sha256 of canonical({"v", "kind", "seed", "params", "parents", "config"}), truncated to 32 hex digits.

    "config" sorts first, so the blob is '{"config":' + canonical(config) + ',' + the rest's encoding without
    its '{': a planner passes `config_json` (canonical(config), which every stage of a plan shares) instead of
    encoding it again for each stage, and the bytes, so the keys, are the same either way."""
    if config_json is None:
        config_json = canonical(config)
    rest = canonical({"v": CODE_VERSION, "kind": kind, "seed": seed, "params": params, "parents": parents})
    blob = f'{{"config":{config_json},{rest[1:]}'
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SeedStages:
    seed: int
    init: Stage
    warmup: Stage
    dense: Stage


class Planner:
    """Builds the DAG of one spec: the surface method families add their stages through."""

    def __init__(self, spec: SweepSpec, data_content: str | None = None):
        self.spec = spec
        self.data_content = data_content
        self.stages: dict[str, Stage] = {}
        self.targets = spec.target_sparsities()
        self.training_epochs = spec.training.epochs
        dataset = {"name": spec.dataset.name, "options": spec.dataset.options}
        if data_content is not None:  # absent otherwise, so generated datasets keep their keys
            dataset["content"] = data_content
        model = spec.model.model_dump()
        # A plugin model or dataset: its identity is in every key (absent for built-in ones, whose keys stay).
        self.manifest = spec.plugin_manifest()
        for what, entry in (("model", model), ("dataset", dataset)):
            plugin = plugin_set.things_of(self.manifest, what).get(entry["name"])
            if plugin is not None:
                entry["plugin"] = plugin["identity"]
        training = spec.training.model_dump()
        split = {"validation": spec.dataset.validation}
        self.config = {"model": model, "dataset": {**dataset, **split, "root": spec.dataset.root},
                       "training": training, "prune_output": spec.prune_output}
        if self.manifest:  # what workers import before a stage runs (not hashed: the identities are)
            self.config["plugins"] = plugin_set.payload(self.manifest)
        # What each kind's output depends on (the data root is a location: the content is hashed instead; θ₀
        # depends on the data's shape and classes, not on which examples are held out).
        self.init_config = {"model": model, "dataset": dataset}
        self.train_config = {"model": model, "dataset": {**dataset, **split}, "training": training}
        self.prune_config = {**self.train_config, "prune_output": spec.prune_output}
        self.warmup_work = spec.training.rewind_epochs(spec.dataset.train_size())
        self.retrain_work = spec.training.epochs - self.warmup_work
        # Every stage hashes one of these three configs: each is encoded once, not once per stage.
        self._config_json = {id(c): canonical(c) for c in (self.init_config, self.train_config, self.prune_config)}
        self._methods: dict[int, tuple[MethodConfig, dict, str]] = {}

    def _method(self, method: MethodConfig) -> tuple[dict, str, dict]:
        """The method's settings, label and the identities of the plugins it uses, computed once per entry (a
        pydantic dump each, per point otherwise). The entry is kept in the cache with them, so its id cannot
        be reused by another object."""
        known = self._methods.get(id(method))
        if known is None:
            known = self._methods[id(method)] = (method, method.settings(), method.label(),
                                                 plugin_set.identities(self.manifest, method))
        return known[1], known[2], known[3]

    def _add(self, kind, seed, params, parents, inputs, cost_parents, meta, work, config) -> Stage:
        key = stage_key(kind, seed, params, parents, config, self._config_json.get(id(config)))
        stage = Stage(kind, key, seed, params, parents, tuple(inputs), tuple(cost_parents), meta, work)
        self.stages.setdefault(key, stage)
        return self.stages[key]

    def seed_stages(self, seed: int, requested: bool = True) -> SeedStages:
        init = self._add("init", seed, {}, {}, [], [], {"label": f"init s={seed}"}, 0.0, self.init_config)
        warm = self._add("warmup", seed, {}, {"init": init.key}, ["init"], [init.key],
                         {"label": f"warmup s={seed}"}, self.warmup_work, self.train_config)
        dense = self._add("dense", seed, {}, {"warmup": warm.key}, ["warmup"], [warm.key],
                          {"label": f"dense s={seed}", "method": "dense", "requested": requested},
                          self.retrain_work, self.train_config)
        return SeedStages(seed, init, warm, dense)

    def point(self, kind: str, seed: SeedStages, method: MethodConfig, *, params: dict, parents: dict,
              inputs: list[str], cost: list[str], work: float, label: str, level: int | None = None,
              requested: bool = True) -> Stage:
        """A stage that produces a result row of `method`. Its params carry the method's settings (hashed, and
        what the worker receives); every point also waits for its seed's dense run, whose accuracy its row
        carries. A tuned method's stages also read its tune stage (the chosen values), which is part of their
        key and of their standalone cost."""
        settings, name, plugins = self._method(method)
        params = {"settings": settings, "invert": False, **params, **({"plugins": plugins} if plugins else {})}
        meta = {"method": name, "level": level, "requested": requested, "label": label}
        parents, inputs, cost = {**parents, "dense": seed.dense.key}, list(inputs), list(cost)
        if method.tune:
            tune = self.tune_stages[id(method)]
            parents["tuned"], inputs, cost = tune.key, inputs + ["tuned"], cost + [tune.key]
        return self._add(kind, seed.seed, params, parents, inputs, cost, meta, work, self.prune_config)

    def sanity(self, method: MethodConfig, source: Stage, seed: SeedStages, from_init: bool = False) -> None:
        """The method's sanity-check ablations of `source`'s mask: extra stages and rows, never branches inside
        the methods. With `from_init` the source retrains from θ₀ (CTS searched at init), and so do they."""
        sp = source.params["target_sparsity"]
        for check in method.sanity_checks:
            name = f"{source.meta['method']}+{check}"
            meta = {**source.meta, "method": name, "level": None, "label": f"{name} s={seed.seed} sp={sp:.4f}"}
            if check == "invert":
                # The same stage keeping the lowest scores instead of the highest.
                self._add(source.kind, seed.seed, {**source.params, "invert": True}, source.parents, source.inputs,
                          source.cost_parents, meta, source.work, self.prune_config)
                continue
            start = seed.init if from_init else seed.warmup
            params = {"ablation": check, "target_sparsity": sp, **({"retrain_from": "init"} if from_init else {})}
            role = "init" if from_init else "warmup"
            parents, inputs = {"source": source.key, role: start.key, "dense": seed.dense.key}, ["source", role]
            if "tuned" in source.parents:  # it retrains with the tuned recipe too
                parents["tuned"], inputs = source.parents["tuned"], inputs + ["tuned"]
            self._add("ablation", seed.seed, params, parents, inputs, [source.key], meta,
                      self.retrain_work + (self.warmup_work if from_init else 0.0), self.prune_config)

    def tune_stage(self, method: MethodConfig, shared: list[SeedStages]) -> Stage:
        """One search per tuned method entry, on the tuning seeds' shared stages: its output is the chosen
        values. Its work estimate is the method's own stages at the tuning sparsities, once per configuration."""
        budget = self.spec.tuning
        one = Planner(self.spec.model_copy(update={"methods": [method.model_copy(update={"tune": None})],
                                                   "seeds": [shared[0].seed], "sparsities": budget.sparsities,
                                                   "tuning": None}), self.data_content)
        per_config = sum(s.work for s in one.build().stages.values() if s.kind not in ("init", "warmup", "dense"))
        parents, inputs = {}, []
        for i, seed in enumerate(shared):
            for role, stage in (("init", seed.init), ("warmup", seed.warmup), ("dense", seed.dense)):
                parents[f"{role}{i}"] = stage.key
                inputs.append(f"{role}{i}")
        params = {"settings": method.settings(), "space": {k: d.model_dump(exclude_none=True) for k, d in
                                                           method.tune.items()},
                  "budget": budget.model_dump(exclude={"max_concurrent"})}
        plugins = self._method(method)[2]
        if plugins:
            params["plugins"] = plugins
        meta = {"method": method.label(), "label": f"tune {method.label()}"}
        return self._add("tune", shared[0].seed, params, parents, inputs,
                         [p for i, s in enumerate(shared) for p in (s.warmup.key, s.dense.key)], meta,
                         per_config * budget.configurations * len(shared), self.prune_config)

    def build(self) -> Plan:
        shared = {seed: self.seed_stages(seed) for seed in self.spec.seeds}
        self.tune_stages: dict[int, Stage] = {}
        tuned = [m for m in self.spec.methods if m.tune]
        if tuned:
            # A tuning seed outside the sweep's seeds gets its shared stages unrequested: its dense point row is
            # stored (requested=False) but left out of every table and comparison.
            tuning = [shared.get(seed) or self.seed_stages(seed, requested=False) for seed in self.spec.tuning.seeds]
            for method in tuned:
                self.tune_stages[id(method)] = self.tune_stage(method, tuning)
        for seed in self.spec.seeds:
            for method in self.spec.methods:
                method.add_stages(shared[seed], self)
        return Plan(self.spec.name, self.config, self.stages)


def plugins_of(spec_dict: dict) -> dict | None:
    """The plugins a worker imports for a spec passed as `spec.spec_dict`."""
    return plugin_set.payload(spec_dict.get("_plugin_manifest"))


def build_plan(spec: SweepSpec, data_content: str | None = None) -> Plan:
    """The spec's plan; `data_content` is the fingerprint of a file dataset's files (see `sweep_plan`)."""
    return Planner(spec, data_content).build()


def sweep_plan(spec: SweepSpec) -> Plan:
    """The plan whose keys name the sweep's results: for mnist and cifar10, the fingerprint of the files under
    the spec's data root is part of every key (cached per file: a stat when nothing changed). Raises
    workers.data.files.DataError when those files are missing or unreadable."""
    from workers.data.files import fingerprint

    if spec.dataset.name in plugin_set.things_of(spec.plugin_manifest(), "dataset"):
        return build_plan(spec, spec.plugin_manifest().get("dataset_content"))
    return build_plan(spec, fingerprint(spec.dataset.name, spec.dataset.root))
