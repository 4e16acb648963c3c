import os
import pickle
import random

import numpy as np
import pytest
import torch

from tests.helpers.data_writers import idx_bytes, write_cifar, write_mnist
from workers.data import dataset as data
from workers.data import mnist1d
from workers.data.augment import FlipAndCrop
from workers.data.cifar10 import MEAN as CIFAR_MEAN
from workers.data.cifar10 import STD as CIFAR_STD
from workers.data.dataset import DataError, load_dataset
from workers.data.registry import dataset_names


def one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg


# ---------------------------------------------------------------- registry, synthetic

def test_an_unknown_dataset_is_refused_listing_the_registered_ones():
    with pytest.raises(ValueError, match=f"unknown dataset 'imagenet'; known: {', '.join(dataset_names())}$"):
        load_dataset("imagenet")


def test_unknown_option_is_a_type_error_listing_known_ones():
    with pytest.raises(TypeError, match="no option.* colour; known: n_train, n_test"):
        load_dataset("synthetic", colour=1)
    with pytest.raises(ValueError, match="dataset synthetic: n_train: Input should be greater than 0"):
        load_dataset("synthetic", n_train=0)
    with pytest.raises(TypeError, match="dataset mnist has no option.* n_train; known: none"):
        load_dataset("mnist", n_train=3)


def test_synthetic_is_deterministic_balanced_and_shaped():
    a = load_dataset("synthetic")
    b = load_dataset("synthetic")
    assert a.x_train.shape == (256, 40) and a.x_test.shape == (128, 40)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.input_shape == (40,) and a.num_classes == 10 and a.augment is None
    for f in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    # 256 = 25 * 10 + 6: six classes get one more example.
    assert sorted(torch.bincount(a.y_train).tolist()) == [25] * 4 + [26] * 6
    assert not torch.equal(load_dataset("synthetic", seed=1).x_train, a.x_train)


def test_synthetic_options_from_a_spec():
    d = load_dataset("synthetic", n_train=20, n_test=10, input_shape=[3, 8, 8], num_classes=4)
    assert d.x_train.shape == (20, 3, 8, 8) and d.input_shape == (3, 8, 8)
    assert int(d.y_train.max()) == 3


def test_synthetic_is_learnable():
    # Nearest class mean (estimated from the training split) classifies the test split.
    d = load_dataset("synthetic")
    means = torch.stack([d.x_train[d.y_train == c].mean(0) for c in range(10)])
    predicted = torch.cdist(d.x_test, means).argmin(1)
    assert (predicted == d.y_test).float().mean() > 0.9


def test_to_moves_every_tensor():
    d = load_dataset("synthetic", n_train=10, n_test=10).to("meta")
    assert {t.device.type for t in (d.x_train, d.y_train, d.x_test, d.y_test)} == {"meta"}
    assert d.name == "synthetic" and d.input_shape == (40,)


def test_dataset_rejects_tensors_that_do_not_match_the_input_shape():
    with pytest.raises(DataError, match="do not match input shape"):
        data.Dataset("x", torch.zeros(4, 5), torch.zeros(4, dtype=torch.long), torch.zeros(2, 5),
                     torch.zeros(2, dtype=torch.long), 10, (6,))


# ---------------------------------------------------------------- mnist1d

@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    """One generation (~3 s) for the module, into a private cache directory."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TICKETSWEEP_CACHE", str(cache))
        py_state, np_state = random.getstate(), np.random.get_state()
        d = load_dataset("mnist1d")
        rng_untouched = random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state[1])
        yield cache, d, rng_untouched


def test_mnist1d_shapes(mnist1d_cache):
    _, d, _ = mnist1d_cache
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.input_shape == (40,) and d.num_classes == 10
    assert set(d.y_train.tolist()) == set(range(10))
    assert abs(float(torch.cat([d.x_train, d.x_test]).mean())) < 1e-3  # the package standardises


def test_mnist1d_generation_leaves_global_rng_alone(mnist1d_cache):
    assert mnist1d_cache[2]


def test_mnist1d_second_load_reads_the_cache(mnist1d_cache, monkeypatch):
    cache, d, _ = mnist1d_cache
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith("mnist1d-") and files[0].endswith(".npz")
    monkeypatch.setenv("TICKETSWEEP_CACHE", str(cache))
    monkeypatch.setattr(mnist1d, "_generate", lambda args: pytest.fail("regenerated despite the cache"))
    again = load_dataset("mnist1d")
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)


def test_mnist1d_other_arguments_get_their_own_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETSWEEP_CACHE", str(tmp_path))
    tiny = {"x": np.zeros((8, 40), np.float32), "y": np.arange(8) % 2,
            "x_test": np.ones((2, 40), np.float32), "y_test": np.array([0, 1])}
    seen = []
    monkeypatch.setattr(mnist1d, "_generate", lambda args: seen.append(args) or tiny)
    d = load_dataset("mnist1d", shuffle_seq=True)
    assert seen[0]["shuffle_seq"] is True and "url" not in seen[0]
    assert d.x_train.shape == (8, 40)
    load_dataset("mnist1d", shuffle_seq=True, seed=3)
    assert len(seen) == 2 and len(os.listdir(tmp_path)) == 2


def test_mnist1d_corrupt_cache_is_regenerated_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETSWEEP_CACHE", str(tmp_path))
    tiny = {"x": np.zeros((4, 40), np.float32), "y": np.zeros(4, np.int64),
            "x_test": np.zeros((2, 40), np.float32), "y_test": np.zeros(2, np.int64)}
    monkeypatch.setattr(mnist1d, "_generate", lambda args: tiny)
    load_dataset("mnist1d", seed=5)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"half a file")
    d = load_dataset("mnist1d", seed=5)
    assert d.x_train.shape == (4, 40)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # replaced, no temp file left
    with np.load(path) as f:
        assert f["x"].shape == (4, 40)


def test_mnist1d_unknown_option():
    with pytest.raises(TypeError, match="mnist1d has no option.* colour; known: num_samples, train_split"):
        load_dataset("mnist1d", colour=1)


# ---------------------------------------------------------------- mnist (idx files)

def test_mnist_reads_plain_idx_files_in_the_root(tmp_path):
    arrays = write_mnist(tmp_path)
    d = load_dataset("mnist", str(tmp_path))
    assert d.x_train.shape == (5, 1, 28, 28) and d.x_test.shape == (3, 1, 28, 28)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10 and d.augment is None
    assert d.y_train.tolist() == [0, 1, 2, 3, 4] and d.y_test.tolist() == [9, 0, 4]
    assert d.y_train.dtype == torch.int64 and d.x_train.dtype == torch.float32
    pixel = int(arrays["train-images-idx3-ubyte"][2, 10, 7])
    assert d.x_train[2, 0, 10, 7].item() == pytest.approx((pixel / 255 - 0.1307) / 0.3081, abs=1e-5)


def test_mnist_reads_gzipped_files_in_torchvision_layout_via_env(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path / "MNIST" / "raw", compress=True)
    monkeypatch.setenv("TICKETSWEEP_DATA", str(tmp_path))
    d = load_dataset("mnist")
    pixel = int(arrays["t10k-images-idx3-ubyte"][1, 0, 27])
    assert d.x_test[1, 0, 0, 27].item() == pytest.approx((pixel / 255 - 0.1307) / 0.3081, abs=1e-5)


def test_mnist_without_any_root_reads_the_default_root_and_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TICKETSWEEP_DATA", raising=False)
    monkeypatch.setenv("TICKETSWEEP_CACHE", str(tmp_path / "cache"))
    default = tmp_path / "cache" / "data"
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    one_line_naming(err, default)
    assert str(err.value).endswith(f"`orchestrate data fetch mnist --root {default}` downloads them")
    write_mnist(default / "MNIST" / "raw", compress=True)  # where `data fetch` puts the archives
    assert load_dataset("mnist").x_test.shape == (3, 1, 28, 28)


def test_a_root_without_the_files_suggests_the_fetch_command(tmp_path):
    with pytest.raises(DataError, match=rf"`orchestrate data fetch cifar10 --root {tmp_path}` downloads them$"):
        load_dataset("cifar10", str(tmp_path))


def test_mnist_root_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="not a directory") as err:
        load_dataset("mnist", str(tmp_path / "nope"))
    one_line_naming(err, tmp_path / "nope")


def test_mnist_empty_root_names_every_file_and_both_places(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", str(tmp_path))
    one_line_naming(err, tmp_path)
    assert "missing train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]" in str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)


def test_mnist_one_missing_file_is_named(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[.gz\] in") as err:
        load_dataset("mnist", str(tmp_path))
    one_line_naming(err, tmp_path)


@pytest.mark.parametrize("damage, expected", [
    (lambda raw: idx_bytes(2049, np.zeros((5, 28, 28))), "magic number 2049, expected 2051"),
    (lambda raw: raw[:-1], "bytes, expected 3936"),          # 16 + 5 * 784
    (lambda raw: raw[:10], "too short for an idx header"),
    (lambda raw: idx_bytes(2051, np.zeros((5, 28, 27))), "27, expected 28x28"),
])
def test_mnist_malformed_images_file(tmp_path, damage, expected):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=expected) as err:
        load_dataset("mnist", str(tmp_path))
    one_line_naming(err, path)


def test_mnist_corrupt_gzip(tmp_path):
    write_mnist(tmp_path, compress=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read") as err:
        load_dataset("mnist", str(tmp_path))
    one_line_naming(err, path)


def test_mnist_image_and_label_counts_must_agree(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(2049, np.zeros(4)))
    with pytest.raises(DataError, match="5 images but train-labels-idx1-ubyte has 4 labels") as err:
        load_dataset("mnist", str(tmp_path))
    one_line_naming(err, tmp_path)


# ---------------------------------------------------------------- cifar10 (python pickle batches)

def test_cifar_reads_batches_in_the_standard_folder(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    d = load_dataset("cifar10", str(tmp_path))
    assert d.x_train.shape == (10, 3, 32, 32) and d.x_test.shape == (2, 3, 32, 32)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10 and d.augment is not None
    assert d.y_train.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5] and d.y_test.tolist() == [5, 6]
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major 32x32.
    row = batches["data_batch_3"][b"data"][1]
    for channel, (y, x) in ((0, (0, 0)), (1, (5, 31)), (2, (31, 2))):
        v = int(row[channel * 1024 + y * 32 + x])
        expected = (v / 255 - CIFAR_MEAN[channel]) / CIFAR_STD[channel]
        assert d.x_train[5, channel, y, x].item() == pytest.approx(expected, abs=1e-5)


def test_cifar_reads_batches_directly_in_the_root(tmp_path):
    write_cifar(tmp_path, per_batch=1)
    assert load_dataset("cifar10", str(tmp_path)).x_train.shape == (5, 3, 32, 32)


def test_cifar_missing_test_batch_is_named(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="missing test_batch in") as err:
        load_dataset("cifar10", str(tmp_path))
    one_line_naming(err, tmp_path)


def test_cifar_empty_root(tmp_path):
    with pytest.raises(DataError, match="missing data_batch_1, .*test_batch") as err:
        load_dataset("cifar10", str(tmp_path))
    one_line_naming(err, tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("content, expected", [
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"data \(2, 100\)"),
    (b"garbage", "cannot read as a CIFAR-10 python batch"),
    (pickle.dumps(_RunsCode()), "refusing to load posix.getcwd"),
])
def test_cifar_malformed_batch(tmp_path, content, expected):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_4"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as err:
        load_dataset("cifar10", str(tmp_path))
    one_line_naming(err, path)


# ---------------------------------------------------------------- augmentation

def matching_transforms(out: torch.Tensor, image: torch.Tensor, fill: torch.Tensor, p: int) -> list:
    """Every (flip, dy, dx) whose crop of the padded (possibly flipped) image equals `out`, by brute force."""
    c, h, w = image.shape
    found = []
    for flip in (False, True):
        src = image.flip(-1) if flip else image
        padded = fill.view(c, 1, 1).repeat(1, h + 2 * p, w + 2 * p)
        padded[:, p:p + h, p:p + w] = src
        for dy in range(2 * p + 1):
            for dx in range(2 * p + 1):
                if torch.equal(padded[:, dy:dy + h, dx:dx + w], out):
                    found.append((flip, dy, dx))
    return found


def test_flip_and_crop_is_a_flip_then_a_shifted_window_with_black_padding():
    fill = (-1.5, -2.0, -2.5)
    augment = FlipAndCrop(padding=4, fill=fill)
    x = torch.randn(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = []
    for i in range(len(x)):
        found = matching_transforms(out[i], x[i], torch.tensor(fill), 4)
        assert len(found) == 1, f"image {i}: {found}"
        seen.append(found[0])
    flips = {f for f, _, _ in seen}
    offsets = {(dy, dx) for _, dy, dx in seen}
    assert flips == {False, True}
    assert len(offsets) > 10 and any(dy != 4 and dx != 4 for dy, dx in offsets)


def test_flip_and_crop_is_deterministic_under_a_seeded_generator():
    augment = FlipAndCrop(padding=4, fill=(0.0, 0.0, 0.0))
    x = torch.randn(16, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(7))
    b = augment(x, torch.Generator().manual_seed(7))
    c = augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cifar_augment_pads_with_the_normalised_black_pixel(tmp_path):
    write_cifar(tmp_path)
    d = load_dataset("cifar10", str(tmp_path))
    black = [(0 - m) / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)]
    assert d.augment.fill == pytest.approx(black)


# ---------------------------------------------------------------- the validation split

def test_the_validation_split_is_held_out_stratified_and_the_same_every_time():
    from workers.data.dataset import split_validation
    data = load_dataset("synthetic", n_train=200, n_test=20, num_classes=4)
    a, b = split_validation(data, 0.1), split_validation(data, 0.1)
    assert len(a.y_val) == 20 and len(a.y_train) == 180
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_train, b.x_train)   # one fixed split
    # disjoint, and together exactly the original training set
    rows = lambda x: {tuple(r.tolist()) for r in x}
    assert not rows(a.x_val) & rows(a.x_train)
    assert rows(a.x_val) | rows(a.x_train) == rows(data.x_train)
    # stratified: each class gives about a tenth of its examples
    for c in range(4):
        n_c = int((data.y_train == c).sum())
        assert abs(int((a.y_val == c).sum()) - 0.1 * n_c) <= 1
    assert split_validation(data, 0.0) is data and data.x_val is None


def test_a_validation_split_that_leaves_nothing_to_train_on_is_a_data_error():
    from workers.data.dataset import split_validation
    data = load_dataset("synthetic", n_train=2, n_test=2)
    with pytest.raises(DataError, match="leaves nothing to train on"):
        split_validation(data, 0.8)
    assert len(split_validation(data, 0.01).y_val) == 1   # at least one example
