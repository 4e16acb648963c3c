import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.spec import SpecError, load_spec, parse_spec

BASE = {
    "name": "t",
    "model": {"name": "mlp"},
    "dataset": {"name": "synthetic"},
    "training": {"epochs": 4, "rewind": "1ep"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.9],
    "seeds": [0],
}


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
    (with_(methods=[{"kind": "prune_everything"}]), "unknown method kind 'prune_everything'; known: ltr, oneshot, cts"),
    (with_(methods=[{"kind": "oneshot", "criterion": "magic"}]), "methods.0.criterion"),
    (with_(methods=[{"kind": "ltr", "extra": 1}]), "methods.0.extra: unknown key"),
    (with_(sparsities=[0.5, 1.5]), "sparsities"),
    (with_(training={"epochs": 4, "rewind": "5 bananas"}), "training.rewind"),
    (with_(training={"epochs": 4, "rewind": "9ep"}), "training"),
    (with_(model={"name": "transformer"}), "model.name: unknown model 'transformer'"),
    (with_(methods=[{"kind": "ltr"}, {"kind": "ltr"}]), "methods listed twice: ltr"),
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
