"""Whole datasets as tensors, so training takes batches by index on any device: a registered dataset's loader
(`workers/data/registry.py`) gives its tensors, `load_dataset` checks them against its descriptor, and
`dataset_from_config` holds the validation split out.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch

from workers.data.files import DataError, default_data_root, fingerprint
from workers.data.registry import get_dataset_descriptor


# The validation split is drawn with this fixed seed: the same examples are held out for every seed and
# method of a sweep (and of every sweep of the same data), so comparisons stay paired.
VALIDATION_SPLIT_SEED = 20261202


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor          # float32, (N, *input_shape); the validation examples are not in it
    y_train: torch.Tensor          # int64, (N,)
    x_test: torch.Tensor | None    # None while tuning: the test set is never read then
    y_test: torch.Tensor | None
    num_classes: int
    input_shape: tuple[int, ...]   # per-example shape: (40,), (1, 28, 28), (3, 32, 32)
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    x_val: torch.Tensor | None = None  # held out of the training set; None without a validation split
    y_val: torch.Tensor | None = None

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        splits = [("train", self.x_train, self.y_train)]
        if self.x_test is not None:
            splits.append(("test", self.x_test, self.y_test))
        if self.x_val is not None:
            splits.append(("validation", self.x_val, self.y_val))
        for split, x, y in splits:
            if tuple(x.shape[1:]) != self.input_shape or x.shape[0] != y.shape[0]:
                raise DataError(f"dataset {self.name}: {split} tensors {tuple(x.shape)} / {tuple(y.shape)} "
                                f"do not match input shape {self.input_shape}")

    def to(self, device) -> "Dataset":
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")
                 if getattr(self, k) is not None}
        return dataclasses.replace(self, **moved)


def split_validation(data: Dataset, fraction: float, seed: int = VALIDATION_SPLIT_SEED) -> Dataset:
    """Hold out round(fraction · N) training examples (at least one), stratified by class, drawn with a fixed
    seed; the rest stays the training set, in its original order.

    Stratified by rank: each class's examples, in a random order, get the ranks (i + ½)/n_c, and the lowest
    ranks overall are held out, so every class gives about `fraction` of its examples however small it is.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    if data.x_val is not None:  # the dataset's official split, whatever the fraction; 0 still means none
        return data if fraction else dataclasses.replace(data, x_val=None, y_val=None)
    if fraction == 0:
        return data
    n = len(data.y_train)
    n_val = max(1, math.floor(fraction * n + 0.5))
    if n_val >= n:
        raise DataError(f"dataset {data.name}: a validation fraction of {fraction} of {n} training examples "
                        f"leaves nothing to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    labels = data.y_train.cpu()[order]
    rank = torch.empty(n, dtype=torch.float64)
    for c in labels.unique():
        where = torch.nonzero(labels == c).flatten()
        rank[where] = (torch.arange(len(where), dtype=torch.float64) + 0.5) / len(where)
    val = torch.sort(order[torch.argsort(rank, stable=True)[:n_val]]).values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    val = val.to(data.x_train.device)
    keep = keep.to(data.x_train.device)
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep],
                               x_val=data.x_train[val], y_val=data.y_train[val])


def without_test(data: Dataset) -> Dataset:
    """The dataset with its test split removed: what tuning runs on, so the test set cannot influence it."""
    return dataclasses.replace(data, x_test=None, y_test=None)


def dataset_from_config(cfg: dict) -> Dataset:
    """The dataset a stage's `config["dataset"]` names: loaded, with its validation split held out.

    A file dataset's config carries the fingerprint of the files its stage keys were planned with: files that
    differ now (changed since, or other data under this worker's root) are refused rather than trained on."""
    if cfg.get("content") is not None:
        from workers.plugins import dataset_content

        found = dataset_content(cfg["name"], cfg.get("options", {})) or fingerprint(cfg["name"], cfg.get("root"))
        if found != cfg["content"]:
            raise DataError(f"dataset {cfg['name']} at {cfg.get('root') or default_data_root()}: its files' content "
                            f"({found[:12]}) is not the content this sweep was planned with ({cfg['content'][:12]}); "
                            f"the data changed since: submit again to plan with it")
    data = load_dataset(cfg["name"], cfg.get("root"), **cfg.get("options", {}))
    return split_validation(data, float(cfg.get("validation", 0.0)))


def load_dataset(name: str, root: str | None = None, **options) -> Dataset:
    """The named dataset on the CPU, without a held-out validation split unless the dataset has an official one
    (`dataset_from_config` holds one out). `root` (else `default_data_root()`) is only read by file datasets.

    Unknown names raise ValueError, unknown options TypeError and bad option values ValueError (spec field
    problems), unusable files DataError, and so do tensors whose shapes disagree with the descriptor's.
    """
    descriptor = get_dataset_descriptor(name)
    validated = descriptor.validated(options)
    tensors = descriptor.load(root, **dict(validated))
    if len(tensors) not in (4, 6):
        raise DataError(f"dataset {name}: its loader returned {len(tensors)} tensors; expected x_train, y_train, "
                        f"x_test, y_test and optionally x_val, y_val")
    x_train, y_train, x_test, y_test, x_val, y_val = (*tensors, None, None)[:6]
    return Dataset(name, x_train, y_train, x_test, y_test, descriptor.num_classes_for(options),
                   descriptor.input_shape_for(options), augment=descriptor.augment, x_val=x_val, y_val=y_val)
