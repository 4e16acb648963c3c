"""Tiny dataset files in the real on-disk formats (MNIST idx, CIFAR-10 pickle batches), for the tests that read them."""
import gzip
import pickle

import numpy as np


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_mnist(directory, n_train=5, n_test=3, compress=False):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": (2051, rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte": (2049, np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte": (2051, rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte": (2049, np.array([9, 0, 4][:n_test])),
    }
    for name, (magic, a) in arrays.items():
        raw = idx_bytes(magic, a)
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)
    return {name: a for name, (_, a) in arrays.items()}


def write_cifar(directory, per_batch=2):
    """Batches as the original files are: protocol-2 pickles of {b'data': (N, 3072) uint8, b'labels': [...]}."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    batches = {}
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                 b"labels": [(i + j) % 10 for j in range(per_batch)], b"batch_label": name.encode()}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches
