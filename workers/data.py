"""Dataset registry: whole datasets as tensors, so training takes batches by index on any device.

mnist1d is generated offline by the `mnist1d` package and cached; mnist and cifar10
read the standard files from a local data root (`orchestrate data fetch` downloads them there);
synthetic is a tiny learnable set for tests.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import inspect
import json
import math
import os
import pickle
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from workers.data_files import (DataError, cache_dir, dataset_files, default_data_root, fetch_hint,  # noqa: F401
                                fingerprint)
from workers.registry import DATASETS, PLUGIN_DATASETS

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# Per-channel statistics of the CIFAR-10 training images (pixel values in [0, 1]).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


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
    if cfg["name"] in PLUGIN_DATASETS:
        return _plugin_dataset(cfg)
    if cfg.get("content") is not None:
        found = fingerprint(cfg["name"], cfg.get("root"))
        if found != cfg["content"]:
            raise DataError(f"dataset {cfg['name']} at {cfg.get('root') or default_data_root()}: its files' content "
                            f"({found[:12]}) is not the content this sweep was planned with ({cfg['content'][:12]}); "
                            f"the data changed since: submit again to plan with it")
    data = load_dataset(cfg["name"], cfg.get("root"), **cfg.get("options", {}))
    return split_validation(data, float(cfg.get("validation", 0.0)))


def _plugin_dataset(cfg: dict) -> Dataset:
    """A plugin's dataset (workers/plugins.py): its loader's tensors checked, its own validation split kept
    (else `validation` of the training set held out), its files' content checked against the planned one."""
    from workers.plugins import PluginError, REGISTERED, validated_options

    name = cfg["name"]
    entry = PLUGIN_DATASETS[name]
    label = f"dataset {name} (plugin {REGISTERED[f'dataset:{name}']['module']})"
    try:
        options = validated_options(entry, "dataset", name, cfg.get("options", {}), entry["loader"], 0)
    except PluginError as err:
        raise DataError(f"{label}: option {err}") from None
    if cfg.get("content") is not None:
        found = str(entry["fingerprint"](**options)) if entry["fingerprint"] else None
        if found != cfg["content"]:
            raise DataError(f"{label}: its content ({str(found)[:12]}) is not the content this sweep was planned "
                            f"with ({cfg['content'][:12]}); the data changed since: submit again to plan with it")
    try:
        parts = entry["loader"](**options)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - the plugin's failure, on one line naming it
        from workers.models import _failure

        raise DataError(f"{label}: the loader raised {_failure(err)}") from None
    if not isinstance(parts, dict) or not {"x_train", "y_train", "x_test", "y_test"} <= set(parts):
        raise DataError(f"{label}: the loader must return a mapping with x_train, y_train, x_test, y_test "
                        f"(and optionally x_val, y_val, num_classes)")
    t = {k: torch.as_tensor(np.asarray(v)) for k, v in parts.items() if k != "num_classes" and v is not None}
    for k in list(t):
        t[k] = t[k].float() if k.startswith("x") else t[k].long()
    labels = torch.cat([t["y_train"], t["y_test"], *([t["y_val"]] if "y_val" in t else [])])
    num_classes = int(parts.get("num_classes") or int(labels.max()) + 1)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DataError(f"{label}: labels must lie in 0..{num_classes - 1}")
    data = Dataset(name, t["x_train"], t["y_train"], t["x_test"], t["y_test"], num_classes,
                   tuple(t["x_train"].shape[1:]), x_val=t.get("x_val"), y_val=t.get("y_val"))
    return data if "x_val" in t else split_validation(data, float(cfg.get("validation", 0.0)))


def load_dataset(name: str, root: str | None = None, **options) -> Dataset:
    """The named dataset on the CPU, without a validation split (`dataset_from_config` holds one out).
    `root` (else `default_data_root()`) is only read by mnist and cifar10.

    Unknown options raise TypeError (a spec field problem), unusable files DataError.
    """
    if name not in _LOADERS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    loader = _LOADERS[name]
    params = inspect.signature(loader).parameters.values()
    accepted = [p.name for p in params if p.name != "root" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)  # such a loader checks its own options
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise TypeError(f"dataset {name} has no option(s) {', '.join(unknown)}; "
                        f"known: {', '.join(accepted) or 'none'}")
    return loader(root=root, **options)


# ---------------------------------------------------------------- synthetic

def load_synthetic(root=None, n_train: int = 256, n_test: int = 128, input_shape=(40,), num_classes: int = 10,
                   seed: int = 0, noise: float = 1.0) -> Dataset:
    """Gaussian classes: one standard-normal mean per class plus `noise`-scaled normal noise; balanced labels.

    Fully determined by the options, so tests get the same data every time.
    """
    shape = tuple(int(s) for s in input_shape)
    gen = torch.Generator().manual_seed(int(seed))
    means = torch.randn((num_classes, *shape), generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
        x = means[y] + noise * torch.randn((n, *shape), generator=gen)
        return x.float(), y.long()

    x_train, y_train = split(int(n_train))
    x_test, y_test = split(int(n_test))
    return Dataset("synthetic", x_train, y_train, x_test, y_test, int(num_classes), shape)


# ---------------------------------------------------------------- mnist1d

def load_mnist1d(root=None, **generation) -> Dataset:
    """MNIST-1D from the package's generator (default: 4000 train / 1000 test, length 40, seed 42).

    Options override `mnist1d.data.get_dataset_args()` entries (e.g. shuffle_seq, seed).
    The arrays are cached per (arguments, package version) because generation takes seconds.
    """
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url")  # download location only; we always generate
    unknown = sorted(set(generation) - set(args))
    if unknown:
        raise TypeError(f"dataset mnist1d has no option(s) {', '.join(unknown)}; known: {', '.join(sorted(args))}")
    args.update(generation)
    arrays = _cached_mnist1d(args)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    x_test, y_test = torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"])
    return Dataset("mnist1d", x, y, x_test, y_test, 10, (x.shape[1],))


def _cached_mnist1d(args: dict) -> dict[str, np.ndarray]:
    from importlib.metadata import version

    tag = json.dumps({"args": args, "mnist1d": version("mnist1d")}, sort_keys=True)
    path = cache_dir() / f"mnist1d-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.npz"
    try:
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError):
        pass  # absent or unreadable: generate again
    arrays = _generate_mnist1d(args)
    try:
        _atomic_savez(path, arrays)
    except OSError:
        pass  # a read-only cache only costs regeneration next time
    return arrays


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    # make_dataset seeds Python's and NumPy's global RNGs; put them back so loading data
    # never changes what other code draws.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
            "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------- mnist

_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049


def load_mnist(root=None) -> Dataset:
    """MNIST from the four idx files (plain or .gz) in root or root/MNIST/raw; normalised (x - 0.1307) / 0.3081."""
    base, files = dataset_files("mnist", root)
    split = {}
    for part, (images, labels) in _MNIST_FILES.items():
        x = _read_idx(files[images], _IDX_IMAGES)
        y = _read_idx(files[labels], _IDX_LABELS)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"data root {base}: {images} has {x.shape[0]} images but {labels} has {y.shape[0]} labels")
        if y.max(initial=0) > 9:
            raise DataError(f"data root {base}: {labels} has labels outside 0-9")
        x = (torch.from_numpy(x).float().div_(255.0) - MNIST_MEAN) / MNIST_STD
        split[part] = (x.unsqueeze(1), torch.from_numpy(y.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = split["train"], split["test"]
    return Dataset("mnist", x_train, y_train, x_test, y_test, 10, (1, 28, 28))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """One idx file: big-endian int32 magic, item count, (rows, cols for images), then uint8 data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err}); MNIST idx file expected") from None
    ndim = 3 if magic == _IDX_IMAGES else 1
    header = 4 * (1 + ndim)
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an idx header; MNIST idx file expected")
    dims = np.frombuffer(raw[:header], dtype=">i4")
    if int(dims[0]) != magic:
        raise DataError(f"{path}: magic number {int(dims[0])}, expected {magic}; MNIST idx file expected")
    shape = tuple(int(s) for s in dims[1:])
    if ndim == 3 and shape[1:] != (28, 28):
        raise DataError(f"{path}: images are {shape[1]}x{shape[2]}, expected 28x28")
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path}: {len(raw)} bytes, expected {header + int(np.prod(shape))} for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable, for torch


# ---------------------------------------------------------------- cifar10

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


def load_cifar10(root=None) -> Dataset:
    """CIFAR-10 from the python pickle batches in root/cifar-10-batches-py or root; per-channel normalised.

    Training batches are augmented (h-flip + pad-4 crop) by `augment`, batch-wise on the device.
    """
    _, files = dataset_files("cifar10", root)
    train = [_read_cifar_batch(files[n]) for n in _CIFAR_TRAIN]
    x_train = torch.cat([x for x, _ in train])
    y_train = torch.cat([y for _, y in train])
    x_test, y_test = _read_cifar_batch(files[_CIFAR_TEST])
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    x_train = (x_train.float().div_(255.0) - mean) / std
    x_test = (x_test.float().div_(255.0) - mean) / std
    black = tuple(float(v) for v in (-mean / std).flatten())
    return Dataset("cifar10", x_train, y_train, x_test, y_test, 10, (3, 32, 32),
                   augment=FlipAndCrop(padding=4, fill=black))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file must never run code."""
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode")}  # how Python 3 protocol-2 pickles store bytes

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: a dict with 'data' (N, 3072) uint8 rows (R, G, B planes of 32x32) and 'labels'."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        data = np.asarray(data, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.int64)
    except Exception as err:  # any unpickling failure means the same thing: not a CIFAR batch
        raise DataError(f"{path}: cannot read as a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(f"{path}: data {data.shape} / labels {labels.shape}, expected (N, 3072) / (N,); "
                        f"CIFAR-10 python batch expected")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels outside 0-9")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


# ---------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class FlipAndCrop:
    """Random horizontal flip, then a random crop of the original size from the image padded by `padding`.

    Works on a whole (N, C, H, W) batch on its own device, drawing from the given generator
    (which must live on that device). `fill` is the per-channel pad value: the normalised
    value of a black pixel, so padding matches zero padding before normalisation (OpenLTH).
    """
    padding: int
    fill: tuple[float, ...]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        padded = torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1).repeat(n, 1, h + 2 * p,
                                                                                                   w + 2 * p)
        padded[:, :, p:p + h, p:p + w] = x
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * p)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
        # Two gathers: the h rows of each image's window, then the w columns of each row.
        return padded.gather(2, rows).gather(3, cols)


_LOADERS = {"mnist1d": load_mnist1d, "synthetic": load_synthetic, "mnist": load_mnist, "cifar10": load_cifar10}
