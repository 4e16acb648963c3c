"""Stage keys depend on the data's content, not on where it lies: changed files run again, the same files under
another path do not (issue 22, item 4). Files in the real MNIST/CIFAR formats, as test_data writes them."""
import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from tests.helpers.data_writers import idx_bytes, write_cifar, write_mnist

from orchestrator.cli import main

LABELS = "train-labels-idx1-ubyte"


def _shuffle_train_labels(root, seed=1):
    """Rewrite the training labels permuted: the same size, the same label counts, other pairings."""
    path = root / LABELS
    labels = np.frombuffer(path.read_bytes()[8:], dtype=np.uint8)
    shuffled = np.random.default_rng(seed).permutation(labels)
    assert (shuffled != labels).any()
    path.write_bytes(idx_bytes(2049, shuffled))


def _spec(root, name="digits"):
    return {"name": name, "model": {"name": "mlp", "options": {"hidden": [8]}},
            "dataset": {"name": "mnist", "root": str(root), "validation": 0.25},
            "training": {"epochs": 1, "batch_size": 8}, "methods": [{"kind": "oneshot", "criterion": "random"}],
            "sparsities": [0.5], "seeds": [0]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_fingerprint_follows_the_content_not_the_path_or_the_packing(tmp_path, cache):
    from workers.data.files import fingerprint

    write_mnist(tmp_path / "a", n_train=20)
    before = fingerprint("mnist", str(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    write_mnist(tmp_path / "c" / "MNIST" / "raw", n_train=20, compress=True)  # torchvision's layout, gzipped
    assert fingerprint("mnist", str(tmp_path / "b")) == before
    assert fingerprint("mnist", str(tmp_path / "c")) == before
    _shuffle_train_labels(tmp_path / "a")
    assert fingerprint("mnist", str(tmp_path / "a")) != before
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    assert len(fingerprint("cifar10", str(tmp_path / "cifar"))) == 64
    assert fingerprint("mnist1d", None) is None and fingerprint("synthetic", None) is None


def test_a_cached_hash_is_used_only_while_its_file_is_unchanged(tmp_path, cache, monkeypatch):
    import json
    import os

    from workers.data import files as data_files

    monkeypatch.setattr(data_files, "_SETTLED_S", 0.0)  # the files were written just now
    root = tmp_path / "root"
    write_mnist(root, n_train=20)
    true = data_files.fingerprint("mnist", str(root))
    entries = sorted((cache / "fingerprints").iterdir())
    assert len(entries) == 4 and sorted(os.listdir(cache)) == ["fingerprints"]  # nothing else written
    # The cache is read: a forged hash under an unchanged file's stamp is what the fingerprint is made of...
    label_entry = next(e for e in entries if json.loads(e.read_text())["path"].endswith(LABELS))
    record = json.loads(label_entry.read_text())
    label_entry.write_text(json.dumps({**record, "sha256": "0" * 64}))
    assert data_files.fingerprint("mnist", str(root)) != true
    label_entry.write_text(json.dumps(record))
    assert data_files.fingerprint("mnist", str(root)) == true
    # ...but not once the file changed, even to the same size with its old mtime put back.
    st = os.stat(root / LABELS)
    _shuffle_train_labels(root)
    os.utime(root / LABELS, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(root / LABELS).st_size == st.st_size and os.stat(root / LABELS).st_mtime_ns == st.st_mtime_ns
    changed = data_files.fingerprint("mnist", str(root))
    monkeypatch.setenv("TICKETSWEEP_CACHE", str(tmp_path / "fresh"))
    assert changed != true and changed == data_files.fingerprint("mnist", str(root))


def test_a_file_changed_moments_ago_is_hashed_but_not_cached(tmp_path, cache, monkeypatch):
    from workers.data import files as data_files

    monkeypatch.setattr(data_files, "_SETTLED_S", 3600.0)  # "moments" however slow this machine is
    write_mnist(tmp_path / "root")
    assert data_files.fingerprint("mnist", str(tmp_path / "root"))
    assert not (cache / "fingerprints").exists() or not any((cache / "fingerprints").iterdir())


def test_keys_of_file_datasets_hash_the_content_and_generated_ones_keep_their_keys(tmp_path, cache):
    from orchestrator.spec.plan import build_plan, sweep_plan
    from orchestrator.spec.sweep_spec import parse_spec

    write_mnist(tmp_path / "a", n_train=20)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    here, there = sweep_plan(parse_spec(_spec(tmp_path / "a"))), sweep_plan(parse_spec(_spec(tmp_path / "b")))
    assert list(here.stages) == list(there.stages)
    assert set(here.stages).isdisjoint(build_plan(parse_spec(_spec(tmp_path / "a"))).stages)
    _shuffle_train_labels(tmp_path / "a")
    changed = sweep_plan(parse_spec(_spec(tmp_path / "a")))
    assert set(changed.stages).isdisjoint(here.stages)  # every stage: θ₀ too depends on the dataset
    synthetic = parse_spec({**_spec(tmp_path), "dataset": {"name": "synthetic"}})
    assert list(sweep_plan(synthetic).stages) == list(build_plan(synthetic).stages)


def test_a_worker_refuses_files_that_changed_after_planning(tmp_path, cache):
    from orchestrator.spec.plan import sweep_plan
    from orchestrator.spec.sweep_spec import parse_spec
    from workers.data.dataset import DataError, dataset_from_config

    write_mnist(tmp_path / "a", n_train=20)
    config = sweep_plan(parse_spec(_spec(tmp_path / "a"))).config["dataset"]
    assert len(dataset_from_config(config).y_train) == 15
    _shuffle_train_labels(tmp_path / "a")
    with pytest.raises(DataError, match="not the content this sweep was planned with"):
        dataset_from_config(config)


def test_commands_that_need_the_keys_say_when_the_data_is_missing(tmp_path, cache):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path / "nowhere")))
    r = CliRunner().invoke(main, ["plan", str(path), "--store", str(tmp_path / "store")])
    assert r.exit_code == 2 and r.output.startswith("dataset: data root ") and len(r.output.splitlines()) == 1
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_changed_data_runs_again_and_the_same_data_elsewhere_does_not(ray_cluster, tmp_path, cache):
    """Real submits of real files: shuffled training labels under the same root run every stage again;
    the same files copied to another root run nothing."""
    root = tmp_path / "data"
    write_mnist(root, n_train=20)
    spec, store = tmp_path / "spec.yaml", str(tmp_path / "store")
    runner = CliRunner()

    def submit(data_root) -> str:
        spec.write_text(yaml.safe_dump(_spec(data_root)))
        r = runner.invoke(main, ["submit", str(spec), "--store", store, "--no-progress"])
        assert r.exit_code == 0, r.output
        return r.output

    assert "4 stage(s) ran, 0 already stored, 0 failed" in submit(root)
    assert "0 stage(s) ran, 4 already stored" in submit(root)
    _shuffle_train_labels(root)
    assert "4 stage(s) ran, 0 already stored, 0 failed" in submit(root)
    shutil.copytree(root, tmp_path / "copy")
    assert "0 stage(s) ran, 4 already stored" in submit(tmp_path / "copy")
