"""The store's commit protocol, reads and compaction, on local disk (tests/store/test_store_s3.py: object storage)."""
import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator.store import health
from orchestrator.store.files import StoreError
from orchestrator.store.results_store import ResultsStore

POINT = {"method": "ltr", "seed": 0, "target_sparsity": 0.5, "sparsity": 0.5, "test_accuracy": 0.9, "status": "ok"}
STAGE = {"kind": "imp_level", "label": "ltr s=0 L=1", "seed": 0, "parents": "{}", "seconds": 1.5, "status": "ok"}
CURVE = [{"seed": 0, "phase": "train", "epoch": 1.0, "iteration": 4}, {"seed": 0, "phase": "train", "epoch": 2.0}]


def commit(store, key, attempt=1, status="ok", sweep="sw"):
    return store.commit(sweep, key, attempt, {**STAGE, "status": status}, [{**POINT, "status": status}], CURVE,
                        log=f"log of {key}")


def test_commit_then_views_readable_by_pandas_and_the_store(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    commit(store, "k1", 1, "failed")
    commit(store, "k1", 2)
    points = pd.read_parquet(tmp_path / "s" / "points")
    assert sorted(points["attempt"]) == [1, 2]
    assert set(points["method"].astype(str)) == {"ltr"} and set(points["sweep"].astype(str)) == {"sw"}
    assert store.done_keys("sw") == {"k1"}
    assert len(store.read("points", "sw")) == 2
    curves = store.read("curves", "sw")
    assert len(curves) == 4 and set(curves["seed"]) == {0}
    assert (tmp_path / "s" / "logs" / "sweep=sw" / "k1-2.log").read_text() == "log of k1"
    # nothing is ever overwritten: every attempt has its own files
    assert len(list((tmp_path / "s" / "stages").rglob("*.parquet"))) == 2


def test_unknown_columns_are_rejected(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    with pytest.raises(ValueError, match="not in the store schema"):
        store.commit("sw", "k1", 1, STAGE, [{**POINT, "accuracy_typo": 1.0}], [])


def test_reader_reports_corrupt_files_and_goes_on(tmp_path, capsys):
    store = ResultsStore(str(tmp_path / "s"))
    commit(store, "k1")
    bad = tmp_path / "s" / "points" / "sweep=sw" / "method=ltr" / "k2-1-abc.parquet"
    bad.write_bytes(b"not parquet at all")
    frame = store.read("points")
    assert len(frame) == 1
    assert "k2-1-abc.parquet" in capsys.readouterr().err


def test_store_location_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(StoreError, match=str(f)):
        ResultsStore(str(f))


def test_temporary_files_are_invisible_to_readers(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    commit(store, "k1")
    leftovers = [p for p in (tmp_path / "s").rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    (tmp_path / "s" / "points" / "sweep=sw" / "method=ltr" / ".half.parquet.123.tmp").write_bytes(b"PAR1")
    assert len(pd.read_parquet(tmp_path / "s" / "points")) == 1
    assert len(store.temporaries()) == 1


def test_missing_views_are_remade_from_the_commit(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    name = commit(store, "k1")
    view = tmp_path / "s" / "points" / "sweep=sw" / "method=ltr" / f"{name}.parquet"
    original = pq.read_table(view).to_pylist()
    view.unlink()
    (tmp_path / "s" / "curves" / "sweep=sw" / f"{name}.parquet").unlink()
    state = health.inspect(store, None, "sw")
    assert state.unmaterialized == {name} and state.done == {"k1"}
    health.repair(store, state, echo=lambda *_: None)
    assert pq.read_table(view).to_pylist() == original
    assert len(store.read("curves", "sw")) == 2
    assert not health.inspect(store, None, "sw").needs_repair


def test_views_without_a_commit_are_invisible_to_the_store_and_quarantined(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    name = commit(store, "k1")
    commit_file = tmp_path / "s" / "stages" / "sweep=sw" / f"{name}.parquet"
    commit_file.write_bytes(commit_file.read_bytes()[:40])  # truncated commit
    assert store.read("points", "sw").empty  # its view rows are no longer committed
    state = health.inspect(store, None, "sw")
    assert [p for p, _ in state.unreadable] == [str(commit_file)]
    assert len(state.orphans) == 2 and "k1" not in state.done
    messages = []
    health.repair(store, state, echo=messages.append)
    assert len(messages) == 3 and all("quarantined" in m for m in messages)
    assert not list((tmp_path / "s" / "points").rglob("*.parquet"))
    assert len(list((tmp_path / "s" / "quarantine").rglob("*.parquet"))) == 3  # moved aside, never deleted


def test_compaction_keeps_every_row_and_readers_never_see_duplicates(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    for i in range(6):
        commit(store, f"k{i}", 1, "failed" if i == 0 else "ok")
    before = store.read("points", "sw").sort_values("stage_key").reset_index(drop=True)
    merged = store.compact("sw")
    assert sum(n for n, _ in merged.values()) == 6 + 6 + 6
    assert len(list((tmp_path / "s" / "points").rglob("*.parquet"))) == 1
    after = store.read("points", "sw").sort_values("stage_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert len(pd.read_parquet(tmp_path / "s" / "points")) == 6
    assert len(store.read("curves", "sw")) == 12
    state = health.inspect(store, None, "sw")
    assert not state.needs_repair and state.done == {f"k{i}" for i in range(1, 6)}
    # new commits after compaction, then compaction again: still one row per attempt
    commit(store, "k0", 2)
    store.compact("sw")
    assert len(store.read("points", "sw")) == 7 and store.done_keys("sw") == {f"k{i}" for i in range(6)}


def test_compacted_and_source_files_side_by_side_read_once(tmp_path):
    """The moment between writing a compacted file and deleting its sources: no duplicate rows."""
    store = ResultsStore(str(tmp_path / "s"))
    for i in range(3):
        commit(store, f"k{i}")
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(tmp_path / "s" / "points", copy)
    store.compact("sw")
    for f in copy.rglob("*.parquet"):  # put the sources back beside the compacted file
        target = tmp_path / "s" / "points" / f.relative_to(copy)
        target.write_bytes(f.read_bytes())
    assert len(store.read("points", "sw")) == 3
    assert not health.inspect(store, None, "sw").orphans


def test_store_io_errors_are_one_line_store_errors(tmp_path):
    root = tmp_path / "s"
    store = ResultsStore(str(root))
    commit(store, "k1")
    (root / "stages" / "sweep=blocked").write_text("a file where a directory must go")
    with pytest.raises(StoreError, match=r"cannot write .*sweep=blocked") as info:
        commit(store, "k2", sweep="blocked")
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.slow
def test_compaction_in_another_process_while_a_reader_loops(tmp_path):
    """A real `orchestrate compact` process replaces files while this process keeps reading: every read sees
    every row exactly once."""
    import subprocess
    import sys

    store = ResultsStore(str(tmp_path / "s"))
    n = 150
    for i in range(n):
        commit(store, f"k{i:03d}")
    compactor = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "compact", "--store",
                                  str(tmp_path / "s"), "--sweep", "sw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reads = []
    while compactor.poll() is None or len(reads) < 3:
        points = store.read("points", "sw")
        curves = store.read("curves", "sw")
        reads.append((len(points), points["stage_key"].nunique(), len(curves)))
    out, err = compactor.communicate()
    assert compactor.returncode == 0, err
    assert set(reads) == {(n, n, 2 * n)}, set(reads)
    assert len(list((tmp_path / "s" / "points").rglob("*.parquet"))) == 1


def test_a_second_compaction_merges_only_what_was_added_since_the_first(tmp_path):
    """Its cost follows the files added since the last compaction: the compacted files are left as they are."""
    store = ResultsStore(str(tmp_path / "s"))
    for i in range(5):
        commit(store, f"k{i}")
    store.compact("sw")
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "s").rglob("compacted-*.parquet")}
    assert len(first) == 3  # stages, points of the one method, curves
    for i in range(5, 8):
        commit(store, f"k{i}")
    merged = store.compact("sw")
    assert sum(n for n, _ in merged.values()) == 3 * 3  # the 3 new commits' files, not the 3 compacted ones
    assert {p: p.stat().st_mtime_ns for p in first if p.exists()} == first  # untouched
    assert len(list((tmp_path / "s").rglob("compacted-*.parquet"))) == 6
    assert sorted(store.read("points", "sw")["stage_key"]) == [f"k{i}" for i in range(8)]
    assert len(store.read("curves", "sw")) == 16 and store.done_keys("sw") == {f"k{i}" for i in range(8)}


def test_compaction_merges_in_batches(tmp_path, monkeypatch):
    import orchestrator.store.compaction as store_mod

    monkeypatch.setattr(store_mod, "COMPACT_BATCH", 4)
    store = ResultsStore(str(tmp_path / "s"))
    for i in range(10):
        commit(store, f"k{i}")
    merged = store.compact("sw")
    assert merged["points/sweep=sw/method=ltr"] == (10, 3)  # 4 + 4 + 2 files
    assert len(store.read("points", "sw")) == 10 and len(store.read("curves", "sw")) == 20
    assert store.done_keys("sw") == {f"k{i}" for i in range(10)}
