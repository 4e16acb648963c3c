"""The store never follows a symbolic link: a link to a directory outside the store, and a link in place of one of
its files, are named by `status` as links, left alone by `compact` and `clean`, and moved to quarantine as links by
`submit`; what they point to is never listed, read, moved, deleted or written. Real CLI processes on a store made
by a real `submit`."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.store.results_store import ResultsStore
from tests.helpers.store_cli import SPEC, finished_store, orchestrate, points_frame, status, submit

pytestmark = pytest.mark.slow  # a sweep made by a real `submit`, and the real CLI in subprocesses

SWEEP = SPEC["name"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_address) -> Path:
    return finished_store(tmp_path_factory, ray_address)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below a folder (not following links): its bytes and modification time."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath) / name
            out[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


@pytest.fixture
def linked(finished, tmp_path):
    """A copy of the store with two links: `method=evil`, a directory link to a folder outside the store holding
    copies of two real view files, a note and an old temporary; and one real view file replaced by a link to a
    copy of it outside the store. Returns (store, outside folder, the two links, points before the links)."""
    store = tmp_path / "store"
    shutil.copytree(finished, store)
    before = points_frame(store)
    views = sorted((store / "points" / f"sweep={SWEEP}" / "method=random").glob("*.parquet"))
    outside = tmp_path / "outside"
    outside.mkdir()
    for view in views[:2]:
        shutil.copy(view, outside / view.name)
    (outside / "notes.txt").write_text("a user's own file")
    old = outside / f".{views[0].name}.0123abcd.tmp"
    old.write_bytes(b"an old temporary of someone else's")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    replaced = sorted((store / "points" / f"sweep={SWEEP}" / "method=ltr").glob("*.parquet"))[0]
    shutil.copy(replaced, outside / "copied.parquet")
    dir_link = store / "points" / f"sweep={SWEEP}" / "method=evil"
    dir_link.symlink_to(outside, target_is_directory=True)
    file_link = replaced
    file_link.unlink()
    file_link.symlink_to(outside / "copied.parquet")
    return store, outside, (dir_link, file_link), before


def test_status_names_each_link_as_a_link_and_lists_nothing_through_it(linked, tmp_path):
    store, outside, links, _ = linked
    kept = snapshot(outside)
    shown = status(tmp_path, store)
    lines = [x for x in shown.stdout.splitlines() if "problem:" in x]
    for link in links:
        assert sum(f" {link} (a symbolic link to {os.readlink(link)}" in x for x in lines) == 1, shown.stdout
    assert str(outside) not in "".join(x for x in lines if "symbolic link" not in x), shown.stdout
    assert snapshot(outside) == kept


def test_submit_quarantines_the_links_themselves_and_never_touches_their_targets(linked, tmp_path):
    store, outside, links, before = linked
    kept = snapshot(outside)
    targets = [os.readlink(link) for link in links]
    out = submit(tmp_path, store)
    assert out.returncode == 0 and "0 stage(s) ran" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    for link, target in zip(links, targets):
        assert not link.is_symlink()  # gone (the replaced view is re-made in its place as a file of the store's)
        (moved,) = [p for p in (store / "quarantine").glob(f"*/{link.relative_to(store)}")]
        assert moved.is_symlink() and os.readlink(moved) == target  # the link itself, as it was
    assert snapshot(outside) == kept
    # the view the link stood in for is re-made from its commit: the store reads as it did before
    pd.testing.assert_frame_equal(points_frame(store), before)
    assert "problem" not in status(tmp_path, store).stdout


def test_compact_merges_nothing_through_a_link_and_writes_nothing_outside(linked, tmp_path):
    store, outside, links, _ = linked
    kept = snapshot(outside)
    api = ResultsStore(str(store))
    reads_before = api.read("points", SWEEP).sort_values("stage_key").reset_index(drop=True)
    out = orchestrate("compact", "--store", str(store), "--sweep", SWEEP)
    assert out.returncode == 0, out.stderr[-3000:]
    assert snapshot(outside) == kept
    assert all(link.is_symlink() for link in links)  # left where they are: only submit moves what is foreign
    after = api.read("points", SWEEP).sort_values("stage_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(after, reads_before)


def test_clean_deletes_no_temporary_through_a_link(linked, tmp_path):
    store, outside, links, _ = linked
    kept = snapshot(outside)
    out = orchestrate("clean", "--store", str(store))
    assert out.returncode == 0 and "0 temporary file(s) deleted" in out.stdout, out.stdout + out.stderr
    assert snapshot(outside) == kept
    assert all(link.is_symlink() for link in links)


def test_nothing_is_written_through_a_linked_store_directory(finished, tmp_path):
    """A link where the store writes (its leases directory): submit refuses in one line naming it, writes nothing
    through it."""
    store = tmp_path / "store"
    shutil.copytree(finished, store)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(store / "leases", ignore_errors=True)
    (store / "leases").symlink_to(outside, target_is_directory=True)
    out = submit(tmp_path, store)
    assert out.returncode != 0 and "leases is a symbolic link" in out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert list(outside.iterdir()) == []
