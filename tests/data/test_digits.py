"""The built-in `digits` dataset: scikit-learn's load_digits, a fixed stratified test split, nothing downloaded."""
import socket

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from workers.data import digits
from workers.data.dataset import dataset_from_config, load_dataset


@pytest.fixture(scope="module")
def loaded():
    return load_dataset("digits")


def test_the_split_is_1347_train_450_test_of_8x8_images_in_10_classes(loaded):
    assert loaded.x_train.shape == (1347, 1, 8, 8) and loaded.x_test.shape == (450, 1, 8, 8)
    assert loaded.input_shape == (1, 8, 8) and loaded.num_classes == 10
    assert loaded.x_train.dtype == torch.float32 and loaded.y_train.dtype == torch.int64


def test_the_test_split_is_stratified(loaded):
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target, minlength=10)
    in_test = np.bincount(loaded.y_test.numpy(), minlength=10)
    # Each class gives 450/1797 of its examples to the test set, up to rounding.
    assert np.all(np.abs(in_test - per_class * 450 / 1797) < 1), (in_test, per_class)
    assert in_test.sum() == 450


def test_the_splits_are_the_whole_set_once_and_standardised_with_the_training_images_alone(loaded):
    from sklearn.datasets import load_digits

    assert abs(float(loaded.x_train.mean())) < 1e-5 and abs(float(loaded.x_train.std()) - 1) < 1e-3
    # The standardisation is one affine map; the training images hold pixel levels 0 and 16, which give it.
    low, high = float(loaded.x_train.min()), float(loaded.x_train.max())

    def levels(x):  # back to the 0-16 pixel levels, one row of 64 per image
        return ((x.numpy() - low) / (high - low) * 16).reshape(len(x), 64)

    both = np.concatenate([levels(loaded.x_train), levels(loaded.x_test)])
    assert np.abs(both - both.round()).max() < 1e-3  # the test images went through the same map
    expected = load_digits().images.reshape(-1, 64)
    assert sorted(map(tuple, both.round().astype(int))) == sorted(map(tuple, expected.astype(int)))


def test_loading_is_deterministic(loaded):
    again = load_dataset("digits")
    for split in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, split), getattr(loaded, split))


def test_nothing_is_downloaded(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("digits opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sklearn-data"))
    monkeypatch.setenv("TICKETSWEEP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TICKETSWEEP_CACHE", str(tmp_path / "cache"))
    data = dataset_from_config({"name": "digits", "options": {}, "validation": 0.1})
    assert len(data.y_train) + len(data.y_val) == 1347 and len(data.y_val) == 135
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())


TINY_SWEEP = {
    "name": "digits-tiny", "model": {"name": "mlp", "options": {"hidden": [32]}},
    "dataset": {"name": "digits"}, "training": {"epochs": 2, "batch_size": 64, "rewind": "10it"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "snip"}, {"kind": "cts"}],
    "sparsities": [0.5, 0.8], "seeds": [0, 1]}


def test_a_tiny_sweep_on_digits_validates_and_plans(tmp_path):
    spec = parse_spec(TINY_SWEEP)
    plan = build_plan(spec)
    assert len({s.seed for s in plan.stages.values()}) == 2
    warmup = next(s for s in plan.stages.values() if s.kind == "warmup")
    assert warmup.work == 10 * 64 / digits.DESCRIPTOR.train_size == 10 * 64 / 1347
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump({**TINY_SWEEP, "store": str(tmp_path / "store")}))
    result = CliRunner().invoke(main, ["validate", str(path)])  # loads the data and builds the model
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "store").exists()
