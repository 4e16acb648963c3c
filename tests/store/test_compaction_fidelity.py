"""A compacted store reads exactly as it did before compaction: every table, every column, every row, through the
store's API, through the README's raw pandas reads and through `orchestrate tuning`. On a real tuned sweep made
by a real `submit`, compacted by a real `orchestrate compact`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator.store.results_store import ResultsStore
from orchestrator.store.schemas import ROW_IDENTITY
from tests.helpers.store_cli import orchestrate, submit, write_spec

pytestmark = pytest.mark.slow  # a tuned sweep made by a real `submit`

SPEC = {
    "name": "kept",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 128, "n_test": 32}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "1it"},
    # Two tuned methods: two tune stages, so the tuning table has files to merge.
    "methods": [{"kind": "oneshot", "criterion": "magnitude", "tune": {"training.lr": {"loguniform": [0.01, 0.3]}}},
                {"kind": "oneshot", "criterion": "random", "tune": {"training.lr": {"loguniform": [0.01, 0.3]}}},
                {"kind": "ltr"}],
    "sparsities": [0.5, 0.8],
    "seeds": [0],
    "tuning": {"configurations": 2, "grace_period": 1, "reduction_factor": 2, "sparsities": [0.8]},
    # One trial actor: each is a process of its own (importing torch), which costs these tiny stages more than
    # running two at once gains them.
    "resources": {"max_concurrent": 1},
}
TABLES = ("stages", "points", "curves", "tuning", "plans")
# The commit's payload, lists of records: compared as Arrow gives them, since pandas turns a nested integer field
# into floats in any chunk where it has a null, and compaction makes one chunk of many files.
NESTED = ("points", "curve", "trials")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, ray_address) -> Path:
    """Made on the test session's cluster: how a cluster starts is not what this file tests."""
    folder = tmp_path_factory.mktemp("tuned")
    out = submit(folder, folder / "store", SPEC, address=ray_address)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return folder / "store"


def raw(path: Path) -> pd.DataFrame:
    """`pd.read_parquet(path)`, with the nested columns as the text of their exact values."""
    frame = pd.read_parquet(path)
    nested = [c for c in NESTED if c in frame]
    if nested:
        table = pq.read_table(path, columns=nested)
        for column in nested:
            frame[column] = [json.dumps(v, default=str) for v in table.column(column).to_pylist()]
    return frame


def canonical(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values([k for k in keys if k in frame]).reset_index(drop=True)


def identity(table: str) -> list[str]:
    return ["sweep", "stage_key"] + ROW_IDENTITY.get(table, ["stage_key"])[1:]


def reads(store: Path) -> dict[str, pd.DataFrame]:
    """Every table as a raw pandas read (as the README tells users to read it) and as the store reads it."""
    out = {}
    api = ResultsStore(str(store))
    for table in TABLES:
        out[f"raw {table}"] = canonical(raw(store / table), identity(table))
        if table != "plans":
            out[f"store {table}"] = canonical(api.read(table, SPEC["name"]), identity(table))
    return out


def test_a_compacted_store_reads_exactly_as_before(tuned, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tuned, store)
    spec = write_spec(tmp_path, SPEC)
    before = reads(store)
    tuning_before = orchestrate("tuning", spec, "--store", str(store), "--format", "json")
    assert tuning_before.returncode == 0, tuning_before.stderr[-2000:]
    assert len(json.loads(tuning_before.stdout)) == 2  # both tuned methods

    out = orchestrate("compact", spec, "--store", str(store))
    assert out.returncode == 0, out.stderr[-2000:]
    for table in ("stages", "points", "curves", "tuning"):  # something of every table was merged
        assert list((store / table).rglob("compacted-*.parquet")), table
        assert not [f for f in (store / table).rglob("*.parquet") if not f.name.startswith("compacted-")], table

    after = reads(store)
    assert "method" in after["raw stages"] and "method" in after["raw curves"] and "method" in after["raw tuning"]
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame, obj=name)
    tuning_after = orchestrate("tuning", spec, "--store", str(store), "--format", "json")
    assert tuning_after.returncode == 0 and tuning_after.stdout == tuning_before.stdout, tuning_after.stderr[-2000:]
    resubmitted = submit(tmp_path, store, SPEC)
    assert resubmitted.returncode == 0 and "0 stage(s) ran" in resubmitted.stdout, resubmitted.stdout[-2000:]


def test_a_store_compacted_by_the_old_rule_reads_its_methods_back_from_the_plans(tuned, tmp_path, monkeypatch):
    """Compaction before 8893e81 dropped `method` from every table it merged, though only points hold it in a
    directory name: such a store must still read every stage's, curve's and tuning row's method."""
    from orchestrator.store import compaction

    store = tmp_path / "store"
    shutil.copytree(tuned, store)
    before = reads(store)
    monkeypatch.setattr(compaction, "PARTITIONS", {t: ("sweep", "method") for t in ("stages", "points", "curves",
                                                                                    "tuning")})
    ResultsStore(str(store)).compact(SPEC["name"])
    monkeypatch.undo()
    for table in ("stages", "curves", "tuning"):
        merged = list((store / table).rglob("compacted-*.parquet"))
        assert merged and all("method" not in pq.read_schema(f).names for f in merged), table  # the old files
        after = canonical(ResultsStore(str(store)).read(table, SPEC["name"]), identity(table))
        pd.testing.assert_frame_equal(after, before[f"store {table}"], obj=table)
