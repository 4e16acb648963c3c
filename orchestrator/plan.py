"""Spec -> DAG of stages, each named by a content key.

The key of a stage is computed in exactly one place (`stage_key`): a hash of the
settings that change its output, its parents' keys and its kind's code version. Resources,
the store location, the data root and cosmetic labels are not in it, so re-submitting a
spec resumes it and adding seeds or sparsities runs only what is missing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from orchestrator.spec import SweepSpec, method_label
from workers.registry import REWIND_PATTERN

# Bump a kind's version when its semantics change, so old results are not reused for new code;
# the other kinds keep their keys (and their stored results).
CODE_VERSION = "1"
CODE_VERSIONS = {
    "cts": "2",  # the search normalises BatchNorm with batch statistics by default (search_bn)
}

# Recipe fields added after results were stored: hashed only when set to something other than
# their default, so every stored stage keeps its key.
_LATER_TRAINING_DEFAULTS = {"loss_reduction": "mean", "precision": "fp32"}

# Training-set sizes, only for the work estimate shown by `validate`/`plan`.
_TRAIN_SIZES = {"mnist1d": 4000, "mnist": 60000, "cifar10": 50000}


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
        return self.kind not in ("init", "warmup")

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


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(kind: str, seed: int, params: dict, parents: dict[str, str], config: dict) -> str:
    blob = canonical({"v": CODE_VERSIONS.get(kind, CODE_VERSION), "kind": kind, "seed": seed, "params": params,
                      "parents": parents, "config": config})
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def ltr_schedule(target_sparsities: list[float], max_prune_fraction: float) -> list[tuple[float, bool]]:
    """Levels (sparsity, requested) of one IMP chain.

    Each level prunes `max_prune_fraction` of the survivors, except that the level
    before a requested sparsity prunes just what is needed to land on it exactly.
    """
    levels: list[tuple[float, bool]] = []
    density = 1.0
    for target in sorted(target_sparsities):
        goal = 1 - target
        while density * (1 - max_prune_fraction) > goal + 1e-12:
            density *= 1 - max_prune_fraction
            levels.append((round(1 - density, 12), False))
        density = goal
        levels.append((round(target, 12), True))
    return levels


def _epochs_of_rewind(spec: SweepSpec) -> float:
    num, unit = REWIND_PATTERN.match(spec.training.rewind).groups()
    if unit == "ep":
        return float(num)
    n = _TRAIN_SIZES.get(spec.dataset.name, int(spec.dataset.options.get("n_train", 256)))
    return int(num) * spec.training.batch_size / n


class _Builder:
    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.stages: dict[str, Stage] = {}
        dataset = {"name": spec.dataset.name, "options": spec.dataset.options}
        model = spec.model.model_dump()
        training = spec.training.model_dump()
        self.config = {"model": model, "dataset": {**dataset, "root": spec.dataset.root},
                       "training": training, "prune_output": spec.prune_output}
        # What each kind's output depends on (the data root is a location, not content).
        hashed_training = {k: v for k, v in training.items()
                           if not (k in _LATER_TRAINING_DEFAULTS and v == _LATER_TRAINING_DEFAULTS[k])}
        self.init_config = {"model": model, "dataset": dataset}
        self.train_config = {**self.init_config, "training": hashed_training}
        self.prune_config = {**self.train_config, "prune_output": spec.prune_output}
        k = _epochs_of_rewind(spec)
        self.warmup_work = k
        self.retrain_work = spec.training.epochs - k

    def add(self, kind, seed, params, parents, inputs, cost_parents, meta, work, config) -> Stage:
        key = stage_key(kind, seed, params, parents, config)
        stage = Stage(kind, key, seed, params, parents, tuple(inputs), tuple(cost_parents), meta, work)
        self.stages.setdefault(key, stage)
        return self.stages[key]

    def seed_stages(self, seed: int):
        init = self.add("init", seed, {}, {}, [], [], {"label": f"init s={seed}"}, 0.0, self.init_config)
        warm = self.add("warmup", seed, {}, {"init": init.key}, ["init"], [init.key],
                        {"label": f"warmup s={seed}"}, self.warmup_work, self.train_config)
        dense = self.add("dense", seed, {}, {"warmup": warm.key}, ["warmup"], [warm.key],
                         {"label": f"dense s={seed}", "method": "dense", "requested": True},
                         self.retrain_work, self.train_config)
        return init, warm, dense

    def point(self, kind, seed, params, parents, inputs, cost_parents, meta, work, dense) -> Stage:
        # Every point also waits for its seed's dense run: its row carries dense_test_accuracy.
        parents = {**parents, "dense": dense.key}
        return self.add(kind, seed, params, parents, inputs, cost_parents, meta, work, self.prune_config)

    def sanity(self, checks, source: Stage, warm: Stage, dense: Stage, init: Stage | None = None):
        """Ablations of a point's mask: extra stages and rows, never branches inside the methods.

        `init` is given when the source retrains from θ₀ (CTS searched at init): its ablations
        then retrain from θ₀ for the whole training too.
        """
        seed, sp = source.seed, source.params["target_sparsity"]
        for check in checks:
            method = f"{source.meta['method']}+{check}"
            meta = {**source.meta, "method": method, "level": None, "label": f"{method} s={seed} sp={sp:.4f}"}
            if check == "invert":
                # The same scoring, keeping the lowest scores instead of the highest.
                self.add(source.kind, seed, {**source.params, "invert": True}, source.parents, source.inputs,
                         source.cost_parents, meta, source.work, self.prune_config)
            elif init is not None:
                self.point("ablation", seed, {"ablation": check, "target_sparsity": sp, "retrain_from": "init"},
                           {"source": source.key, "init": init.key}, ["source", "init"], [source.key], meta,
                           self.warmup_work + self.retrain_work, dense)
            else:
                self.point("ablation", seed, {"ablation": check, "target_sparsity": sp},
                           {"source": source.key, "warmup": warm.key}, ["source", "warmup"], [source.key], meta,
                           self.retrain_work, dense)

    def build(self) -> Plan:
        spec = self.spec
        targets = spec.target_sparsities()
        for seed in spec.seeds:
            init, warm, dense = self.seed_stages(seed)
            for m in spec.methods:
                label = method_label(m)
                if m.kind == "ltr":
                    previous = dense
                    for level, (sp, requested) in enumerate(ltr_schedule(targets, m.max_prune_fraction), start=1):
                        params = {"target_sparsity": sp, "invert": False}
                        meta = {"method": label, "level": level, "requested": requested,
                                "label": f"ltr s={seed} L={level}"}
                        parents = {"previous": previous.key, "warmup": warm.key}
                        stage = self.point("imp_level", seed, params, parents, ["previous", "warmup"],
                                           [previous.key], meta, self.retrain_work, dense)
                        if requested:
                            self.sanity(m.sanity_checks, stage, warm, dense)
                        previous = stage
                    continue
                for sp in targets:
                    if m.kind == "oneshot":
                        score_from = {"init": init, "rewind": warm, "trained": dense}[m.score_at]
                        params = {"criterion": m.criterion, "score_at": m.score_at, "target_sparsity": sp,
                                  "rounds": m.rounds, "samples_per_class": m.samples_per_class, "invert": False}
                        parents = {"score_weights": score_from.key, "warmup": warm.key}
                        inputs = ["score_weights", "warmup"]
                        cost = [score_from.key, warm.key]
                        work = self.retrain_work + (0.05 if m.criterion in ("random", "magnitude") else 0.2)
                        meta = {"method": label, "requested": True, "label": f"{label} s={seed} sp={sp:.4f}"}
                        kind = "oneshot"
                    else:
                        epochs = m.search_epochs(spec.training.epochs)
                        params = {"objective": m.objective, "search_epochs": epochs, "lr": m.lr or spec.training.lr,
                                  "tau": m.tau, "slack": m.slack, "ema": m.ema, "search_bn": m.search_bn,
                                  "search_at": m.search_at, "target_sparsity": sp, "invert": False}
                        # Searched at init, the mask retrains from θ₀ for the whole training (the authors'
                        # k = 0), so no warm-up is part of it or of its standalone cost.
                        at_init = m.search_at == "init"
                        role, start = ("init", init) if at_init else ("warmup", warm)
                        parents = {role: start.key}
                        inputs = [role]
                        cost = [start.key]
                        work = (self.warmup_work if at_init else 0.0) + self.retrain_work + 1.5 * epochs
                        meta = {"method": label, "requested": True, "label": f"{label} s={seed} sp={sp:.4f}"}
                        kind = "cts"
                    stage = self.point(kind, seed, params, parents, inputs, cost, meta, work, dense)
                    self.sanity(m.sanity_checks, stage, warm, dense,
                                init if kind == "cts" and at_init else None)
        return Plan(spec.name, self.config, self.stages)


def build_plan(spec: SweepSpec) -> Plan:
    return _Builder(spec).build()
