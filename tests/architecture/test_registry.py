"""The torch-free registries the driver validates specs with agree with the builders and loaders they describe,
and the driver's own modules import neither torch nor pandas (~180 MB and ~40 MB of RSS per driver)."""
import subprocess
import sys

import pytest

from workers.data.dataset import load_dataset
from workers.data.registry import (DatasetDescriptor, dataset_names, get_dataset_descriptor,
                                   register_dataset_descriptor)
from workers.models.registry import ModelDescriptor, get_model_descriptor, model_names, register_model_descriptor


@pytest.mark.parametrize("name", [n for n in dataset_names() if get_dataset_descriptor(n).files is None])
def test_a_generated_datasets_descriptor_says_what_its_loader_gives(name):
    d = get_dataset_descriptor(name)
    data = load_dataset(name)
    assert len(data.y_train) == d.train_size_for({}) and len(data.y_test) == d.test_size_for({})
    assert data.input_shape == d.input_shape_for({}) and tuple(data.x_train.shape[1:]) == data.input_shape
    assert data.num_classes == d.num_classes_for({})
    assert set(data.y_train.tolist()) == set(range(data.num_classes))


def test_a_datasets_facts_follow_its_options():
    d = get_dataset_descriptor("synthetic")
    assert (d.train_size_for({"n_train": 12}), d.input_shape_for({"input_shape": [2, 3]}),
            d.num_classes_for({"num_classes": 3})) == (12, (2, 3), 3)
    mnist1d = get_dataset_descriptor("mnist1d")
    assert mnist1d.train_size_for({"num_samples": 1005, "train_split": 0.5}) == 500
    assert mnist1d.test_size_for({"num_samples": 1005, "train_split": 0.5}) == 500
    assert get_dataset_descriptor("synthetic").test_size_for({"n_test": 7}) == 7


def test_mnist1d_options_are_the_packages_generation_arguments_with_its_defaults():
    from mnist1d.data import get_dataset_args

    from workers.data.mnist1d import Mnist1dOptions

    package = get_dataset_args(as_dict=True)
    package.pop("url")
    assert Mnist1dOptions().model_dump() == package


def test_a_name_already_registered_is_refused_on_one_line():
    taken = get_model_descriptor(model_names()[0])
    with pytest.raises(ValueError, match=f"^model '{taken.name}' is already registered; choose another name$"):
        register_model_descriptor(ModelDescriptor(taken.name, "again", taken.build))
    data = get_dataset_descriptor(dataset_names()[0])
    with pytest.raises(ValueError, match=f"^dataset '{data.name}' is already registered; choose another name$"):
        register_dataset_descriptor(DatasetDescriptor(data.name, "again", data.load, 1, (1,), 2, 1))


@pytest.mark.slow
def test_driver_modules_import_neither_torch_nor_pandas():
    code = ("import sys\n"
            "import orchestrator.cli, orchestrator.run.driver, orchestrator.spec.plan, orchestrator.spec.sweep_spec, orchestrator.store.health\n"
            "from orchestrator.deploy.cluster import local_resources\n"
            "from orchestrator.run.versions import versions_json\n"
            "from orchestrator.spec.sweep_spec import describe_registries\n"
            "local_resources(); versions_json(); describe_registries()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'sklearn')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
