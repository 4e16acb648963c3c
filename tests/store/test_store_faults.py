"""Store faults that must heal, by fault injection on real processes: a damaged artifact, files the store did not
write, a compaction killed at each moment, and a store path below a regular file.

Every case runs the real CLI (`python -m orchestrator.cli submit|status|compact|results`) in subprocesses
against a store made by a real `submit`, damages it on disk, and checks that `status` names the damage and
that `submit` (or `compact`) repairs it without losing or duplicating a row. (The compaction killed at each
moment looks at its many stores with `status` in this process: the kill and the repair stay real processes.)
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.store import artifacts
from orchestrator.store import health
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store.compaction import COMPACT_FAULT_ENV
from orchestrator.store.results_store import ResultsStore
from tests.helpers.store_cli import (SPEC, WIDER, env_without_ray_address, finished_store, orchestrate, points_frame, status,
                                    status_in_process, submit, write_spec)

def one_ok_row_per_point(store: Path, spec: dict) -> None:
    points = points_frame(store)
    assert not points.duplicated(["stage_key", "attempt"]).any()
    ok = points[points["status"] == "ok"].groupby("point_key").size()
    assert len(ok) == len(build_plan(parse_spec(spec)).points()) and (ok == 1).all()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_address) -> Path:
    return finished_store(tmp_path_factory, ray_address)


@pytest.fixture
def store(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "store")
    return tmp_path / "store"


def stage_key(label: str, spec: dict = SPEC) -> str:
    return next(k for k, s in build_plan(parse_spec(spec)).stages.items() if s.label == label)


# --------------------------------------------------------------------------- 1. a damaged artifact

@pytest.mark.slow
@pytest.mark.parametrize("checksum", [True, False], ids=["with-checksum", "stored-before-checksums"])
def test_a_truncated_artifact_is_named_quarantined_and_rebuilt_bit_identically(store, tmp_path, checksum,
                                                                                ray_address):
    warmup = stage_key("warmup s=0")
    artifact = store / "artifacts" / warmup / "outputs.pt"
    original = sha256(artifact)
    if not checksum:  # as a store written before checksums: only the archive's structure can be checked
        for f in (store / "artifacts").rglob("outputs.pt.sha256"):
            f.unlink()
    artifact.write_bytes(artifact.read_bytes()[:10])

    shown = status(tmp_path, store, WIDER)
    line = next(x for x in shown.stdout.splitlines() if "damaged artifact" in x)
    assert str(artifact) in line and warmup[:12] in line and "warmup s=0" in line

    out = submit(tmp_path, store, WIDER, ray_address)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"quarantined damaged artifact {artifact}" in out.stdout
    assert re.search(r"^\[\d+/\d+\] warmup s=0  ok", out.stdout, re.M), out.stdout
    assert sha256(artifact) == original  # the producer ran again, bit for bit
    moved = list((store / "quarantine").rglob(f"artifacts/{warmup}/outputs.pt"))
    assert len(moved) == 1 and moved[0].stat().st_size == 10  # moved aside, never deleted
    one_ok_row_per_point(store, WIDER)
    assert "problem" not in status(tmp_path, store, WIDER).stdout


@pytest.mark.slow
def test_damage_only_a_load_can_see_is_recorded_as_an_artifact_failure_naming_the_file_then_healed(store, tmp_path,
                                                                                                   ray_address):
    warmup = stage_key("warmup s=0")
    artifact = store / "artifacts" / warmup / "outputs.pt"
    original = artifact.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF  # same size, intact zip directory: only the SHA-256 tells
    artifact.write_bytes(bytes(flipped))
    assert "damaged artifact" not in status(tmp_path, store, WIDER).stdout  # the cheap check cannot see it

    found = submit(tmp_path, store, WIDER, ray_address)
    assert found.returncode == 1
    assert f"(artifact): ArtifactDamaged: artifact of stage {warmup} damaged at {artifact}" in found.stderr
    failed = ResultsStore(str(store)).read("stages", "heal").query("status == 'failed'")
    assert len(failed) > 0 and set(failed["error_type"]) == {"artifact"}
    assert all(str(artifact) in e for e in failed["error"])

    line = next(x for x in status(tmp_path, store, WIDER).stdout.splitlines() if "damaged artifact" in x)
    assert str(artifact) in line and "SHA-256" in line
    healed = submit(tmp_path, store, WIDER, ray_address)
    assert healed.returncode == 0, healed.stdout[-3000:] + healed.stderr[-3000:]
    assert artifact.read_bytes() == original
    one_ok_row_per_point(store, WIDER)


@pytest.mark.slow
def test_the_driver_checks_artifacts_without_torch(store):
    artifact = store / "artifacts" / stage_key("warmup s=0") / "outputs.pt"
    artifact.write_bytes(artifact.read_bytes()[:-200])
    code = ("import sys, json\n"
            "from orchestrator.store import health\n"
            "from orchestrator.spec.plan import build_plan\n"
            "from orchestrator.spec.sweep_spec import parse_spec\n"
            "from orchestrator.store.results_store import ResultsStore\n"
            f"spec = parse_spec(json.loads({json.dumps(json.dumps(WIDER))}))\n"
            f"state = health.inspect(ResultsStore({str(store)!r}), build_plan(spec), 'heal')\n"
            "print(json.dumps([[d.path for d in state.damaged_artifacts], 'torch' in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[str(artifact)], False]


def test_loading_a_damaged_artifact_names_the_file_and_is_an_artifact_failure(tmp_path):
    import torch

    from orchestrator.run.trial_actor import classify

    location = str(tmp_path / "s")
    artifacts.save(location, "k1", {"w": torch.arange(4.0)})
    path = tmp_path / "s" / "artifacts" / "k1" / "outputs.pt"
    (path.parent / "outputs.pt.sha256").unlink()  # no checksum: torch.load itself meets the damage
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(artifacts.ArtifactDamaged, match=str(path)) as info:
        artifacts.load(location, "k1")
    assert classify(info.value) == ("failed", "artifact")
    assert artifacts.key_named(f"ArtifactDamaged: {info.value}") == "k1"


# --------------------------------------------------------------------------- 2. files the store did not write

def _foreign_things(store: Path) -> list[Path]:
    """Drop every kind of file the store never writes; returns what `status` must name (directories whole)."""
    sweep = store / "stages" / "sweep=heal"
    commit = next(sweep.glob("*.parquet"))
    unrelated = pa.table({"a": [1, 2], "b": ["x", "y"]})
    made = []

    def parquet(path: Path, table: pa.Table) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        made.append(path)

    def text(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not the store's")
        made.append(path)

    parquet(sweep / "stray.parquet", unrelated)                           # crashed submit and status before
    parquet(store / "points" / "stray.parquet", unrelated)                # poisoned pd.read_parquet(points)
    parquet(store / "points" / "sweep=heal" / "method=random" / "notes.parquet", unrelated)
    parquet(store / "curves" / "sweep=heal" / f"{'0' * 32}-1-abcdef012345.parquet", unrelated)  # well named
    typo = pa.table({"stage_key": ["3" * 32], "attempt": pa.array([1], pa.int32()), "test_accuracy": ["high"]})
    parquet(store / "points" / "sweep=heal" / "method=random" / f"{'3' * 32}-1-abcdef012345.parquet", typo)
    row = pq.read_table(commit)
    null_key = row.set_column(row.column_names.index("stage_key"), "stage_key", pa.array([None], pa.string()))
    parquet(sweep / f"{'1' * 32}-1-abcdef012345.parquet", null_key.replace_schema_metadata(None))
    renamed = sweep / f"{'2' * 32}-1-abcdef012345.parquet"  # a real commit under another attempt's name
    renamed.write_bytes(commit.read_bytes())
    made.append(renamed)
    text(store / "NOTES.txt")
    text(store / "artifacts" / ".DS_Store")
    text(store / "artifacts" / stage_key("init s=0") / "weights.bak")
    text(store / "logs" / "sweep=heal" / "driver.out")
    text(store / "leases" / "heal.json.bak")
    for directory in (store / "notes" / "a", store / "stages" / "sweep=heal" / "old",
                      store / "points" / "sweep=heal" / "method=random" / "sub",
                      store / "points" / "sweep=ghost" / "method=x",
                      store / "artifacts" / stage_key("dense s=0") / "old"):
        (directory / "inside.parquet").parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(unrelated, directory / "inside.parquet")
        top = directory.parent if directory.name in ("a", "method=x") else directory
        made.append(top)
    (store / "curves" / "sweep=heal" / "empty").mkdir()
    made.append(store / "curves" / "sweep=heal" / "empty")
    return made


@pytest.mark.slow
def test_foreign_files_anywhere_are_named_quarantined_and_never_crash(store, tmp_path):
    before = points_frame(store)
    results_before = orchestrate("results", "--store", str(store), "--sweep", "heal").stdout
    foreign = _foreign_things(store)
    contents = {p: p.read_bytes() for p in foreign if p.is_file()}

    shown = status(tmp_path, store)
    named = [x for x in shown.stdout.splitlines() if "problem: foreign" in x]
    for path in foreign:
        assert sum(f" {path} (" in x for x in named) == 1, (path, shown.stdout)
    assert len(named) == len(foreign)
    n = len(build_plan(parse_spec(SPEC)).stages)
    assert f"{n}/{n} stages done" in shown.stdout  # a foreign commit is not counted as one
    listed = orchestrate("results", "--store", str(store), "--sweep", "heal")
    assert listed.returncode == 0 and listed.stdout == results_before, listed.stderr[-2000:]

    out = submit(tmp_path, store)
    assert out.returncode == 0 and "0 stage(s) ran" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert "problem" not in status(tmp_path, store).stdout
    pd.testing.assert_frame_equal(points_frame(store), before)
    for path in foreign:
        assert not path.exists()
        moved = list((store / "quarantine").glob(f"*/{path.relative_to(store)}"))
        assert len(moved) == 1, path  # moved aside, never deleted
        if path in contents:
            assert moved[0].read_bytes() == contents[path]


# --------------------------------------------------------------------------- 3. a compaction killed mid-way

def _compacted_files_written(store: Path, tmp_path: Path) -> int:
    trial = tmp_path / "count"
    shutil.copytree(store, trial)
    assert orchestrate("compact", "--store", str(trial), "--sweep", "heal").returncode == 0
    return len(list(trial.rglob("compacted-*.parquet")))


def raw_tables(store: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for table, keys in (("points", ["stage_key", "attempt"]), ("curves", ["stage_key", "attempt", "phase", "epoch"]),
                        ("stages", ["stage_key", "attempt"])):
        frame = pd.read_parquet(store / table, columns=keys)
        out[table] = frame.sort_values(keys).reset_index(drop=True)
    return out


@pytest.mark.slow
def test_a_compaction_killed_after_each_merged_file_is_named_and_completed(store, tmp_path):
    before = raw_tables(store)
    written = _compacted_files_written(store, tmp_path)
    assert written >= 4  # stages, curves and two method directories of points
    moments = [f"written:{n}" for n in range(1, written + 1)] + ["deleted:3", f"deleted:{len(before['stages']) + 2}"]
    for i, moment in enumerate(moments):
        case = tmp_path / moment.replace(":", "-")
        shutil.copytree(store, case)
        killed = orchestrate("compact", "--store", str(case), "--sweep", "heal",
                             env=env_without_ray_address(**{COMPACT_FAULT_ENV: moment}))
        assert killed.returncode == 9, (moment, killed.stderr[-2000:])
        shown = status_in_process(tmp_path, case)
        assert "problem: interrupted compaction" in shown.stdout, (moment, shown.stdout)
        duplicated = any(t.duplicated().any() for t in raw_tables(case).values())
        assert duplicated  # what a raw read would keep seeing without the repair
        if i % 2 == 0:  # the next submit (nothing to run) completes it, or the next compact does
            repaired = submit(tmp_path, case)
            assert "0 stage(s) ran" in repaired.stdout
        else:
            repaired = orchestrate("compact", "--store", str(case), "--sweep", "heal")
        assert repaired.returncode == 0, (moment, repaired.stderr[-2000:])
        after = raw_tables(case)
        for table in before:
            pd.testing.assert_frame_equal(after[table], before[table], obj=f"{moment} {table}")
        assert "problem" not in status_in_process(tmp_path, case).stdout, moment
        one_ok_row_per_point(case, SPEC)


def test_a_merged_file_is_deleted_only_if_every_row_is_in_the_compacted_file(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    for i in range(3):
        store.commit("sw", f"k{i}", 1, {"kind": "oneshot", "status": "ok"}, [{"method": "m", "status": "ok"}],
                     [{"phase": "train", "epoch": 1.0}])
    curves = tmp_path / "s" / "curves" / "sweep=sw"
    sources = {p: pq.read_table(p) for p in curves.glob("*.parquet")}
    store.compact("sw")
    first, second = sorted(sources)[:2]
    pq.write_table(sources[first], first)  # a file the compaction merged, back beside it: deleted
    grown = pa.concat_tables([sources[second], sources[second].set_column(
        sources[second].column_names.index("epoch"), "epoch", pa.array([2.0]))])
    pq.write_table(grown, second)  # one row more than was merged: kept
    state = health.inspect(store, None, "sw")
    assert sorted(p for p, _ in state.merged) == sorted([str(first), str(second)])
    health.repair(store, state, echo=lambda *_: None)
    assert not first.exists() and second.exists()
    assert len(store.read("curves", "sw")) == 4


# --------------------------------------------------------------------------- 4. a store path below a file

@pytest.mark.slow
@pytest.mark.parametrize("verb", ["submit", "status", "results", "compact"])
def test_a_store_below_a_regular_file_is_bad_input(tmp_path, verb):
    (tmp_path / "plain").write_text("a file, not a directory")
    location = str(tmp_path / "plain" / "store")
    spec = write_spec(tmp_path, SPEC)
    args = {"submit": ["submit", spec], "status": ["status", spec], "results": ["results"],
            "compact": ["compact", spec]}[verb]
    out = orchestrate(*args, "--store", location)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"store {location}: {tmp_path / 'plain'} is a file, expected a directory"
    assert (tmp_path / "plain").read_text() == "a file, not a directory"


# --------------------------------------------------------------------------- 5. a forged compacted file

def _forge(store: Path) -> tuple[Path, Path, bytes]:
    """Beside the real compacted curves file, two files whose footers copy its list of merged files: one named
    like a compacted file (sorting first) holding one of its rows with another value, one named like a view."""
    (real,) = (store / "curves" / "sweep=heal").glob("compacted-*.parquet")
    table = pq.read_table(real)
    sources = table.schema.metadata[b"ticketsweep.sources"]
    row = table.slice(0, 1)
    row = row.set_column(row.column_names.index("train_loss"), "train_loss", pa.array([0.0]))
    forged = real.parent / "compacted-000000000000.parquet"
    pq.write_table(row.replace_schema_metadata({b"ticketsweep.sources": sources}), forged)
    view_named = real.parent / f"{'5' * 32}-1-abcdef012345.parquet"
    pq.write_table(table.slice(1, 1).replace_schema_metadata({b"ticketsweep.sources": sources}), view_named)
    return forged, view_named, sources


@pytest.mark.slow
def test_a_forged_compacted_file_is_never_trusted_and_is_quarantined(store, tmp_path):
    assert orchestrate("compact", "--store", str(store), "--sweep", "heal").returncode == 0
    api = ResultsStore(str(store))
    before = api.read("curves", "heal")
    raw_before = raw_tables(store)["curves"]
    forged, view_named, _ = _forge(store)
    contents = {p: p.read_bytes() for p in (forged, view_named)}

    # Readers skip them (naming them), so the forged value never wins over the real one.
    pd.testing.assert_frame_equal(api.read("curves", "heal", warn=False), before)
    shown = status(tmp_path, store)
    for path in (forged, view_named):
        named = f"problem: foreign (not written by the store): {path} ("
        assert any(named in x for x in shown.stdout.splitlines()), shown.stdout
    assert "merged" in shown.stdout and "interrupted compaction" not in shown.stdout, shown.stdout

    out = submit(tmp_path, store)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "left " not in out.stdout and "interrupted compaction" not in out.stdout, out.stdout
    for path in (forged, view_named):
        assert f"quarantined foreign {path}" in out.stdout
        (moved,) = (store / "quarantine").glob(f"*/{path.relative_to(store)}")
        assert moved.read_bytes() == contents[path]
    pd.testing.assert_frame_equal(raw_tables(store)["curves"], raw_before)  # no duplicate row left
    pd.testing.assert_frame_equal(api.read("curves", "heal"), before)
    assert "problem" not in status(tmp_path, store).stdout
