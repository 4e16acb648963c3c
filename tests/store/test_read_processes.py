"""Large local reads in worker processes give exactly what the caller's own reads give, damaged and foreign
files included, and a worker that dies costs nothing but the time."""
import subprocess
import sys

import pandas as pd
import pytest

from orchestrator.store import read_processes
from orchestrator.store.results_store import ResultsStore

pytestmark = pytest.mark.slow  # reads in worker processes

POINT = {"method": "ltr", "seed": 0, "target_sparsity": 0.5, "sparsity": 0.5, "test_accuracy": 0.9, "status": "ok"}
STAGE = {"kind": "imp_level", "label": "ltr", "seed": 0, "parents": "{}", "seconds": 1.5, "status": "ok"}


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    for i in range(40):
        store.commit("sw", f"k{i}", 1, {**STAGE, "seed": i}, [{**POINT, "seed": i, "test_accuracy": i / 40}],
                     [{"seed": i, "phase": "train", "epoch": 1.0}])
    views = tmp_path / "s" / "points" / "sweep=sw" / "method=ltr"
    (views / "k3-2-00000000000d.parquet").write_bytes(b"PAR1 truncated")  # a damaged view file
    # a sound Parquet file of another attempt under this attempt's name: foreign
    (views / "k4-2-00000000000f.parquet").write_bytes(next(views.glob("k5-1-*.parquet")).read_bytes())
    commit6 = next((tmp_path / "s" / "stages" / "sweep=sw").glob("k6-1-*.parquet"))
    commit6.write_bytes(commit6.read_bytes()[:10])  # a damaged commit: its point is no longer committed
    return store


def _everything(store):
    scan = store.scan("points", "sw")
    log = store.committed("sw")
    view = store.view_names("points", "sw")
    return (scan.table.sort_by("seed").to_pylist(), sorted(scan.bad), sorted(scan.foreign),
            log.table.sort_by("stage_key").to_pylist(), sorted(log.bad), sorted(log.foreign),
            sorted(view.names), sorted(view.bad), sorted(view.foreign),
            store.read("points", "sw", warn=False).sort_values("seed").reset_index(drop=True))


def test_reads_in_worker_processes_equal_the_callers_own(store, monkeypatch):
    monkeypatch.setattr(read_processes, "MIN_FILES", 10 ** 9)
    alone = _everything(store)
    used = []
    real = read_processes.map_chunks

    def counted(*args):
        out = real(*args)
        used.append(out is not None)
        return out

    monkeypatch.setattr(read_processes, "MIN_FILES", 1)
    monkeypatch.setattr(read_processes, "workers", lambda: 2)
    monkeypatch.setattr(read_processes, "map_chunks", counted)
    both = _everything(store)
    assert both[:9] == alone[:9]
    pd.testing.assert_frame_equal(both[9], alone[9])
    assert used and all(used)  # the workers did the reading
    # what the comparison covers: good rows, a damaged and a foreign view file, a damaged commit
    scanned, bad, foreign, log_bad, frame = alone[0], alone[1], alone[2], alone[4], alone[9]
    assert sorted(p["seed"] for p in scanned) == list(range(40))
    assert [path.rsplit("/", 1)[1] for path, _ in bad] == ["k3-2-00000000000d.parquet"]
    assert [path.rsplit("/", 1)[1] for path, _ in foreign] == ["k4-2-00000000000f.parquet"]
    assert [path.rsplit("/", 1)[1].split("-")[0] for path, _ in log_bad] == ["k6"]
    assert sorted(frame["seed"]) == sorted(set(range(40)) - {6})


def test_a_worker_that_dies_leaves_the_reading_to_the_caller(store, monkeypatch):
    paths = [f.path for f in store.list_files("points", "sw")]
    chunks = [paths[:5], paths[5:]]
    assert [len(c) for c in read_processes.map_chunks("footers", store.root, ("points",), chunks)] == [5, len(paths) - 5]
    alone = store.view_names("points", "sw")
    # a worker killed mid-read, as the OOM killer would
    monkeypatch.setattr(read_processes, "WORKER", [sys.executable, "-c", "import os, sys; sys.stdin.read(); os._exit(9)"])
    assert read_processes.map_chunks("footers", store.root, ("points",), chunks) is None
    # the store then reads the files itself, with the same answer
    monkeypatch.setattr(read_processes, "MIN_FILES", 1)
    monkeypatch.setattr(read_processes, "workers", lambda: 2)
    again = store.view_names("points", "sw")
    assert (again.names, again.bad, again.foreign) == (alone.names, alone.bad, alone.foreign)
    assert len(alone.names) == len(paths) - 1  # the damaged file is not among them


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(store, tmp_path):
    """multiprocessing's spawn and forkserver re-run the caller's main script in every worker."""
    script = tmp_path / "unguarded.py"
    marker = tmp_path / "runs"
    script.write_text(f"""
from orchestrator.store import read_processes
from orchestrator.store.results_store import ResultsStore
read_processes.MIN_FILES, read_processes.workers = 1, lambda: 2
with open({str(marker)!r}, "a") as f:
    f.write("run\\n")
print(len(ResultsStore({store.root!r}).scan("points", "sw").table))
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "40" and marker.read_text() == "run\n"
