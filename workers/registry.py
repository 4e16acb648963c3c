"""The names the spec may use (models, their options, datasets) and the rewind syntax, without importing torch.

Plugins (workers/plugins.py) add models and datasets to PLUGIN_MODELS and PLUGIN_DATASETS: in a worker the
entry holds the builder or loader, in the driver only what a child process reported about it.

The driver validates and plans specs with these alone, so it never pays torch's import (about 180 MB of
RSS). `tests/test_registry.py` checks that they match the builders in `models.py` and the loaders in `data.py`.
"""
from __future__ import annotations

import re

MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden",),
    "lenet_300_100": (),
    "conv1d": ("channels", "kernel_sizes", "batchnorm", "bn_init", "bn_running_stats"),
    "resnet20": ("width", "bn_init", "shortcut_kernel", "bn_running_stats"),
    "resnet20_1d": ("width", "bn_init", "shortcut_kernel", "bn_running_stats"),
    "vgg16": ("bn_init", "bn_running_stats"),
}
MODEL_NAMES = tuple(MODEL_OPTIONS)
DATASETS = ("mnist1d", "synthetic", "mnist", "cifar10")
PLUGIN_MODELS: dict[str, dict] = {}
PLUGIN_DATASETS: dict[str, dict] = {}
REWIND_PATTERN = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


def unknown_model_options(name: str, options: dict) -> None:
    """Raise TypeError naming any option the named model does not take."""
    accepted = MODEL_OPTIONS[name]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"model {name} has no option(s) {', '.join(unknown)}; known: {', '.join(accepted) or 'none'}")


def model_names() -> tuple[str, ...]:
    return (*MODEL_NAMES, *PLUGIN_MODELS)


def dataset_names() -> tuple[str, ...]:
    return (*DATASETS, *PLUGIN_DATASETS)
