import pandas as pd
import pytest

from orchestrator.store import ResultsStore, StoreError

POINT = {"method": "ltr", "seed": 0, "target_sparsity": 0.5, "sparsity": 0.5, "test_accuracy": 0.9, "status": "ok"}
STAGE = {"kind": "imp_level", "label": "ltr s=0 L=1", "seed": 0, "parents": "{}", "seconds": 1.5, "status": "ok"}


def test_write_read_and_attempts_never_overwrite(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    store.write_stage("sw", "k1", 1, {**STAGE, "status": "failed"}, [{**POINT, "status": "failed"}], [])
    store.write_stage("sw", "k1", 2, STAGE, [POINT], [{"seed": 0, "epoch": 1.0, "iteration": 4}])
    points = pd.read_parquet(tmp_path / "s" / "points")
    assert sorted(points["attempt"]) == [1, 2]
    assert set(points["method"].astype(str)) == {"ltr"} and set(points["sweep"].astype(str)) == {"sw"}
    assert store.done_keys("sw") == {"k1"}
    with pytest.raises(StoreError, match="refusing to overwrite"):
        store.write_stage("sw", "k1", 2, STAGE, [POINT], [])


def test_unknown_columns_are_rejected(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    with pytest.raises(ValueError, match="not in the store schema"):
        store.write_stage("sw", "k1", 1, STAGE, [{**POINT, "accuracy_typo": 1.0}], [])


def test_reader_reports_corrupt_files_and_goes_on(tmp_path, capsys):
    store = ResultsStore(str(tmp_path / "s"))
    store.write_stage("sw", "k1", 1, STAGE, [POINT], [])
    bad = tmp_path / "s" / "points" / "sweep=sw" / "method=ltr" / "k2-1.parquet"
    bad.write_bytes(b"not parquet at all")
    frame = store.read("points")
    assert len(frame) == 1
    assert "k2-1.parquet" in capsys.readouterr().err


def test_store_location_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(StoreError, match=str(f)):
        ResultsStore(str(f))


def test_temporary_files_are_invisible_to_readers(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    store.write_stage("sw", "k1", 1, STAGE, [POINT], [])
    leftovers = [p for p in (tmp_path / "s").rglob("*") if p.name.startswith(".")]
    assert leftovers == []
