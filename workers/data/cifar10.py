"""cifar10: CIFAR-10 (Krizhevsky 2009) from its python batches under a data root; `orchestrate data fetch cifar10`
downloads them. Training batches are augmented (h-flip + pad-4 crop), batch-wise on the device."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from workers.data.augment import FlipAndCrop
from workers.data.registry import Archive, DatasetDescriptor, Layout, Manifest, register_dataset_descriptor

# Per-channel statistics of the CIFAR-10 training images (pixel values in [0, 1]).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = "test_batch"

LAYOUT = Layout("CIFAR-10 python batches data_batch_1..5, test_batch", ("cifar-10-batches-py", ""),
                _TRAIN + (_TEST,), gz=False)

# The MD5 on https://www.cs.toronto.edu/~kriz/cifar.html and the SHA-256 that Keras's cifar10.load_data checks.
MANIFEST = Manifest(
    dataset="cifar10",
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    archives=(Archive("cifar-10-python.tar.gz", 170498071,
                      "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                      "c58f30108f718f92721af3b95e74349a"),),
    target="cifar-10-batches-py",
    required=LAYOUT.required,
    unpack="tar")

# Padding takes the normalised value of a black pixel, so it matches zero padding before normalisation
# (OpenLTH); computed in float32, as the images are normalised.
BLACK = tuple(float(v) for v in -np.float32(MEAN) / np.float32(STD))


def load(root):
    """The python pickle batches in root/cifar-10-batches-py or root; per-channel normalised."""
    import torch

    from workers.data.files import dataset_files

    _, files = dataset_files("cifar10", root)
    train = [_read_batch(files[n]) for n in _TRAIN]
    x_train = torch.cat([x for x, _ in train])
    y_train = torch.cat([y for _, y in train])
    x_test, y_test = _read_batch(files[_TEST])
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x_train.float().div_(255.0) - mean) / std, y_train, (x_test.float().div_(255.0) - mean) / std, y_test


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



def _read_batch(path: Path):
    """One batch: a dict with 'data' (N, 3072) uint8 rows (R, G, B planes of 32x32) and 'labels'."""
    import torch

    from workers.data.files import DataError

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



DESCRIPTOR = register_dataset_descriptor(DatasetDescriptor(
    name="cifar10",
    description="CIFAR-10 colour images, 32x32 (Krizhevsky 2009); training batches flipped and cropped",
    load=load, train_size=50_000, test_size=10_000, input_shape=(3, 32, 32), num_classes=10, files=LAYOUT,
    manifest=MANIFEST,
    augment=FlipAndCrop(padding=4, fill=BLACK)))
