"""Compaction: a sweep's small files merged into a few large ones, and a compaction interrupted earlier
finished, without a reader ever seeing a gap or a duplicate.

A compacted file is written (atomically) before the files it replaces are deleted, and its footer lists their
names (`SOURCES_KEY`); readers deduplicate rows by identity and skip a file a compacted file beside it lists.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

import pyarrow as pa

from orchestrator.store.file_checks import Footer
from orchestrator.store.files import StoreError, one_line
from orchestrator.store.layout import COMPACTED_PREFIX, file_name
from orchestrator.store.scans import StoreReader, dedup, only_committed
from orchestrator.store.schemas import PARTITIONS, ROW_IDENTITY, SOURCES_KEY

COMPACT_BATCH = 1000  # files merged into one compacted file: bounds compaction's memory, keeps reads to few files


# Test-only fault injection (tests/store/test_store_faults.py), never set otherwise: with
# TICKETSWEEP_TEST_COMPACT_EXIT="written:N" (or "deleted:N") compaction ends its process at once with
# os._exit(9), as kill -9 would, right after it has written its N-th compacted file (deleted its N-th merged file).
COMPACT_FAULT_ENV = "TICKETSWEEP_TEST_COMPACT_EXIT"


@dataclass
class _CompactFault:
    event: str = ""
    at: int = 0
    seen: int = 0

    @classmethod
    def from_env(cls) -> "_CompactFault":
        event, _, n = os.environ.get(COMPACT_FAULT_ENV, "").partition(":")
        return cls(event, int(n)) if n.isdigit() else cls()

    def step(self, event: str) -> None:
        if event == self.event:
            self.seen += 1
            if self.seen == self.at:
                os._exit(9)


class Compactor(StoreReader):
    """Compaction of a store's tables (see the module's docstring)."""

    def finish_compaction(self, merged: list[tuple[str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
        """Delete each file an interrupted compaction merged but left, once every row it holds is found in the
        compacted file that lists it. Returns (deleted, kept with the reason)."""
        held: dict[str, set | None] = {}
        deleted, kept = [], []
        for path, holder in merged:
            table = self.rel(path).split("/", 1)[0]
            if holder not in held:
                held[holder] = self._identities(table, holder)
            rows = self._identities(table, path)
            if rows is None or held[holder] is None:
                kept.append((path, f"it or {holder} cannot be read"))
            elif not rows <= held[holder]:
                kept.append((path, f"{len(rows - held[holder])} of its rows are not in {holder}"))
            else:
                self._delete_merged(path)
                deleted.append(path)
        return deleted, kept

    def _identities(self, table: str, path: str) -> set[tuple] | None:
        t, reason, _ = self.read_file(path, table, ROW_IDENTITY[table])
        if t is None:
            return set() if reason == "vanished" else None  # a vanished file was deleted by another finisher
        return set(zip(*(t.column(c).to_pylist() for c in ROW_IDENTITY[table])))

    def _delete_merged(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass  # another process finishing the same compaction deleted it first
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"store {self.location}: cannot delete {path} ({one_line(err)})") from None

    def compact(self, sweep: str) -> dict[str, tuple[int, int]]:
        """Merge a sweep's small files, COMPACT_BATCH at a time, into a few large files per directory.

        Each compacted file is written (atomically) before the files it replaces are deleted, and records
        their names; readers deduplicate rows by identity, so at no moment do they see a gap or a duplicate.
        A compaction interrupted earlier is finished first (`finish_compaction`): merged again into another
        compacted file, its files' rows would stay twice in a raw read. Unreadable and foreign files and view
        rows without a commit are left where they are. Returns {directory: (files merged, files written)}.
        """
        fault = _CompactFault.from_env()
        log = self.committed(sweep, ["stage_key", "attempt"]).table
        out = {}
        for table in ("stages", "points", "curves", "tuning"):
            found, good = self.checked_footers(table, sweep, None)
            deleted, kept = self.finish_compaction(found.merged)
            left_out = set(deleted) | {p for p, _ in kept}
            by_dir: dict[str, list[Footer]] = {}
            for f in good:
                # Only the small files: a compacted file stays as it is, so a compaction costs what was added since
                # the last one, not the whole sweep again (readers open one more file per COMPACT_BATCH commits).
                if f.info.path not in left_out and not f.info.base_name.startswith(COMPACTED_PREFIX):
                    by_dir.setdefault(f.info.path.rsplit("/", 1)[0], []).append(f)
            groups = [(d, footers[i:i + COMPACT_BATCH]) for d, footers in by_dir.items()
                      for i in range(0, len(footers), COMPACT_BATCH)]
            for directory, footers in groups:
                if len(footers) < 2:
                    continue
                s = self.scan(table, sweep, files=[f.info.path for f in footers])
                skipped = {p for p, _ in s.bad + s.foreign}
                # Only what the directory names give: `method` is a column of its own in stages, curves and tuning.
                t = s.table.drop_columns([c for c in PARTITIONS[table] if c in s.table.column_names])
                # A directory holding any uncommitted row is not merged, so nothing uncommitted is ever deleted.
                if table != "stages" and only_committed(t, log).num_rows != t.num_rows:
                    continue
                t = dedup(t, ROW_IDENTITY[table])
                merged = [f for f in footers if f.info.path not in skipped]
                sources = set()
                for f in merged:
                    sources.update(json.loads(f.meta[SOURCES_KEY]) if SOURCES_KEY in f.meta
                                   else [f.info.base_name[:-len(".parquet")]])
                t = t.replace_schema_metadata({SOURCES_KEY: json.dumps(sorted(sources))})
                name = file_name("compacted", table, token=uuid.uuid4().hex[:12])
                self.put_table(f"{directory}/{name}", t, small=False)
                fault.step("written")
                for f in merged:
                    self._delete_merged(f.info.path)
                    fault.step("deleted")
                merged_before, written_before = out.get(self.rel(directory), (0, 0))
                out[self.rel(directory)] = (merged_before + len(merged), written_before + 1)
        return out

