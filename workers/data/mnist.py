"""mnist: MNIST (LeCun et al. 1998) from its four idx files under a data root; `orchestrate data fetch mnist`
downloads them."""
from __future__ import annotations

import gzip
from pathlib import Path

from workers.data.registry import Archive, DatasetDescriptor, Layout, Manifest, register_dataset_descriptor

MEAN, STD = 0.1307, 0.3081
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049

LAYOUT = Layout("MNIST idx files", ("", "MNIST/raw"), tuple(f for pair in _FILES.values() for f in pair), gz=True)

# Sizes and checksums as published: MD5s from torchvision's MNIST resource list, SHA-256s from the TensorFlow
# Datasets checksum file for the CVDF mirror (the same bytes on every mirror).
MANIFEST = Manifest(
    dataset="mnist",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
    archives=(
        Archive("train-images-idx3-ubyte.gz", 9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Archive("train-labels-idx1-ubyte.gz", 28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "d53e105ee54ea40749a09fcbcd1e9432"),
        Archive("t10k-images-idx3-ubyte.gz", 1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "9fb629c4189551a2d022fa330f9573f3"),
        Archive("t10k-labels-idx1-ubyte.gz", 4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    target="MNIST/raw",
    required=LAYOUT.required,
    unpack="keep", gz_ok=True)


def load(root):
    """The four idx files (plain or .gz) in root or root/MNIST/raw; normalised (x - 0.1307) / 0.3081."""
    import numpy as np
    import torch

    from workers.data.files import DataError, dataset_files

    base, files = dataset_files("mnist", root)
    split = []
    for images, labels in _FILES.values():
        x = _read_idx(files[images], _IDX_IMAGES)
        y = _read_idx(files[labels], _IDX_LABELS)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"data root {base}: {images} has {x.shape[0]} images but {labels} has {y.shape[0]} labels")
        if y.max(initial=0) > 9:
            raise DataError(f"data root {base}: {labels} has labels outside 0-9")
        x = (torch.from_numpy(x).float().div_(255.0) - MEAN) / STD
        split += [x.unsqueeze(1), torch.from_numpy(y.astype(np.int64))]
    return tuple(split)


def _read_idx(path: Path, magic: int):
    """One idx file: big-endian int32 magic, item count, (rows, cols for images), then uint8 data."""
    import numpy as np

    from workers.data.files import DataError

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



DESCRIPTOR = register_dataset_descriptor(DatasetDescriptor(
    name="mnist", description="MNIST handwritten digits, 28x28 grey (LeCun et al. 1998)",
    load=load, train_size=60_000, test_size=10_000, input_shape=(1, 28, 28), num_classes=10, files=LAYOUT,
    manifest=MANIFEST))
