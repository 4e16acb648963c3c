"""mnist1d: MNIST-1D (Greydanus 2020), generated offline by the `mnist1d` package and cached.

The options are the package's generation arguments (`mnist1d.data.get_dataset_args()`, its download URL
aside) with the package's defaults: 5 000 examples, 4 000 for training, length 40, seed 42.
"""
from __future__ import annotations

from pydantic import Field, PositiveInt, StrictBool

from workers.data.registry import DatasetDescriptor, register_dataset_descriptor
from workers.strict import Strict

CLASSES = 10


class Mnist1dOptions(Strict):
    num_samples: PositiveInt = Field(default=5000, le=10_000_000, description="examples generated (per class: "
                                                                              "this // 10)")
    train_split: float = Field(default=0.8, gt=0, lt=1, description="fraction of the examples for training")
    template_len: PositiveInt = Field(default=12, description="length of the digit templates")
    padding: list[int] = Field(default=[36, 60], min_length=2, max_length=2, description="padding range [low, high]")
    scale_coeff: float = Field(default=0.4, ge=0, description="random scaling")
    max_translation: int = Field(default=48, ge=0, description="largest random translation")
    corr_noise_scale: float = Field(default=0.25, ge=0, description="correlated noise")
    iid_noise_scale: float = Field(default=0.02, ge=0, description="i.i.d. noise")
    shear_scale: float = Field(default=0.75, ge=0, description="random shear")
    shuffle_seq: StrictBool = Field(default=False, description="shuffle the positions of every sequence alike")
    final_seq_length: PositiveInt = Field(default=40, description="sequence length")
    seed: int = Field(default=42, ge=0, description="generation seed")


def generated(o: Mnist1dOptions) -> int:
    """make_dataset makes num_samples // 10 examples of each digit."""
    return o.num_samples // CLASSES * CLASSES


def train_size(o: Mnist1dOptions) -> int:
    """The first int(n · train_split) of the n generated examples train, the rest test."""
    return int(generated(o) * o.train_split)


def load(root, **generation):
    """The generated arrays; cached per (arguments, package version) because generation takes seconds."""
    import torch

    arrays = _cached(generation)
    return tuple(torch.from_numpy(arrays[k]) for k in ("x", "y", "x_test", "y_test"))


def _cached(args: dict) -> dict:
    import hashlib
    import json
    from importlib.metadata import version

    import numpy as np

    from workers.data.files import atomic_savez, cache_dir

    tag = json.dumps({"args": args, "mnist1d": version("mnist1d")}, sort_keys=True)
    path = cache_dir() / f"mnist1d-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.npz"
    try:
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError):
        pass  # absent or unreadable: generate again
    arrays = _generate(args)
    try:
        atomic_savez(path, arrays)
    except OSError:
        pass  # a read-only cache only costs regeneration next time
    return arrays


def _generate(args: dict) -> dict:
    import random

    import numpy as np
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


DESCRIPTOR = register_dataset_descriptor(DatasetDescriptor(
    name="mnist1d", description="MNIST-1D: 10 classes of 1-D sequences, generated offline (Greydanus 2020)",
    load=load, options=Mnist1dOptions, train_size=train_size, test_size=lambda o: generated(o) - train_size(o),
    input_shape=lambda o: (o.final_seq_length,), num_classes=CLASSES))
