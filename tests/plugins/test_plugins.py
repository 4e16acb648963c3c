"""Plugins (workers/plugins.py): what a spec may import, what the driver learns without importing torch, the
plugins' identities in the stage keys, and one-line failures, before anything runs and while it runs."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.run.driver import run_plan
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import SpecError, load_spec, parse_spec
from orchestrator.store.results_store import ResultsStore
from tests.helpers.store_cli import orchestrate

pytestmark = pytest.mark.slow  # plugin code imported in child processes, real submits and a two-node Ray cluster


@pytest.fixture(autouse=True, scope="module")
def built_ins_only_afterwards():
    """Plugins these tests activate in this process are gone after them: test files that run later in the same
    worker (e.g. the generated spec reference) see the built-in registries only."""
    yield
    from orchestrator.spec import plugin_set

    plugin_set.activate(None)

SQUARE = '''\
import torch
from workers.plugins import register_criterion
from helpers import power


@register_criterion(description="θ², a test criterion")
def square(s):
    return {n: power(w, 2) for n, w in s.weights.items()}
'''
HELPERS = "def power(w, k):\n    return w ** k\n"
UNRELATED = "import torch\nfrom workers.plugins import register_criterion\n\n\n" \
            "@register_criterion(description='|θ|³')\ndef cube(s):\n    return {n: w.abs() ** 3 for n, w in s.weights.items()}\n"

BASE = {
    "name": "plug",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "1it"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "square", "sanity_checks": ["invert"]},
                {"kind": "oneshot", "criterion": "cube"}, {"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.8],
    "seeds": [0, 1],
    # One trial actor: these stages take a fraction of what starting a second actor (torch, the plugins) costs.
    "resources": {"max_concurrent": 1},
}


def plugin_folder(root: Path, files: dict[str, str]) -> Path:
    code = root / "mycode"
    code.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (code / name).write_text(text)
    return code


def spec_file(folder: Path, spec: dict) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def square_spec(tmp_path) -> Path:
    code = plugin_folder(tmp_path, {"square.py": SQUARE, "helpers.py": HELPERS, "cube.py": UNRELATED})
    return spec_file(tmp_path, {**BASE, "code": [str(code / "square.py"), str(code / "helpers.py"),
                                                 str(code / "cube.py")], "plugins": ["square", "cube"]})


# ---------------------------------------------------------------- what a spec may import

def test_a_spec_never_imports_a_module_outside_its_code_paths(tmp_path):
    with pytest.raises(SpecError, match=r"plugins: os \(found at .*\) is neither inside a code: path nor part of an "
                                        r"installed distribution declaring a ticketsweep.plugins entry point"):
        parse_spec({**BASE, "plugins": ["os"]})
    path = spec_file(tmp_path, {**BASE, "plugins": ["os"], "store": str(tmp_path / "store")})
    out = orchestrate("plan", str(path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "store").exists()


def test_a_module_beside_a_code_path_but_not_in_it_is_refused(tmp_path):
    code = plugin_folder(tmp_path, {"square.py": SQUARE, "helpers.py": HELPERS, "other.py": UNRELATED})
    with pytest.raises(SpecError, match="plugins: other .* is neither inside a code: path"):
        parse_spec({**BASE, "code": [str(code / "square.py")], "plugins": ["other"]})


def test_a_plugin_that_fails_to_import_is_one_line_naming_file_and_line(tmp_path):
    code = plugin_folder(tmp_path, {"broken.py": "import torch\nx = 1\nraise RuntimeError('boom at import')\n"})
    path = spec_file(tmp_path, {**BASE, "code": ["mycode/broken.py"], "plugins": ["broken"],
                                "store": str(tmp_path / "store")})
    out = orchestrate("validate", str(path))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"{path}: plugin broken: {code / 'broken.py'}:3: RuntimeError: boom at import"
    assert not (tmp_path / "store").exists()
    (code / "broken.py").write_text("def f(:\n")
    out = orchestrate("plan", str(path))
    assert out.returncode == 2 and out.stderr.strip().startswith(f"{path}: plugin broken: {code / 'broken.py'}:1: "
                                                                 f"SyntaxError"), out.stderr


def test_names_that_collide_are_refused(tmp_path):
    code = plugin_folder(tmp_path, {
        "mine.py": "from workers.plugins import register_criterion\n\n\n"
                   "@register_criterion(description='mine')\ndef snip(s):\n    return {}\n",
        "a.py": "from workers.plugins import register_criterion\nregister_criterion(lambda s: {}, name='twice')\n",
        "b.py": "from workers.plugins import register_criterion\nregister_criterion(lambda s: {}, name='twice')\n",
        "m.py": "from workers.plugins import register_model\nregister_model('mlp', lambda i, n: None)\n"})
    with pytest.raises(SpecError, match=rf"plugin mine: {code / 'mine.py'}:4: criterion 'snip' is a built-in criterion"):
        parse_spec({**BASE, "code": [str(code / "mine.py")], "plugins": ["mine"]})
    with pytest.raises(SpecError, match=rf"plugin b: {code / 'b.py'}:2: criterion 'twice' is already registered by "
                                        rf"plugin a \({code / 'a.py'}:2\)"):
        parse_spec({**BASE, "code": [str(code / "a.py"), str(code / "b.py")], "plugins": ["a", "b"]})
    with pytest.raises(SpecError, match=r"plugin m: .*m.py:2: model 'mlp' is a built-in model"):
        parse_spec({**BASE, "code": [str(code / "m.py")], "plugins": ["m"]})


def test_the_driver_learns_the_plugins_without_importing_torch(square_spec):
    code = ("import sys, json\n"
            "from orchestrator.spec.sweep_spec import load_spec\n"
            "from orchestrator.spec.plan import build_plan\n"
            f"spec = load_spec({str(square_spec)!r})\n"
            "plan = build_plan(spec)\n"
            "print(json.dumps([len(plan.stages), sorted(m for m in sys.modules if m.split('.')[0] == 'torch')]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    stages, torch_modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert stages > 0 and torch_modules == []


def test_validate_and_plan_say_which_plugin_files_are_imported(square_spec):
    code = square_spec.parent / "mycode"
    for verb in ("validate", "plan"):
        out = orchestrate(verb, str(square_spec), *(["--store", str(square_spec.parent / "s")] if verb == "plan" else []))
        assert out.returncode == 0, out.stderr
        assert f"plugins imported: square ({code / 'square.py'}), cube ({code / 'cube.py'})" in out.stdout
        assert "criterion square from square: sha256:" in out.stdout


def test_a_plugin_models_options_are_checked_by_its_own_class(tmp_path):
    example = tmp_path / "my_method"  # a copy with its data made, as a fresh clone has none
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("store", "glyphs.npz", "__pycache__"))
    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True)
    spec = yaml.safe_load((example / "spec.yaml").read_text())
    spec["model"]["options"] = {"channels": 0}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "code": [str(example / "my_method")]}))
    with pytest.raises(SpecError, match=rf"^{path}: model.options: model small_cnn: channels: Input should be "
                                        rf"greater than or equal to 1$"):
        load_spec(path)


def test_an_installed_distribution_declaring_the_entry_point_is_a_plugin_named_by_its_version(tmp_path,
                                                                                            monkeypatch):
    site = tmp_path / "site"
    (site / "cubic_prune").mkdir(parents=True)
    (site / "cubic_prune" / "__init__.py").write_text(UNRELATED)
    info = site / "cubic_prune-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cubic-prune\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[ticketsweep.plugins]\ncubic = cubic_prune\n")
    monkeypatch.syspath_prepend(str(site))
    spec = parse_spec({**BASE, "plugins": ["cubic_prune"], "methods": [{"kind": "oneshot", "criterion": "cube"}]})
    assert spec.plugin_manifest()["things"]["criterion:cube"]["identity"] == "cubic-prune==1.2.3"
    plan = build_plan(spec)
    assert {s.params["plugins"]["criterion:cube"] for s in plan.stages.values() if s.kind == "oneshot"} == \
        {"cubic-prune==1.2.3"}
    # Without the entry point the same installed package is not a plugin.
    (info / "entry_points.txt").write_text("[console_scripts]\ncubic = cubic_prune:main\n")
    with pytest.raises(SpecError, match="plugins: cubic_prune .* is neither inside a code: path"):
        parse_spec({**BASE, "plugins": ["cubic_prune"], "methods": [{"kind": "oneshot", "criterion": "cube"}]})


# ---------------------------------------------------------------- the store knows the code

def test_stage_keys_carry_each_plugins_identity_and_only_where_it_is_used(square_spec):
    before = build_plan(load_spec(square_spec))
    builtin = build_plan(parse_spec({**BASE, "methods": [BASE["methods"][0], BASE["methods"][3]]}))
    # Stages of built-in methods keep the keys they have in a spec without plugins.
    same = [k for k, s in before.stages.items() if s.meta.get("method") in (None, "dense", "ltr", "random")]
    assert sorted(same) == sorted(builtin.stages)

    after = None

    def changed_by(edit) -> set[str]:
        nonlocal after
        edit()
        after = build_plan(load_spec(square_spec))
        return {s.label for k, s in before.stages.items() if k not in after.stages}

    code = square_spec.parent / "mycode"
    square = {s.label for s in before.stages.values() if str(s.meta.get("method", "")).startswith("square")}
    assert len(square) == 2 * 2 * 2  # 2 seeds × 2 sparsities × (the method and its inverted check)
    assert changed_by(lambda: None) == set()
    # An edit of the criterion's file, or of a module of the code paths that it imports, runs its stages again.
    assert changed_by(lambda: (code / "square.py").write_text(SQUARE + "# edited\n")) == square
    assert changed_by(lambda: (code / "helpers.py").write_text(HELPERS + "# edited\n")) == square
    cube = {s.label for s in before.stages.values() if s.meta.get("method") == "cube"}
    before = after  # the plan of the edited square and helpers (each load imports the plugins in a child process)
    assert changed_by(lambda: (code / "cube.py").write_text(UNRELATED + "# edited\n")) == cube


# ---------------------------------------------------------------- a criterion's options

SHRUNK = '''\
from pydantic import BaseModel, Field
from workers.plugins import register_criterion


class Options(BaseModel):
    shrink: float = Field(default=0.5, ge=0, le=1, description="how far the magnitudes shrink")


@register_criterion(description="|θ|·(1 - shrink)", options=Options)
def shrunk(s, shrink):
    print(f"scored with shrink={shrink}")  # the stage's log says what the criterion received
    return {n: w.abs() * (1 - shrink) for n, w in s.weights.items()}
'''


@pytest.fixture
def shrunk_spec(tmp_path) -> dict:
    code = plugin_folder(tmp_path, {"shrunk.py": SHRUNK})
    return {**BASE, "code": [str(code / "shrunk.py")], "plugins": ["shrunk"], "store": str(tmp_path / "store"),
            "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "shrunk"},
                        {"kind": "oneshot", "criterion": "shrunk", "criterion_options": {"shrink": 0.25}}]}


def test_a_criterions_options_reach_it_typed_with_its_defaults():
    import torch
    from pydantic import BaseModel, Field
    from torch import nn

    from orchestrator.spec import plugin_set
    from workers.methods import config_from
    from workers.methods.oneshot import scoring
    from workers.plugins import PluginError, register_criterion
    from workers.stages.dispatch import with_tuned

    class Scale(BaseModel):
        scale: float = Field(default=2.0, gt=0)
        power: int = 1

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    names = ["0.weight", "2.weight"]
    try:
        register_criterion(lambda s, scale, power: {n: scale * w.abs() ** power for n, w in s.weights.items()},
                           name="scaled", options=Scale)
        method = config_from({"kind": "oneshot", "criterion": "scaled", "criterion_options": {"power": 2}})
        assert method.typed_options() == {"scale": 2.0, "power": 2} and method.label() == "scaled[power=2]"
        got = scoring.score("scaled", model, names, [], torch.Generator().manual_seed(0),
                            options=method.typed_options())
        assert all(torch.equal(got[n], 2.0 * model.get_parameter(n).detach().abs() ** 2) for n in names)
        # A tuned value lands in the options the worker validates, beside the spec's own.
        stage = with_tuned({"params": {"settings": method.settings()}}, {"criterion_options.scale": 3.0})
        assert config_from(stage["params"]["settings"]).typed_options() == {"scale": 3.0, "power": 2}
        # A criterion's keyword parameters are its options when it gives no class; without any it takes none.
        register_criterion(lambda s, k=3: {n: w.abs() + k for n, w in s.weights.items()}, name="shifted")
        assert config_from({"kind": "oneshot", "criterion": "shifted"}).typed_options() == {"k": 3}
        with pytest.raises(ValueError, match="criterion scaled: scale: Input should be greater than 0"):
            config_from({"kind": "oneshot", "criterion": "scaled", "criterion_options": {"scale": 0}})
        with pytest.raises(ValueError, match="criterion magnitude takes no options, got scale"):
            config_from({"kind": "oneshot", "criterion": "magnitude", "criterion_options": {"scale": 1}})
        with pytest.raises(PluginError, match="criterion clash: option 'rounds' is named like a one-shot knob"):
            register_criterion(lambda s, rounds=1: {}, name="clash")
        with pytest.raises(PluginError, match="criterion typed: options must be a pydantic model class"):
            register_criterion(lambda s: {}, name="typed", options=dict)
    finally:
        plugin_set.activate(None)


BAD_OPTIONS = [
    ({"criterion_options": {"shrnk": 0.1}},
     "methods.1.criterion_options: criterion shrunk has no option(s) shrnk; known: shrink"),
    ({"criterion_options": {"shrink": "lots"}},
     "methods.1.criterion_options: criterion shrunk: shrink: Input should be a valid number"),
    ({"tune": {"criterion_options.shrink": {"uniform": [0.0, 2.0]}}},
     "methods.1: tune.criterion_options.shrink: 2 is not a valid criterion_options.shrink (criterion shrunk: "
     "shrink: Input should be less than or equal to 1)"),
    ({"tune": {"criterion_options.shrnk": {"uniform": [0.0, 1.0]}}},
     "methods.1: tune.criterion_options.shrnk: 0 is not a valid criterion_options.shrnk (criterion shrunk has no "
     "option(s) shrnk; known: shrink)"),
    ({"criterion": "snip", "criterion_options": {"shrink": 0.1}},
     "methods.1.criterion_options: criterion snip takes no options, got shrink"),
]


def test_bad_criterion_options_are_one_line_naming_the_field_and_nothing_is_written(shrunk_spec, tmp_path):
    def spec_with(change: dict) -> dict:
        return {**shrunk_spec, "methods": [shrunk_spec["methods"][0], {**shrunk_spec["methods"][1], **change}],
                "tuning": {"configurations": 2, "sparsities": [0.5]}}

    for change, message in BAD_OPTIONS:
        with pytest.raises(SpecError) as err:
            parse_spec(spec_with(change))
        assert message in str(err.value) and len(str(err.value).splitlines()) == 1, str(err.value)
    out = orchestrate("submit", str(spec_file(tmp_path, spec_with(BAD_OPTIONS[1][0]))), "--no-dashboard",
                      "--no-progress")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert BAD_OPTIONS[1][1] in out.stderr
    assert not (tmp_path / "store").exists()


def test_validate_explain_lists_a_plugin_criterions_options(shrunk_spec, tmp_path):
    out = orchestrate("validate", "--explain", str(spec_file(tmp_path, shrunk_spec)))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index("  shrunk: |θ|·(1 - shrink)")
    assert lines[at + 1] == "    shrink: how far the magnitudes shrink (default 0.5)"


def test_criterion_options_enter_the_keys_of_their_methods_stages_only(shrunk_spec):
    without = build_plan(parse_spec({**shrunk_spec, "methods": shrunk_spec["methods"][:2]}))
    plan = build_plan(parse_spec(shrunk_spec))
    by_method = lambda p, m: {k for k, s in p.stages.items() if s.meta.get("method") == m}
    assert set(without.stages) <= set(plan.stages)  # the other methods' stages keep their keys
    given = by_method(plan, "shrunk[shrink=0.25]")
    assert len(given) == 2 * 2 and not given & set(without.stages)
    settings = {json.dumps(plan.stages[k].params["settings"], sort_keys=True) for k in given}
    assert [json.loads(x)["criterion_options"] for x in settings] == [{"shrink": 0.25}]
    assert "criterion_options" not in next(iter(plan.stages[k] for k in by_method(plan, "shrunk"))).params["settings"]


def test_a_plugin_criterions_knob_is_tuned_and_the_chosen_value_recorded(ray_cluster, shrunk_spec):
    spec = parse_spec({**shrunk_spec, "seeds": [0], "sparsities": [0.5],
                       "training": {**BASE["training"], "epochs": 3},
                       "methods": [{"kind": "oneshot", "criterion": "shrunk", "criterion_options": {"shrink": 0.25},
                                    "tune": {"criterion_options.shrink": {"uniform": [0.0, 1.0]}}}],
                       "tuning": {"configurations": 2, "sparsities": [0.5], "grace_period": 1}})
    store = ResultsStore(spec.store)
    summary = run_plan(build_plan(spec), spec, store, progress=False, echo=lambda *_: None)
    assert summary.failed == 0, summary.failures
    trials = pd.read_parquet(Path(spec.store) / "tuning")
    configs = [json.loads(c) for c in trials.sort_values("trial")["config"]]
    assert len(configs) == 2 and configs[0] == {"criterion_options.shrink": 0.25}  # the spec's value first
    assert 0 <= configs[1]["criterion_options.shrink"] <= 1 and trials["chosen"].sum() == 1
    chosen = json.loads(trials.loc[trials["chosen"], "config"].iloc[0])["criterion_options.shrink"]
    points = pd.read_parquet(Path(spec.store) / "points")
    row = points[points["method"] == "shrunk[shrink=0.25,tuned]"]
    assert len(row) == 1 and row["status"].iloc[0] == "ok"
    assert json.loads(row["settings"].iloc[0])["criterion_options.shrink"] == chosen
    logs = list(Path(spec.store, "logs", "sweep=plug").glob(row["stage_key"].iloc[0] + "-*.log"))
    assert len(logs) == 1 and f"scored with shrink={chosen}\n" in logs[0].read_text()


# ---------------------------------------------------------------- failures while running

FAULTY = '''\
import torch
from workers.plugins import register_criterion


@register_criterion(description="flattened scores")
def flat(s):
    return {n: w.flatten() for n, w in s.weights.items()}


@register_criterion(description="a parameter that does not exist")
def ghost(s):
    return {**{n: w.abs() for n, w in s.weights.items()}, "fc9.weight": torch.ones(3)}


@register_criterion(description="raises")
def boom(s):
    raise ValueError("no scores today")
'''


def test_a_faulty_plugin_criterion_fails_its_stages_on_one_line_and_nothing_else(ray_cluster, tmp_path):
    code = plugin_folder(tmp_path, {"faulty.py": FAULTY})
    spec = parse_spec({**BASE, "code": [str(code / "faulty.py")], "plugins": ["faulty"], "seeds": [0],
                       "sparsities": [0.5], "methods": [{"kind": "oneshot", "criterion": c}
                                                        for c in ("flat", "ghost", "boom", "magnitude")]})
    summary = run_plan(build_plan(spec), spec, ResultsStore(str(tmp_path / "store")), progress=False,
                       echo=lambda *_: None)
    assert summary.failed == 3
    points = pd.read_parquet(tmp_path / "store" / "points")
    by = {str(r.method): r for r in points.itertuples()}
    assert by["magnitude"].status == "ok" and by["dense"].status == "ok"
    assert by["flat"].error.startswith("PluginError: criterion flat (plugin faulty): the scores of hidden.0.weight have "
                                       "shape (320,), its weight (8, 40)")
    assert by["ghost"].error.startswith("PluginError: criterion ghost (plugin faulty): scored 'fc9.weight', not a "
                                        "prunable parameter; prunable: hidden.0.weight")
    assert by["boom"].error.startswith("PluginError: criterion boom (plugin faulty): raised ValueError: no scores "
                                       "today at faulty.py:17")
    assert all("\n" not in by[m].error for m in ("flat", "ghost", "boom"))
    assert {by[m].status for m in ("flat", "ghost", "boom")} == {"failed"}
    versions = json.loads(by["boom"].versions)
    assert versions["plugins"].startswith("criterion boom from faulty sha256:")
    assert "plugins" not in json.loads(by["magnitude"].versions)


SLEEPY = '''\
import time
from workers.plugins import register_criterion


@register_criterion(description="never returns")
def sleepy(s):
    time.sleep(3600)
'''


def test_a_plugin_criterion_that_hangs_is_recorded_hung_on_one_line_and_the_rest_finish(ray_cluster, tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli import main

    code = plugin_folder(tmp_path, {"sleepy.py": SLEEPY})
    spec = {**BASE, "code": [str(code / "sleepy.py")], "plugins": ["sleepy"], "seeds": [0], "sparsities": [0.5],
            "store": str(tmp_path / "store"),
            # Two actors: the sleepy stage holds one until it is declared hung, the other stages run on the other.
            # Hung once silent for max(floor, factor x the slowest epoch of its kind): that is magnitude's first,
            # which includes its actor's setup. The default factor (10) would make the test wait that out ten
            # times over; two still leaves the live stages, whose silences are far shorter than that first epoch,
            # a margin that grows with the machine's load as the epoch does.
            "resources": {"max_concurrent": 2, "max_retries": 0, "hang_floor_s": 3, "hang_factor": 2},
            "methods": [{"kind": "oneshot", "criterion": "sleepy"}, {"kind": "oneshot", "criterion": "magnitude"}]}
    out = CliRunner().invoke(main, ["submit", str(spec_file(tmp_path, spec)), "--no-dashboard", "--no-progress"])
    assert out.exit_code == 1, out.output
    # One line of the summary names the stage (its progress line aside).
    (line,) = [x for x in out.output.splitlines() if x.startswith("  sleepy")]
    assert line.startswith("  sleepy s=0 sp=0.5000: failed (hung): no sign of life for "), line
    points = pd.read_parquet(tmp_path / "store" / "points")
    by = {str(r.method): r for r in points.itertuples()}
    assert by["sleepy"].status == "failed" and by["sleepy"].error_type == "hung"
    assert "\n" not in by["sleepy"].error
    assert by["magnitude"].status == "ok" and by["dense"].status == "ok"


def test_a_plugin_model_whose_builder_raises_is_one_line_before_anything_runs(tmp_path):
    plugin_folder(tmp_path, {"net.py": "from workers.plugins import register_model\n\n\n"
                                              "def build(input_shape, num_classes, width=4):\n"
                                              "    raise ValueError(f'width {width} is too narrow')\n\n\n"
                                              "register_model('net', build)\n"})
    path = spec_file(tmp_path, {**BASE, "model": {"name": "net", "options": {"width": 2}}, "code": ["mycode/net.py"],
                                "plugins": ["net"], "store": str(tmp_path / "store"),
                                "methods": [{"kind": "oneshot", "criterion": "random"}]})
    out = orchestrate("submit", str(path), "--no-dashboard", "--no-progress")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == ("model: model net (plugin net): the builder raised ValueError: width 2 is too "
                                  "narrow at net.py:5")
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------- a whole family, tuned, compared, reported

FAMILY = '''\
"""Magnitude pruning with multiplicative noise, |θ|·(1 + noise·ε): a family with one knob (torch-free here)."""
from typing import Literal

from pydantic import Field

from workers.methods.base import MethodConfig

RUNNERS = {"noisy_magnitude": "myfam.run:run"}


class NoisyMagnitude(MethodConfig):
    """Magnitude with noise, rewound and retrained."""
    kind: Literal["noisy_magnitude"]
    noise: float = Field(default=0.5, ge=0, le=10, description="relative noise on the magnitudes")

    def add_stages(self, seed, plan):
        for sp in plan.targets:
            stage = plan.point("noisy_magnitude", seed, self, params={"target_sparsity": sp},
                               parents={"warmup": seed.warmup.key}, inputs=["warmup"], cost=[seed.warmup.key],
                               work=plan.retrain_work, label=f"{self.label()} s={seed.seed} sp={sp:.4f}")
            plan.sanity(self, stage, seed)


CONFIGS = (NoisyMagnitude,)
'''
FAMILY_RUN = '''\
import torch

from workers import masks
from workers.rng import Stream
from workers.stages.kit import StageResult, generator, measured, method_of, model_with, prunable, retrain



def run(stage, inputs, data, on_epoch=None):
    method, p = method_of(stage), stage["params"]
    model = model_with(stage, data, inputs["warmup"]["weights"])
    names = prunable(stage, model)
    gen = generator(stage, Stream.ONESHOT)
    weights = masks.prunable_params(model, names)
    scores = {n: w.detach().abs() * (1 + method.noise * torch.randn(w.shape, generator=gen)) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    mask = masks.global_topk(scores, masks.keep_count(total, 1 - p["target_sparsity"]), gen, largest=not p["invert"])
    _, result = retrain(stage, data, inputs["warmup"]["weights"], mask, on_epoch)
    return StageResult(outputs={"mask": masks.mask_to_cpu(mask)}, point=measured(mask, result), curve=result.curve)
'''
FAMILY_PLUGIN = "import myfam\nfrom workers.plugins import register_family\n\nregister_family(myfam)\n"


def test_a_plugin_family_is_tuned_sanity_checked_compared_and_reported(ray_cluster, tmp_path):
    code = tmp_path / "myfam"
    code.mkdir()
    (code / "__init__.py").write_text(FAMILY)
    (code / "run.py").write_text(FAMILY_RUN)
    (code / "plugin.py").write_text(FAMILY_PLUGIN)
    spec_dict = {**BASE, "code": ["myfam"], "plugins": ["myfam.plugin"], "seeds": [0, 1], "sparsities": [0.5],
                 "store": str(tmp_path / "store"),
                 "methods": [{"kind": "ltr"},
                             {"kind": "noisy_magnitude", "sanity_checks": ["shuffle", "invert"],
                              "tune": {"noise": {"uniform": [0.0, 1.0]}}}],
                 "tuning": {"configurations": 2, "sparsities": [0.5], "grace_period": 1}}
    path = spec_file(tmp_path, spec_dict)
    with pytest.raises(SpecError, match=r"methods.0: tune.noise: 11 is not a valid noise \(Input should be less "):
        parse_spec({**spec_dict, "code": [str(code)], "methods": [
            {"kind": "noisy_magnitude", "tune": {"noise": {"uniform": [0.0, 11.0]}}}]})
    spec = load_spec(path)
    plan = build_plan(spec)
    summary = run_plan(plan, spec, ResultsStore(spec.store), progress=False, echo=lambda *_: None)
    assert summary.failed == 0 and summary.ran == len(plan.stages)
    points = pd.read_parquet(tmp_path / "store" / "points")
    methods = set(points["method"].astype(str))
    assert {"noisy_magnitude[tuned]", "noisy_magnitude[tuned]+shuffle", "noisy_magnitude[tuned]+invert"} <= methods
    tuned = points[points["method"] == "noisy_magnitude[tuned]"]
    assert (tuned["status"] == "ok").all() and json.loads(tuned["versions"].iloc[0])["plugins"].startswith(
        "family noisy_magnitude from myfam.plugin sha256:")
    trials = pd.read_parquet(tmp_path / "store" / "tuning")
    assert len(trials) == 2 and trials["chosen"].sum() == 1
    # The CLI in this process, as the sweep above ran: a child process would only add its start and imports.
    from click.testing import CliRunner

    from orchestrator.cli import main

    out = CliRunner().invoke(main, ["compare", str(path), "ltr", "noisy_magnitude[tuned]"])
    assert out.exit_code == 0 and "noisy_magnitude[tuned]" in out.output, out.output
    out = CliRunner().invoke(main, ["results", "--spec", str(path)])
    assert out.exit_code == 0 and "noisy_magnitude[tuned]+shuffle" in out.output, out.output
    out = CliRunner().invoke(main, ["report", str(path), "-o", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    page = (tmp_path / "report" / "report.md").read_text()
    assert "family noisy_magnitude from myfam.plugin sha256:" in page


# ---------------------------------------------------------------- the example a researcher copies

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "my_method"


def _ran(out: subprocess.CompletedProcess) -> int:
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in (out.stdout + out.stderr).splitlines() if "stage(s) ran" in x or "nothing to run" in x]
    assert line, out.stdout + out.stderr
    return int(line[-1].split()[0]) if "stage(s) ran" in line[-1] else 0


def _stored(out: subprocess.CompletedProcess) -> int:
    (line,) = [x for x in out.stdout.splitlines() if "already stored" in x]
    return int(line.split(" already stored")[0].split()[-1])


def test_the_example_runs_from_outside_the_repo_and_an_edit_reruns_only_its_stages(ray_address, tmp_path):
    import shutil

    example = tmp_path / "my_method"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("store", "glyphs.npz", "__pycache__"))
    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True)
    spec = yaml.safe_load((example / "spec.yaml").read_text())
    # The trimmed budget: the example's spec with fewer epochs, one sparsity (LTR's fewest rounds), two seeds and
    # one trial actor (its stages are shorter than a second actor's start).
    spec.update(training={**spec["training"], "epochs": 2, "milestones": []}, sparsities=[0.5], seeds=[0, 1],
                resources={**spec["resources"], "max_concurrent": 1})
    (example / "ci.yaml").write_text(yaml.safe_dump(spec))
    run = tmp_path / "elsewhere"
    run.mkdir()

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=run, capture_output=True,
                              text=True, timeout=900)

    # The submits that run stages join the session's cluster: the plugin code reaches its workers only through
    # the runtime env either way (a private cluster's start is tested elsewhere); the one with nothing to run
    # starts no cluster.
    ran = _ran(cli("submit", str(example / "ci.yaml"), "--no-progress", "--address", ray_address))
    again = cli("submit", str(example / "ci.yaml"), "--no-dashboard", "--no-progress")
    # Nothing left to run, and every stage of the plan stored by the first submit (its plan, counted by the
    # second, saves loading the plugins in yet another child process here).
    assert _ran(again) == 0 and _stored(again) == ran > 0
    with open(example / "my_method" / "criterion.py", "a") as f:
        f.write("# an edit\n")
    assert _ran(cli("submit", str(example / "ci.yaml"), "--no-progress", "--address", ray_address)) == 2  # obd
    points = pd.read_parquet(example / "store" / "points")
    assert set(points.loc[points["status"] != "ok", "method"].astype(str)) == set()
    out = cli("compare", str(example / "ci.yaml"), "--reference", "ltr", "--all")
    assert out.returncode == 0 and "obd" in out.stdout and "cts_reverse_kl" in out.stdout, out.stderr
    out = cli("report", str(example / "ci.yaml"), "-o", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    assert "criterion obd from my_method.criterion sha256:" in (tmp_path / "report" / "report.md").read_text()


# ---------------------------------------------------------------- shipped to other nodes

OTHER_NODES = textwrap.dedent('''
    import json, socket, sys
    import pandas as pd
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors
    from orchestrator.deploy.cluster import WORKER_NICENESS
    from orchestrator.run.driver import run_plan
    from orchestrator.spec.plan import build_plan
    from orchestrator.spec.sweep_spec import load_spec
    from orchestrator.store.results_store import ResultsStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dashboard_port = s.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_port": dashboard_port,
                                                            "_system_config": {"worker_niceness": WORKER_NICENESS}})
    cluster.add_node(num_cpus=2)                             # a CPU-only node
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)      # a node with one (fake) GPU
    spec = load_spec(sys.argv[1])
    summary = run_plan(build_plan(spec), spec, ResultsStore(spec.store), address=cluster.address, progress=False,
                       echo=lambda *_: None)

    @ray.remote(num_cpus=1, num_gpus=0.5)
    def importable():
        import importlib.util
        return importlib.util.find_spec("square") is not None, ray.get_runtime_context().get_node_id()

    plain = ray.get(importable.remote())  # a task without the sweep's runtime env, on the GPU node
    placed = {a["node_id"] for a in list_actors(filters=[("class_name", "=", "TrialActorBody")])}
    points = pd.read_parquet(spec.store + "/points")
    print(json.dumps({"ran": summary.ran, "failed": summary.failed, "placed": sorted(placed),
                      "gpu_node": gpu_node.node_id, "plain": plain, "status": sorted(set(points["status"])),
                      "gpu_fraction": {str(m): sorted(set(g["gpu_fraction"])) for m, g in points.groupby("method")},
                      "device": sorted(set(points["device"]))}))
    ray.shutdown()
    cluster.shutdown()
''')


@pytest.fixture(scope="module")
def on_other_nodes(tmp_path_factory) -> dict:
    """A plugin criterion's sweep on a cluster whose head has no CPU, beside a CPU-only node and a node with one
    (fake) GPU, each trial asking for half a GPU; the driver runs from a folder that is not the plugin's, so
    nothing makes the plugin importable on a worker but Ray's runtime env."""
    tmp_path = tmp_path_factory.mktemp("other_nodes")
    code = plugin_folder(tmp_path / "src", {"square.py": SQUARE, "helpers.py": HELPERS})
    path = spec_file(tmp_path, {**BASE, "code": [str(code / "square.py"), str(code / "helpers.py")],
                                "plugins": ["square"], "seeds": [0], "sparsities": [0.5],
                                "store": str(tmp_path / "store"),
                                "methods": [{"kind": "oneshot", "criterion": "square"}],
                                "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent": 2}})
    run = tmp_path / "driver"
    run.mkdir()
    out = subprocess.run([sys.executable, "-c", OTHER_NODES, str(path)], cwd=run, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plugin_code_reaches_the_other_node_only_through_the_runtime_env(on_other_nodes):
    result = on_other_nodes
    assert result["failed"] == 0 and result["ran"] == 4  # init, warm-up, dense, square
    assert result["plain"] == [False, result["gpu_node"]]  # the node the trials ran on cannot import it otherwise
    assert result["status"] == ["ok"] and sorted(result["gpu_fraction"]) == ["dense", "square"]


def test_a_plugin_methods_stages_get_the_specs_gpu_share_on_the_gpu_node(on_other_nodes):
    result = on_other_nodes
    assert result["placed"] == [result["gpu_node"]]  # not the CPU-only node, not the head
    assert result["gpu_fraction"] == {"dense": [0.5], "square": [0.5]}
    assert result["device"] == ["cpu"]  # a fake GPU: torch sees no CUDA, the actor falls back to the CPU
