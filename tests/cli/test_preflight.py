"""`orchestrate` checks the dataset and model in a child process (the driver stays torch-free): a real
`orchestrate` process must still fail on one line, exit 2, and write nothing."""
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow  # real `orchestrate` processes

ORCHESTRATE = [sys.executable, "-m", "orchestrator.cli"]


def _spec(tmp_path, model: dict, dataset: dict):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pre", "model": model, "dataset": dataset, "training": {"epochs": 1},
        "methods": [{"kind": "oneshot", "criterion": "random"}], "sparsities": [0.5], "seeds": [0],
        "store": str(tmp_path / "store")}))
    return path


def test_bad_data_root_fails_on_one_line_and_writes_nothing(tmp_path):
    spec = _spec(tmp_path, {"name": "mlp"}, {"name": "mnist", "root": str(tmp_path / "nowhere")})
    out = subprocess.run(ORCHESTRATE + ["submit", str(spec), "--no-progress"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dataset: data root ") and str(tmp_path / "nowhere") in lines[0]
    assert not (tmp_path / "store").exists()


def test_invalid_model_option_value_fails_on_one_line(tmp_path):
    """The model's typed options refuse the value while the spec is validated, before any child process."""
    spec = _spec(tmp_path, {"name": "conv1d", "options": {"bn_init": "bogus"}},
                 {"name": "synthetic", "options": {"n_train": 8, "n_test": 8}})
    out = subprocess.run(ORCHESTRATE + ["validate", str(spec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"{spec}: model.options: model conv1d: bn_init: expected 'uniform' or 'ones', " \
                                 f"got 'bogus'"


def test_a_model_that_cannot_take_the_datasets_input_fails_on_one_line(tmp_path):
    spec = _spec(tmp_path, {"name": "conv1d"},
                 {"name": "synthetic", "options": {"n_train": 8, "n_test": 8, "input_shape": [3, 8, 8]}})
    out = subprocess.run(ORCHESTRATE + ["validate", str(spec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "model.options: model conv1d needs input shape (L,) or (C, L), got (3, 8, 8)"


def test_submit_stops_on_one_line_at_bad_input_only_its_data_and_model_check_finds(tmp_path):
    """The spec is valid and the data is there; only building the model on the data's shape fails (the child
    process's check): submit still exits 2 on one line, writing nothing (nor any line of a Ray start)."""
    spec = _spec(tmp_path, {"name": "conv1d"},
                 {"name": "synthetic", "options": {"n_train": 8, "n_test": 8, "input_shape": [3, 8, 8]}})
    out = subprocess.run(ORCHESTRATE + ["submit", str(spec), "--no-progress"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "model.options: model conv1d needs input shape (L,) or (C, L), got (3, 8, 8)"
    assert not (tmp_path / "store").exists()
