"""digits: scikit-learn's `load_digits`, the 1 797 8x8 handwritten digits of the UCI optical-recognition set
(Alpaydin & Kaynak 1998) that ship inside the scikit-learn wheel: real images with no download.

The test split is fixed: 450 examples (25 %) drawn stratified by class with seed 20261207
(`sklearn.model_selection.train_test_split`), leaving 1 347 for training, so every sweep on digits tests on the
same examples. Pixels (0-16) are scaled to [0, 1], then standardised with the training images' mean and
standard deviation (one scalar each, as MNIST's), so the test set shapes nothing.
"""
from __future__ import annotations

from workers.data.registry import DatasetDescriptor, register_dataset_descriptor

EXAMPLES, TEST_EXAMPLES, SPLIT_SEED = 1797, 450, 20261207


def load(root):
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_EXAMPLES, stratify=y,
                                                        random_state=SPLIT_SEED)
    mean, std = x_train.mean(), x_train.std()
    return (torch.from_numpy((x_train - mean) / std).unsqueeze(1), torch.from_numpy(y_train),
            torch.from_numpy((x_test - mean) / std).unsqueeze(1), torch.from_numpy(y_test))


DESCRIPTOR = register_dataset_descriptor(DatasetDescriptor(
    name="digits", description="scikit-learn's 8x8 handwritten digits (UCI), a fixed stratified test split; shipped "
                               "with scikit-learn, no download",
    load=load, train_size=EXAMPLES - TEST_EXAMPLES, test_size=TEST_EXAMPLES, input_shape=(1, 8, 8),
    num_classes=10))
