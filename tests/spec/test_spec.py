from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import SpecError, load_spec, parse_spec
from workers.data.registry import dataset_names, get_dataset_descriptor
from workers.methods.oneshot.criteria import CRITERIA
from workers.models.registry import get_model_descriptor, model_names

SPECS = Path(__file__).resolve().parents[2] / "specs"

BASE = {
    "name": "t",
    "model": {"name": "mlp"},
    "dataset": {"name": "synthetic"},
    "training": {"epochs": 4, "rewind": "1ep"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.9],
    "seeds": [0],
}


def _either(names) -> str:
    """'a', 'b' or 'c': how an error lists the allowed values."""
    quoted = [repr(n) for n in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def with_(**changes):
    d = {**BASE}
    d.update(changes)
    return d


def test_valid_spec_parses_with_defaults():
    spec = parse_spec(BASE)
    assert spec.training.batch_size == 128
    assert spec.resources.max_concurrent == 2
    assert spec.target_sparsities() == [0.5, 0.9]


def test_ladder_gives_geometric_densities():
    spec = parse_spec(with_(sparsities={"base": 0.8, "start": 1, "stop": 3}))
    assert spec.target_sparsities() == pytest.approx([0.2, 0.36, 0.488])


@pytest.mark.parametrize("data,field", [
    (with_(seeds="zero"), "seeds"),
    (with_(bogus=1), "bogus: unknown key"),
    (with_(methods=[{"kind": "prune_everything"}]), "unknown method kind 'prune_everything'; known: ltr, lrr, finetune, oneshot, cts"),
    (with_(methods=[{"kind": "oneshot", "criterion": "magic"}]), "methods.0.criterion"),
    (with_(methods=[{"kind": "ltr", "extra": 1}]), "methods.0.extra: unknown key"),
    (with_(sparsities=[0.5, 1.5]), "sparsities"),
    (with_(training={"epochs": 4, "rewind": "5 bananas"}), "training.rewind"),
    (with_(training={"epochs": 4, "rewind": "9ep"}), "training"),
    (with_(model={"name": "transformer"}), "model.name: unknown model 'transformer'"),
    (with_(methods=[{"kind": "ltr"}, {"kind": "ltr"}]), "methods listed twice: ltr"),
    (with_(training={"epochs": 4, "loss_reduction": "max"}), "training.loss_reduction: expected 'mean' or 'sum', got 'max'"),
    (with_(training={"epochs": 4, "precision": "fp8"}), "training.precision: expected 'fp32', 'bf16' or 'fp16', got 'fp8'"),
    (with_(training={"epochs": 4, "precision": "fp16"}),
     "training.precision fp16 needs CUDA, but resources.gpus_per_trial is 0"),
    (with_(training={"epochs": 4, "precision": "bf16"}, resources={"gpus_per_trial": 0.5},
           methods=[{"kind": "ltr"}, {"kind": "cts", "resources": {"gpus_per_trial": 0}}]),
     "training.precision bf16 needs CUDA, but methods.1.resources.gpus_per_trial is 0"),
    (with_(model={"name": "resnet20", "options": {"bn_runing_stats": False}}),
     "model.options: model resnet20: bn_runing_stats: unknown key; did you mean 'bn_running_stats'?"),
    (with_(model={"name": "mlp", "options": {"hidden": [0]}}), "model.options: model mlp: hidden.0: expected a number > 0"),
    (with_(dataset={"name": "synthetic", "options": {"n_trian": 8}}),
     "dataset.options: dataset synthetic: n_trian: unknown key; did you mean 'n_train'?"),
    (with_(dataset={"name": "mnist", "options": {"n_train": 8}}), "dataset.options: dataset mnist: n_train: unknown key"),
    (with_(dataset={"name": "imagenet"}), "dataset.name: unknown dataset 'imagenet'"),
    (with_(methods=[{"kind": "cts", "search_bn": "eval"}]), "methods.0.search_bn: expected 'batch' or 'running', got 'eval'"),
    (with_(methods=[{"kind": "cts", "search_at": "end"}]), "methods.0.search_at: expected 'rewind' or 'init', got 'end'"),
])
def test_bad_specs_name_the_field(data, field):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert field in str(err.value)


BAD_FILES = {
    "empty.yaml": "",
    "notyaml.yaml": "name: [unclosed\n  - x: {",
    "list.yaml": "- 1\n- 2\n",
    "python.yaml": "!!python/object/apply:os.system ['echo pwned > /tmp/ticketsweep-pwned']\n",
    "types.yaml": "name: t\nmodel: {name: mlp}\ndataset: {name: synthetic}\ntraining: {epochs: many}\n"
                  "methods: [{kind: ltr}]\nsparsities: [0.5]\nseeds: [0]\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_cli_bad_spec_files_exit_2_with_one_line_and_no_traceback(tmp_path, name):
    path = tmp_path / name
    path.write_text(BAD_FILES[name])
    store = tmp_path / "store"
    for args in (["validate", str(path)], ["submit", str(path), "--store", str(store)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert str(path) in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not store.exists()


def test_python_tags_are_not_constructed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text(BAD_FILES["python.yaml"])
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "no such spec file" in result.output


def test_validate_prints_summary(tmp_path):
    import yaml
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    result = CliRunner().invoke(main, ["validate", str(path), "--explain"])
    assert result.exit_code == 0, result.output
    assert "stages:" in result.output and "result points:" in result.output
    assert "training.rewind" in result.output


def test_precision_is_accepted_when_every_trial_has_a_gpu():
    spec = parse_spec(with_(training={"epochs": 4, "precision": "fp16", "loss_reduction": "sum"},
                            resources={"gpus_per_trial": 0.25}))
    assert (spec.training.precision, spec.training.loss_reduction) == ("fp16", "sum")
    assert parse_spec(BASE).training.precision == "fp32" and parse_spec(BASE).training.loss_reduction == "mean"


def test_cts_variants_have_distinct_labels_and_may_be_listed_together():
    methods = [{"kind": "cts"}, {"kind": "cts", "search_bn": "running"}, {"kind": "cts", "search_at": "init"},
               {"kind": "cts", "objective": "cross_entropy", "search_bn": "running", "search_at": "init"}]
    spec = parse_spec(with_(methods=methods))
    assert [m.label() for m in spec.methods] == [
        "cts_reverse_kl", "cts_reverse_kl[search_bn=running]", "cts_reverse_kl[search_at=init]",
        "cts_cross_entropy[search_bn=running,search_at=init]"]
    assert all("+" not in m.label() for m in spec.methods)   # "+" is the sanity checks' suffix
    assert (spec.methods[0].search_bn, spec.methods[0].search_at) == ("batch", "rewind")


def test_one_naming_rule_for_every_method_variant():
    methods = [{"kind": "oneshot", "criterion": "magnitude"}, {"kind": "oneshot", "criterion": "magnitude",
                                                                "score_at": "trained"},
               {"kind": "oneshot", "criterion": "snip", "samples_per_class": 20, "rounds": 2},
               {"kind": "ltr", "sanity_checks": ["shuffle"]}, {"kind": "lrr", "max_prune_fraction": 0.5},
               {"kind": "cts", "search": 3, "lr": 0.05}]
    spec = parse_spec(with_(methods=methods))
    assert [m.label() for m in spec.methods] == [
        "magnitude", "magnitude[score_at=trained]", "snip[rounds=2,samples_per_class=20]", "ltr",
        "lrr[max_prune_fraction=0.5]", "cts_reverse_kl[search=3,lr=0.05]"]
    # the same labels name the rows, the plan's stages and (without the seed) the dashboard's tasks
    plan = build_plan(spec)
    assert {m.label() for m in spec.methods} | {"ltr+shuffle", "dense"} == \
        {s.meta["method"] for s in plan.stages.values() if "method" in s.meta}


def test_the_paper_recipe_spec_validates_and_its_stages_carry_the_recipe():
    spec = load_spec(SPECS / "cifar10_resnet20_paper.yaml")
    plan = build_plan(spec)
    cts = next(s for s in plan.stages.values() if s.kind == "cts" and s.params["settings"]["search_at"] == "rewind")
    payload = cts.payload(plan.config)
    training = payload["config"]["training"]
    assert {k: training[k] for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "milestones", "rewind",
                                     "grad_clip", "loss_reduction", "precision")} == {
        "epochs": 160, "batch_size": 512, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.001, "milestones": [80, 120],
        "rewind": "9ep", "grad_clip": 2.0, "loss_reduction": "sum", "precision": "fp16"}
    assert payload["config"]["model"] == {"name": "resnet20",
                                          "options": {"bn_running_stats": False, "shortcut_kernel": 3}}
    settings = payload["params"]["settings"]
    assert (settings["search_bn"], settings["search"], settings["lr"]) == ("batch", "long", None)  # 160 epochs at 0.1
    # densities 0.8^2, 0.8^4, ..., 0.8^42, as the authors' ladder
    assert spec.target_sparsities() == pytest.approx([1 - 0.8 ** (2 * k) for k in range(1, 22)])
    assert {m.label() for m in spec.methods} >= {"ltr", "cts_reverse_kl", "cts_cross_entropy[search_at=init]",
                                                 "snip[samples_per_class=51]", "grasp[samples_per_class=51]", "synflow",
                                                 "magnitude[score_at=init]", "random"}
    at_init = next(s for s in plan.stages.values() if s.kind == "cts" and s.params["settings"]["search_at"] == "init")
    assert set(at_init.inputs) == {"init"}


# ---------------------------------------------------------------- plain messages

@pytest.mark.parametrize("data, line", [
    (with_(sparsities=0.9), "spec: sparsities: expected a list of numbers in (0, 1), or a ladder {base, start, stop}, "
                            "got 0.9"),
    (with_(sparsities=[0.5, "x"]), "spec: sparsities.1: expected a number, got 'x'"),
    (with_(sparsities=[0.5, 1.5]), "spec: sparsities: expected numbers in (0, 1), got [1.5]"),
    (with_(sparsities={"base": 2, "stop": 3}), "spec: sparsities.base: expected a number < 1, got 2"),
    (with_(seed=[1]), "spec: seed: unknown key; did you mean 'seeds'?"),
    (with_(resources={"cpus": 2}), "spec: resources.cpus: unknown key; did you mean 'cpus_per_trial'?"),
    (with_(training={"epochs": "many"}), "spec: training.epochs: expected a whole number, got 'many'"),
    (with_(training={"epochs": 4, "optimizer": "rmsprop"}),
     "spec: training.optimizer: expected 'sgd' or 'adam', got 'rmsprop'"),
    (with_(methods=[{"kind": "oneshot", "criterion": "snp"}]),
     f"spec: methods.0.criterion: expected {_either(CRITERIA)}, "
     "got 'snp'; did you mean 'snip'?"),
    (with_(methods=[{"kind": "cts", "search": "medium"}]),
     "spec: methods.0.search: expected 'long', 'short' or a number of epochs, got 'medium'"),
    (with_(methods=[{"kind": "cts", "lr": -1}]), "spec: methods.0.lr: expected a number > 0, got -1"),
    (with_(methods=[{"kind": "oneshoot"}]), "spec: methods.0: unknown method kind 'oneshoot'; did you mean 'oneshot'?"),
    (with_(methods=[{"criterion": "snip"}]), "spec: methods.0: missing 'kind'; one of ltr, lrr, finetune, oneshot, cts, gmp, granet, bip"),
    (with_(methods=[{"kind": "cts", "search": -1}]),
     "spec: methods.0.search: expected 'long', 'short' or a number of epochs, got -1"),
    (with_(training={"epochs": 4, "lr": float("inf")}), "spec: training.lr: expected a finite number, got inf"),
    (with_(resources={"cpus_per_trial": 1e9}), "spec: resources.cpus_per_trial: expected a number ≤ 1024, got 1000000000.0"),
    (with_(methods=[{"kind": "oneshot", "criterion": "snip", "sanity_checks": ["shuffle", "shuffle"]}]),
     "spec: methods.0.sanity_checks: a sanity check is listed twice"),
    (with_(prune_output="maybe"), "spec: prune_output: expected true or false, got 'maybe'"),
    (with_(model="mlp"), "spec: model: expected a mapping of fields, got 'mlp'"),
    (with_(training={"rewind": "1ep"}), "spec: training.epochs: required field missing"),
])
def test_errors_are_plain_one_liners(data, line):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert str(err.value) == line
    for internal in ("Input should", "list[float]", "function-after", "Ladder]", "literal["):
        assert internal not in str(err.value)


def test_yaml_error_reports_the_line_of_the_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nmodel: {name: mlp}\nseeds: [0, 1\ndataset: {name: synthetic}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    # The unclosed list starts on line 3; the parser gives up on line 4, where the next key begins.
    assert str(err.value).startswith(f"{path}: not valid YAML at line 4, column 8: ")
    assert "at line 3)" in str(err.value)
    path.write_text("name: t\nmodel: {name: mlp}\n  bad indent: 1\n")
    with pytest.raises(SpecError, match=r"not valid YAML at line 3, column"):
        load_spec(path)


def test_json_error_reports_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "t",\n  "seeds": [0,]\n}\n')
    with pytest.raises(SpecError, match=r"bad.json: not valid JSON at line 3, column 15"):
        load_spec(path)


def test_validate_on_a_directory_says_so(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"{tmp_path}: is a directory, expected a spec file (.yaml or .json)"


def test_relative_store_is_taken_from_the_spec_folder(tmp_path, monkeypatch):
    import yaml
    folder = tmp_path / "project" / "specs"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    (folder / "rel.yaml").write_text(yaml.safe_dump(with_(store="../runs")))
    (folder / "abs.yaml").write_text(yaml.safe_dump(with_(store=str(tmp_path / "elsewhere"))))
    (folder / "s3.yaml").write_text(yaml.safe_dump(with_(store="s3://bucket/prefix")))
    (folder / "none.yaml").write_text(yaml.safe_dump(BASE))
    assert load_spec("project/specs/rel.yaml").store == "project/runs"
    assert load_spec(folder / "rel.yaml").store == str(tmp_path / "project" / "runs")
    assert load_spec(folder / "abs.yaml").store == str(tmp_path / "elsewhere")
    assert load_spec(folder / "s3.yaml").store == "s3://bucket/prefix"
    assert load_spec(folder / "none.yaml").store == "./ticketsweep-store"  # the working directory's
    assert parse_spec(with_(store="runs")).store == "runs"  # no file, no folder to resolve from


def test_explain_lists_allowed_values_and_never_says_default_twice():
    from orchestrator.spec.sweep_spec import describe
    text = describe()
    lines = {line.split(":")[0].strip(): line for line in text.splitlines()}
    assert "[allowed: the criteria listed by validate --explain] (required)" in lines["criterion"]
    assert "[allowed: init, rewind, trained] (default 'rewind')" in lines["score_at"]
    assert "[allowed: reverse_kl, forward_kl, cross_entropy]" in lines["objective"]
    assert "[allowed: long, short, or a number]" in lines["search"]
    checks = [line for line in text.splitlines() if line.strip().startswith("sanity_checks:")]
    assert "[allowed: shuffle, reinit, invert]" in checks[0]   # ltr's
    assert "[allowed: shuffle, reinit] " in checks[-1]          # bip's: it cannot invert its mask
    assert "[allowed: sgd, adam] (default 'sgd')" in lines["training.optimizer"]
    assert lines["prune_output"] == "prune_output: prune the output layer (default: per model)"
    assert "spec file's folder" in lines["store"]
    for line in text.splitlines():
        assert line.count("default") <= 1, line


def test_explain_lists_every_registered_model_dataset_and_criterion_with_their_options(tmp_path):
    import yaml
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    result = CliRunner().invoke(main, ["validate", str(path), "--explain", "--skip-data"])
    assert result.exit_code == 0, result.output
    registered = result.output[result.output.index("\nmodels (model.name"):].splitlines()[1:]
    described = [(get_model_descriptor(n), "  ") for n in model_names()] + \
                [(get_dataset_descriptor(n), "  ") for n in dataset_names()]
    for descriptor, indent in described:
        at = registered.index(next(line for line in registered if line.startswith(f"{indent}{descriptor.name}: ")))
        options = [line.split(":")[0].strip() for line in registered[at + 1:at + 1 + len(descriptor.options.model_fields)]]
        assert options == list(descriptor.options.model_fields), descriptor.name
    assert [line.split(":")[0].strip() for line in registered if line.startswith("  ")][-len(CRITERIA):] == list(CRITERIA)


@pytest.mark.parametrize("name", [".", "..", "--help", "-x", "a" * 101, "a b", "über"])
def test_names_the_store_and_the_lease_cannot_hold_are_refused(name):
    with pytest.raises(SpecError, match="name"):
        parse_spec(with_(name=name))
    assert parse_spec(with_(name="a" * 100)).name == "a" * 100


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))


@pytest.mark.parametrize("where", ["name", "dataset.options", "model.options"])
def test_a_yaml_alias_bomb_is_refused_at_once_on_one_line(tmp_path, where):
    """10^9 values in 9 lines: refused from the composed graph, before anything expands it."""
    import time
    import yaml
    spec = yaml.safe_dump(BASE)
    value = "*i"
    target = {"name": f"name: {value}\n", "dataset.options": f"dataset: {{name: synthetic, options: {{x: {value}}}}}\n",
              "model.options": f"model: {{name: mlp, options: {{hidden: {value}}}}}\n"}[where]
    kept = [line for line in spec.splitlines(keepends=True) if not line.startswith(where.split(".")[0] + ":")]
    path = tmp_path / "bomb.yaml"
    path.write_text("junk:\n" + "".join("  " + line for line in BOMB.splitlines(keepends=True)) + target + "".join(
        line for line in kept if not line.startswith(("  name:", "  options:"))))
    t0 = time.process_time()
    result = CliRunner().invoke(main, ["validate", str(path), "--skip-data"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "aliases expand" in result.output
    assert time.process_time() - t0 < 30  # a bound on runaway work, not a speed target


def test_junk_keys_give_a_handful_of_lines(tmp_path):
    path = tmp_path / "junk.yaml"
    import yaml
    path.write_text(yaml.safe_dump({**BASE, **{f"junk{i}": i for i in range(20000)}}))
    result = CliRunner().invoke(main, ["validate", str(path), "--skip-data"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) <= 8 and "more problems" in lines[-1]


def test_a_huge_spec_file_is_refused_without_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * (2 << 20) + "\n")
    result = CliRunner().invoke(main, ["validate", str(path), "--skip-data"])
    assert result.exit_code == 2 and "too large for a spec" in result.output


def test_the_tune_example_that_validate_explain_prints_validates_for_every_method_kind(tmp_path):
    """The example search space in `validate --explain` must be one every method accepts as written."""
    import re

    import yaml
    from workers.methods import CONFIGS

    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    result = CliRunner().invoke(main, ["validate", str(path), "--explain", "--skip-data"])
    assert result.exit_code == 0, result.output
    examples = set(re.findall(r"tune: .*?e\.g\. (\{.*?\}\});", result.output))
    assert len(examples) == 1, examples
    space = yaml.safe_load(examples.pop())
    kinds = [c.model_fields["kind"].annotation.__args__[0] for c in CONFIGS]
    assert len(kinds) >= 8
    for kind in kinds:
        method = {"kind": kind, **({"criterion": "magnitude"} if kind == "oneshot" else {}), "tune": space}
        spec = parse_spec(with_(methods=[method], tuning={"configurations": 2, "sparsities": [0.5]}))
        assert spec.methods[0].tune, kind
