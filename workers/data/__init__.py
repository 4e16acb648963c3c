"""Datasets: every dataset a spec may name, one module each, with a torch-free descriptor (`registry.py`).

Adding a dataset is one module here holding its descriptor and loader, plus its line in BUILT_IN. Importing
this package imports no torch: a loader imports it when called, so the driver validates and plans with the
descriptors alone. `dataset.py` turns a loader's tensors into the `Dataset` training reads; `files.py` finds
and fingerprints a file dataset's files.
"""
from __future__ import annotations

from workers.data import cifar10, digits, mnist, mnist1d, synthetic
from workers.data.registry import register_dataset_descriptor

BUILT_IN = (mnist1d, synthetic, mnist, cifar10, digits)
for _module in BUILT_IN:
    register_dataset_descriptor(_module.DESCRIPTOR)
