"""The torch-free registry the driver validates specs with must agree with the real builders and loaders,
and the driver's own modules must not import torch or pandas (~180 MB and ~40 MB of RSS per driver)."""
import subprocess
import sys

import pytest

from workers import data, models, registry


def test_model_options_match_the_builders_signatures():
    assert list(registry.MODEL_OPTIONS) == list(models.MODELS)
    for name in models.MODELS:
        assert list(registry.MODEL_OPTIONS[name]) == models.model_options(name), name


def test_dataset_names_match_the_loaders():
    assert registry.DATASETS == tuple(data._LOADERS)


@pytest.mark.slow
def test_driver_modules_import_neither_torch_nor_pandas():
    code = ("import sys\n"
            "import orchestrator.cli, orchestrator.driver, orchestrator.plan, orchestrator.spec, orchestrator.resume\n"
            "from orchestrator.cluster import local_resources\n"
            "from orchestrator.versions import versions_json\n"
            "local_resources(); versions_json()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
