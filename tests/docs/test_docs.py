"""The README and CI must say what the code does."""
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.spec.sweep_spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_is_generated_from_the_code():
    # In a fresh process: a plugin another test activated in this one would be listed as if built in.
    fresh = subprocess.run([sys.executable, "-c", "from orchestrator.spec.sweep_spec import describe; print(describe())"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip("\n")
    spec_md = (ROOT / "docs" / "spec.md").read_text()
    assert fresh in spec_md, "docs/spec.md's field list is stale: run `python docs/make_spec.py`"
    first_block = re.findall(r"```\n(.*?)```", spec_md, flags=re.S)[0]
    assert first_block.rstrip("\n") == fresh, "docs/spec.md's field list is not exactly the code's: run `python docs/make_spec.py`"


def test_readme_is_a_front_door_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300, "README.md is the front door: details go in docs/"
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to missing {target}"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    blocks = [readme[i + 1] for i, line in enumerate(readme[:20]) if line.strip() == "```" and i + 1 < len(readme)
              and readme[i + 1].strip() and not readme[i + 1].startswith("```")]
    install_and_quickstart, tests = blocks[0], blocks[1]
    assert "orchestrate submit specs/quickstart.yaml" in install_and_quickstart
    assert "torch==2.13.0" in install_and_quickstart.split("pip install -e")[0]
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_gives_the_fast_tier_by_the_marker_pyproject_declares():
    import tomllib

    readme = (ROOT / "README.md").read_text().splitlines()
    fast = '`python -m pytest -q -n 2 -m "not slow"`'  # inline: the README's only test command block is the full suite
    assert fast in _section("Development"), f"the README's development section shows the fast tier: {fast}"
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)
    full = shlex.split(readme[readme.index("Run the tests:") + 3].rpartition("&&")[2])
    assert full[:3] == ["python", "-m", "pytest"] and "-m" not in full[3:] and "-k" not in full[3:]  # all of it


def test_every_shipped_spec_is_valid():
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    assert len(specs) >= 5
    for path in specs:
        load_spec(path)


# ---------------------------------------------------------------- the README's "Using it" section, run

def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end > 0 else None]


def _code_blocks(text: str, lang: str = "") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def using_it_commands() -> list[list[str]]:
    """The `orchestrate ...` lines of the first code block of "Using it", without their comments."""
    block = _code_blocks(_section("Using it"))[0]
    return [shlex.split(re.sub(r"\s+#.*$", "", line))[1:] for line in block.splitlines()
            if line.startswith("orchestrate ")]


def test_using_it_lists_every_verb_and_the_new_flags():
    verbs = {args[0] for args in using_it_commands()}
    from orchestrator.cli import main

    assert verbs >= set(main.commands) - {"cancel", "k8s"}, "a verb is missing from the README's Using it"
    flat = [" ".join(args) for args in using_it_commands()]
    assert any("--format csv -o" in c for c in flat) and "--version" in flat and "data fetch mnist" in flat


TINY_QUICKSTART = {
    "name": "quickstart",  # no store key: ./ticketsweep-store in the working directory, as the README reads it
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 128, "n_test": 64}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "2it"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.8],
    "seeds": [0],
    # One trial actor: the stages are shorter than a second actor's start (torch imported in a new process).
    "resources": {"max_concurrent": 1},
}


TINY_TUNING = {**TINY_QUICKSTART, "name": "tuning", "sparsities": [0.5],
               "methods": [{"kind": "oneshot", "criterion": "random"},
                           {"kind": "oneshot", "criterion": "random",
                            "tune": {"training.lr": {"loguniform": [0.01, 0.3]}}}],
               "training": {**TINY_QUICKSTART["training"], "epochs": 3},
               "tuning": {"configurations": 2, "sparsities": [0.5]}}


@pytest.mark.slow
def test_every_using_it_command_and_the_pandas_example_work(ray_cluster, tmp_path, monkeypatch):
    """Runs each README command in order on a tiny synthetic stand-in for specs/quickstart.yaml (one Ray run),
    in a fresh working directory, then the README's pandas example."""
    import pandas as pd
    import yaml
    from click.testing import CliRunner
    from tests.helpers.archive_server import Server, mnist_manifest, use_manifest
    from tests.helpers.data_writers import write_mnist

    from orchestrator.cli import main

    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "quickstart.yaml").write_text(yaml.safe_dump(TINY_QUICKSTART))
    (tmp_path / "specs" / "tuning.yaml").write_text(yaml.safe_dump(TINY_TUNING))
    monkeypatch.chdir(tmp_path)
    # `data fetch mnist` downloads from a loopback mirror of tiny real-format archives into $TICKETSWEEP_DATA.
    src = tmp_path / "mirror-src"
    write_mnist(src, compress=True)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    server = Server(files)
    use_manifest(monkeypatch, mnist_manifest(files, server))
    monkeypatch.setenv("TICKETSWEEP_DATA", str(tmp_path / "data"))
    outputs = {}
    try:
        for args in using_it_commands():
            result = CliRunner().invoke(main, args)
            if args[0] == "export" and importlib.util.find_spec("tensorboardX") is None:
                # an optional package: without it, one line naming it
                assert result.exit_code == 2 and "pip install tensorboardX" in result.output, result.output
                continue
            assert result.exit_code == 0, (args, result.output)
            if args[0] == "logs":  # every stage keeps its log: a header, one line per epoch, the outcome
                assert "stage ltr s=0 L=3 " in result.output and "train epoch 1" in result.output  # by its label
                assert "best validation accuracy" in result.output and "test accuracy" in result.output
            outputs[" ".join(args[:2])] = result.output
    finally:
        server.close()

    assert "[1/" in outputs["submit specs/quickstart.yaml"]  # not a terminal: one line per finished stage
    assert "quickstart" in outputs["sweeps"]
    frontier = pd.read_csv(tmp_path / "frontier.csv")
    assert set(frontier["method"]) == {"dense", "ltr", "random"}
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "data" / "MNIST" / "raw").is_dir()
    assert outputs["--version"].startswith("ticketsweep ")

    (example,) = _code_blocks(_section("Using it"), "python")
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    points, ok = scope["points"], scope["ok"]
    assert (~points["requested"]).any(), "the tiny sweep must have intermediate LTR levels for this to test anything"
    assert ok["requested"].all() and (ok["status"] == "ok").all()
    table = ok.groupby(["method", "target_sparsity"]).test_accuracy.agg(["mean", "std", "count"])
    # The same points as `results`: one group per frontier row.
    assert sorted(map(tuple, table.reset_index()[["method", "target_sparsity"]].astype(str).values)) == sorted(
        map(tuple, frontier[["method", "target_sparsity"]].astype(str).values))
