"""Datasets: every dataset a spec may name, one module each, with a torch-free descriptor (`registry.py`).

Importing a dataset's module registers it: adding a dataset is one module here holding its descriptor and
loader, plus its name in the import line below. Importing this package imports no torch: a loader imports it
when called, so the driver validates and plans with the descriptors alone. `dataset.py` turns a loader's
tensors into the `Dataset` training reads; `files.py` finds and fingerprints a file dataset's files.
"""
from __future__ import annotations

# The built-in datasets, in the order `validate --explain` lists them; importing one registers it.
from workers.data import mnist1d, synthetic, mnist, cifar10, digits  # noqa: F401
