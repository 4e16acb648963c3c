"""Reading the store: listing a table's files, scanning their rows, the commit log from its footers, views by
their footers, a whole-store walk classified against the layout, and a table as pandas.

Every read checks what it reads (file_checks.py): unreadable files come back as `bad`, files the store did not
write as `foreign`, files a compaction merged but did not delete as `merged`; none of their rows are returned.
A file that vanishes mid-read was merged by compaction into a file the listing may not show, so the read lists
again and starts over.
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.store import read_processes
from orchestrator.store.file_checks import (Footer, commit_summary, foreign_columns, foreign_parquet_schema,
                                            foreign_rows, merged_leftovers)
from orchestrator.store.files import StoreError, StoreFiles, one_line
from orchestrator.store.layout import (COMPACTED_PREFIX, LISTED, TABLE_KINDS, TEMPORARY, FOREIGN, Entry, ancestors,
                                       attempt_name, claimed_sweeps, classify, entry, layout_dir, table_dir)
from orchestrator.store.schemas import (PARTITIONS, PAYLOAD, ROW_IDENTITY, SOURCES_KEY, STAGES, SUMMARY_COLUMNS,
                                        SUMMARY_KEY, TABLES, conform, empty_table, wanted_schema)

if TYPE_CHECKING:  # pandas is imported by read() alone: a driver that only runs a sweep never pays for it
    import pandas as pd

# Reads of many small files. On object storage each GET is latency-bound: threads. On a local disk reading a
# small file is mostly Python and pyarrow holding the GIL, so threads only hand off (a pool of any width read whole
# files slower than a loop; docs/results.md, Scale): whole files are read in a loop, footers in a few threads
# (as fast), and reads of thousands of files in worker processes (read_processes.py).
_READ_THREADS = 16
_LOCAL_FOOTER_THREADS = 4
_SCAN_CHUNK = 512


@dataclass
class ViewFiles:
    """What a view directory holds (see ResultsStore.view_names)."""
    names: set[str]                          # attempts whose rows it holds
    files: list[pafs.FileInfo]               # its readable files of the store's own
    bad: list[tuple[str, str]]
    foreign: list[tuple[str, str]]
    merged: list[tuple[str, str]]            # (file, the compacted file that holds its rows)


@dataclass
class Scan:
    """Rows read from one table; the files that could not be read and those the store did not write
    (path, reason); and files a compaction merged but did not delete (path, the compacted file holding them)."""
    table: pa.Table
    bad: list[tuple[str, str]] = field(default_factory=list)
    foreign: list[tuple[str, str]] = field(default_factory=list)
    merged: list[tuple[str, str]] = field(default_factory=list)


class StoreReader(StoreFiles):
    """The reads of a store (see the module's docstring)."""

    def __post_init__(self):
        super().__post_init__()
        self._claims: dict[str, str | None] = {}  # compacted files checked (`_compacted_claim`)

    def list_files(self, table: str, sweep: str | None = None) -> list[pafs.FileInfo]:
        """The table's Parquet files that the layout names (temporaries and foreign files left out), by path."""
        listed = self.list_dir(table_dir(self.root, table, sweep), recursive=True)
        return sorted((f for f in listed if f.type == pafs.FileType.File
                       and classify(self.rel(f.path), False)[0] in TABLE_KINDS), key=lambda f: f.path)

    def count_small_files(self, table: str, sweep: str) -> int:
        return sum(not f.base_name.startswith(COMPACTED_PREFIX) for f in self.list_files(table, sweep))

    def walk(self, sweep: str | None = None) -> list[Entry]:
        """Every file and directory in the store, classified against LAYOUT, sorted by path.

        Nothing below a foreign directory or in quarantine/ is listed, nor anything through a symbolic link. A
        sweep partition of a view, plan or log directory is foreign when its sweep has neither a commit log
        (stages/sweep=<s>) nor a plan manifest, unless it is `sweep`'s: a sweep's own files are never foreign to
        it (its first submit records its plan before any commit, and may die in between).
        """
        infos = []
        for info in self.list_dir(self.root):
            infos.append(info)
            if info.type == pafs.FileType.Directory and info.base_name in LISTED:
                infos += self.list_dir(info.path, recursive=True)
        entries = [entry(info, self.rel(info.path)) for info in sorted(infos, key=lambda f: f.path)]
        sweeps = claimed_sweeps(entries) | ({sweep} if sweep else set())
        out, foreign_dirs = [], set()
        for e in entries:  # parents sort before their children
            if foreign_dirs and any(a in foreign_dirs for a in ancestors(e.rel)):
                continue
            if e.sweep is not None and e.sweep not in sweeps and e.is_dir and e.rel.count("/") == 1:
                e = e._replace(kind=FOREIGN, parts={},
                               why=f"a directory of sweep {e.sweep}, which has neither a commit log nor a plan")
            if e.kind == FOREIGN and e.is_dir:
                foreign_dirs.add(e.rel)
            out.append(e)
        return out

    def temporaries(self) -> list[pafs.FileInfo]:
        """Hidden temporary files left by writes that never finished (invisible to every reader)."""
        return [e.info for e in self.walk() if e.kind == TEMPORARY]

    def scan(self, table: str, sweep: str | None = None, columns: list[str] | None = None,
             files: list[str] | None = None) -> Scan:
        """Read a table's files in parallel; unreadable and foreign files are returned in `bad` and `foreign`.

        A file that vanishes mid-read was merged by compaction into a file this listing may not show: the
        scan lists again and starts over (with an explicit `files` list it is simply left out).
        Per-file reads concatenated in chunks beat a pyarrow dataset scan over thousands of tiny files in both
        time and peak memory (the figures: docs/results.md, Scale); a large local scan
        reads its chunks in worker processes (orchestrator/store/read_processes.py), object storage in threads.
        """
        schema = TABLES[table]
        wanted = [c for c in (columns or schema.names) if c in schema.names]
        for _ in range(10):
            paths = files if files is not None else [f.path for f in self.list_files(table, sweep)]
            gathered = self._in_workers("scan", (table, wanted), paths)
            if gathered is None and self.local:
                gathered = [self.read_chunk(table, wanted, c) for c in _chunks(paths)]
            elif gathered is None:
                with ThreadPoolExecutor(_READ_THREADS) as pool:
                    gathered = [self.read_chunk(table, wanted, c, pool.map) for c in _chunks(paths)]
            parts, bad, foreign, vanished = [], [], [], False
            for part, chunk_bad, chunk_foreign, chunk_vanished in gathered:
                if part is not None:
                    parts.append(part)
                bad += chunk_bad
                foreign += chunk_foreign
                vanished = vanished or chunk_vanished
            if not vanished or files is not None:
                break
        else:
            raise StoreError(f"store {self.location}: {table} kept changing while being read; try again")
        if not parts:
            return Scan(empty_table(schema, wanted + list(PARTITIONS[table])), bad, foreign)
        return Scan(pa.concat_tables(parts), bad, foreign)

    def _in_workers(self, kind: str, args: tuple, paths: list[str]) -> list | None:
        """Per-chunk answers of `read_processes` for these paths when a local read is large enough to pay for
        worker processes; None when the caller is to read them itself (too few, object storage, or a worker
        failed)."""
        if not (self.local and read_processes.worth_it(len(paths))):
            return None
        return read_processes.map_chunks(kind, self.root, args, _chunks(paths))

    def read_chunk(self, table: str, wanted: list[str], paths: list[str], each=map):
        """One chunk of a scan (`each` maps the per-file read over it): (its rows as one table or None, bad
        files, foreign files, whether one vanished)."""
        rows, bad, foreign, vanished = [], [], [], False
        for path, (t, reason, why) in zip(paths, list(each(lambda p: self.read_file(p, table, wanted), paths))):
            if reason == "vanished":
                vanished = True
            elif reason is not None:
                bad.append((path, reason))
            elif why is not None:
                foreign.append((path, why))
            else:
                rows.append(t)
        # One table per chunk: thousands of tiny tables cost more than their rows, and combine_chunks copies the
        # rows out, since each tiny table pins its reader's far larger buffers.
        return (pa.concat_tables(rows).combine_chunks() if rows else None), bad, foreign, vanished

    def read_file(self, path: str, table: str, wanted: list[str]) -> tuple[pa.Table | None, str | None, str | None]:
        """(rows, why unreadable, why foreign) of one file; its rows are checked against its name."""
        schema = TABLES[table]
        try:
            with self.fs.open_input_file(path) as f:
                # Pre-buffering coalesces a file's column reads into few requests: it pays on object storage,
                # where each is a round trip, and only adds to a small file's read on a local disk.
                pf = pq.ParquetFile(f, pre_buffer=not self.local)
                arrow_schema = pf.schema_arrow
                present = arrow_schema.names
                why = foreign_columns(table, arrow_schema)
                if why is not None:
                    return None, None, why
                t = pf.read(columns=[c for c in dict.fromkeys(wanted + ["stage_key", "attempt"]) if c in present],
                            use_threads=False)
                sources = (pf.metadata.metadata or {}).get(SOURCES_KEY)
        except FileNotFoundError:
            return None, "vanished", None
        except (OSError, pa.ArrowException, ValueError) as err:
            return None, one_line(err), None
        rel = self.rel(path)
        try:
            why = foreign_rows(table, *classify(rel, False), t, sources)
            if t.schema.equals(wanted_schema(table, tuple(wanted))):  # nearly every file: nothing to conform
                arrays = t.columns
            else:  # files of an older schema version lack newer columns: they read as nulls
                arrays = [conform(t.column(c), schema.field(c).type) if c in present
                          else pa.nulls(t.num_rows, schema.field(c).type) for c in wanted]
        except pa.ArrowException as err:
            why = f"values that do not fit the store's {table} schema ({one_line(err)})"
        if why is not None:
            return None, None, why
        names = list(wanted)
        for key, _, value in (p.partition("=") for p in rel.split("/")[1:-1] if "=" in p):
            arrays.append(pa.array([value] * t.num_rows, pa.string()))
            names.append(key)
        return pa.table(arrays, names=names), None, None

    def committed(self, sweep: str | None = None, columns: list[str] | None = None,
                  files: list[pafs.FileInfo] | None = None) -> Scan:
        """The commit log (one row per committed attempt, deduplicated), without the nested payload by default.

        Columns among SUMMARY_COLUMNS come from the commit files' footers, which is several times cheaper
        than scanning them; a damaged footer makes the file `bad`, as a scan would. `files`: the sweep's
        commit files if the caller has listed them already.
        """
        cols = columns or [c for c in STAGES.names if c not in PAYLOAD]
        needed = list(dict.fromkeys(cols + ["stage_key", "attempt", "token"]))
        if not set(needed) <= set(SUMMARY_COLUMNS):
            s = self.scan("stages", sweep, needed, files=None if files is None else [f.path for f in files])
            return Scan(dedup(s.table, ["sweep", "stage_key", "attempt", "token"]), s.bad, s.foreign)
        parts, found = [], Scan(pa.table({}))
        for name in ([sweep] if sweep else self.sweeps()):
            s = self._summaries(name, needed, files if sweep else None)
            parts.append(s.table)
            found.bad += s.bad
            found.foreign += s.foreign
            found.merged += s.merged
        t = pa.concat_tables(parts) if parts else empty_table(STAGES, needed + ["sweep"])
        found.table = dedup(t, ["sweep", "stage_key", "attempt", "token"])
        return found

    def _footers(self, table: str, sweep: str, infos: list[pafs.FileInfo] | None = None) -> list[Footer]:
        """The footer of every file of a table (from `infos` if the caller has listed them).

        A file that vanishes meanwhile was merged by compaction into a file this listing may not show: list
        again and start over, or a reader would miss rows.
        """
        for attempt in range(10):
            if infos is None or attempt > 0:
                infos = self.list_files(table, sweep)
            done = self._in_workers("footers", (table,), [info.path for info in infos])
            fields = None if done is None else [f for chunk in done for f in chunk]
            if fields is None:
                threads = _LOCAL_FOOTER_THREADS if self.local else _READ_THREADS
                with ThreadPoolExecutor(min(threads, max(1, len(infos)))) as pool:
                    fields = list(pool.map(lambda info: self.footer_fields(table, info.path), infos))
            results = [Footer(info, *f) for info, f in zip(infos, fields)]
            if all(r.reason != "vanished" for r in results):
                return results
        raise StoreError(f"store {self.location}: {table} kept changing while being read; try again")

    def footer_fields(self, table: str, path: str) -> tuple:
        """A file's Footer without its FileInfo: (meta, why its columns are foreign, why unreadable, summary)."""
        try:
            with self.fs.open_input_file(path) as f:
                md = pq.read_metadata(f)
            raw = md.metadata or {}
            # Only the store's own keys are kept: pyarrow's copy of the schema is several KB per file.
            meta = {k: v for k, v in raw.items() if k.startswith(b"ticketsweep.")}
            if table != "stages":
                return meta, foreign_parquet_schema(table, md, raw), None, None
            # A commit is checked by its summary or, without one, when scanned.
            return meta, None, None, commit_summary(meta)
        except FileNotFoundError:
            return None, None, "vanished", None
        except (OSError, pa.ArrowException, ValueError) as err:
            return None, None, one_line(err), None

    def checked_footers(self, table: str, sweep: str, infos: list[pafs.FileInfo] | None) -> tuple[Scan, list[Footer]]:
        """The footers of files that can be the table's, and a Scan (without rows) of the bad, the foreign and
        the merged-but-not-deleted ones."""
        footers = self._footers(table, sweep, infos)
        found = Scan(pa.table({}))
        good = []
        for f in footers:
            if f.reason is not None:
                found.bad.append((f.info.path, f.reason))
            elif (why := self._foreign_footer(table, f)) is not None:
                found.foreign.append((f.info.path, why))
            else:
                good.append(f)
        found.merged = merged_leftovers(good)
        return found, good

    def _foreign_footer(self, table: str, f: Footer) -> str | None:
        kind, parts = classify(self.rel(f.info.path), False)
        if kind == "compacted" and SOURCES_KEY not in f.meta:
            return "a compacted file that does not list the files it merged"
        if kind != "compacted" and SOURCES_KEY in f.meta:
            return "a footer listing merged files, in a file not named as a compacted one"
        if f.columns is not None:
            return f.columns
        if kind == "compacted":
            return self._compacted_claim(table, f.info)
        if kind == "commit" and SUMMARY_KEY in f.meta:
            if f.summary is None:
                return "a commit summary that cannot be read"
            named = (f.summary["stage_key"], f.summary["attempt"], f.summary.get("token"))
            if named != (parts["key"], int(parts["attempt"]), parts.get("token")):
                return f"its commit summary names another stage attempt ({named[0]}-{named[1]}) than its file name"
        return None

    def _compacted_claim(self, table: str, info: pafs.FileInfo) -> str | None:
        """Why a compacted file's rows are not those its footer lists as merged (`claim_mismatch`), from its
        identity columns; remembered by path (a compacted file's name is new and never rewritten), since checks
        and reads meet the same few files often."""
        if info.path not in self._claims:
            _, reason, why = self.read_file(info.path, table, [])
            if reason == "vanished":
                return None  # merged into a newer file meanwhile: the reader lists again
            self._claims[info.path] = why if reason is None else f"rows that cannot be read ({reason})"
        return self._claims[info.path]

    def _summaries(self, sweep: str, columns: list[str], infos: list[pafs.FileInfo] | None = None) -> Scan:
        for _ in range(10):
            found, good = self.checked_footers("stages", sweep, infos)
            rows, scan = [], []
            for f in good:
                if f.summary is not None:
                    rows.append({c: f.summary.get(c) for c in columns})
                else:  # compacted files and schema-1 commits carry no summary: read their columns
                    scan.append(f.info.path)
            schema = pa.schema([STAGES.field(c) for c in columns])
            tables = [pa.Table.from_pylist(rows, schema=schema)]
            if scan:
                s = self.scan("stages", sweep, columns, files=scan)
                found.bad += s.bad
                found.foreign += s.foreign
                tables.append(s.table.select(columns))
                present = {f.path for f in self.list_files("stages", sweep)}
                if not set(scan) <= present:
                    infos = None
                    continue  # a compacted file was itself merged away while we read it
            t = pa.concat_tables(tables)
            found.table = t.append_column("sweep", pa.array([sweep] * t.num_rows, pa.string()))
            return found
        raise StoreError(f"store {self.location}: stages kept changing while being read; try again")

    def read(self, table: str, sweep: str | None = None, warn: bool = True) -> pd.DataFrame:
        """Committed rows of one table as pandas (partition columns included), one row per identity.

        Unreadable and foreign files are reported on stderr and skipped; view rows whose commit is missing are
        left out.
        """
        if table == "stages":
            s = self.committed(sweep)
            t = s.table
            skipped = s.bad + s.foreign
        else:
            s = self.scan(table, sweep)
            log = self.committed(sweep, ["stage_key", "attempt"])
            skipped = s.bad + s.foreign + log.bad + log.foreign
            t = dedup(only_committed(s.table, log.table), ["sweep"] + ROW_IDENTITY[table])
        if warn:
            for path, reason in skipped:
                print(f"warning: skipping store file {path}: {reason}", file=sys.stderr)
        import pandas as pd

        df = t.to_pandas()
        for col in PARTITIONS[table]:
            if col not in df:
                df[col] = pd.Series(dtype=object)
        if "method" not in PARTITIONS[table] and "method" in df and df["method"].isna().any():
            # Only the missing cells, by position: fillna with a mapped Series warns for pandas' str dtype (and
            # will raise in pandas 4).
            missing = df["method"].isna()
            planned = df.loc[missing, "stage_key"].map(self.planned_methods(set(df["sweep"].dropna())))
            df.loc[missing, "method"] = planned.astype(object).where(planned.notna(), None)
        return df

    def planned_methods(self, sweeps: set[str]) -> dict[str, str]:
        """stage key -> method, from every plan manifest of these sweeps. Compaction before schema 4's code
        dropped `method` from the stages, curves and tuning files it merged (it is a directory name only in
        points): a read gives those rows their method back from the plans, where it was never lost."""
        methods: dict[str, str] = {}
        for sweep in sorted(sweeps):
            for f in self.list_dir(layout_dir(self.root, "plan", sweep=sweep)):
                if f.type != pafs.FileType.File or classify(self.rel(f.path), False)[0] != "plan":
                    continue
                try:
                    with self.fs.open_input_file(f.path) as handle:
                        plan = pq.read_table(handle, columns=["stage_key", "method"])
                except (OSError, pa.ArrowInvalid, KeyError):
                    continue  # an unreadable manifest gives nothing; `status` reports damaged files
                for key, method in zip(plan.column("stage_key").to_pylist(), plan.column("method").to_pylist()):
                    if method is not None:
                        methods[key] = method
        return methods

    def done_keys(self, sweep: str | None = None) -> set[str]:
        log = self.committed(sweep, ["stage_key", "status"]).table
        return {k for k, s in zip(log.column("stage_key").to_pylist(), log.column("status").to_pylist()) if s == "ok"}

    def commit_rows(self, sweep: str, names: set[str], columns: list[str] | None = None,
                    files: list[pafs.FileInfo] | None = None) -> list[dict]:
        """Commit rows (by default with their payload) of the given attempt names; `files`: the sweep's commit
        files if the caller has listed them already."""
        listed = self.list_files("stages", sweep) if files is None else files
        paths = [f.path for f in listed
                 if f.base_name[:-len(".parquet")] in names or f.base_name.startswith(COMPACTED_PREFIX)]
        cols = None if columns is None else list(dict.fromkeys(columns + ["stage_key", "attempt", "token"]))
        rows = self.scan("stages", sweep, cols, files=paths).table.to_pylist()
        return [r for r in rows if attempt_name(r["stage_key"], r["attempt"], r["token"]) in names]

    def view_names(self, table: str, sweep: str, files: list[pafs.FileInfo] | None = None) -> ViewFiles:
        """What a view holds: the attempt names (compacted files included), its files, and its bad, foreign and
        merged-but-not-deleted files. `files`: the view's files if the caller has listed them already.

        Reads only file footers, so checking a large store stays cheap.
        """
        found, good = self.checked_footers(table, sweep, files)
        names = set()
        for f in good:
            if SOURCES_KEY in f.meta:
                names.update(json.loads(f.meta[SOURCES_KEY]))
            else:
                names.add(f.info.base_name[:-len(".parquet")])
        return ViewFiles(names, [f.info for f in good], found.bad, found.foreign, found.merged)

    def sweeps(self) -> list[str]:
        return sorted(f.base_name.partition("=")[2] for f in self.list_dir(table_dir(self.root, "stages"))
                      if f.type == pafs.FileType.Directory and f.base_name.startswith("sweep="))


def _chunks(paths: list[str]) -> list[list[str]]:
    return [paths[i:i + _SCAN_CHUNK] for i in range(0, len(paths), _SCAN_CHUNK)]


def dedup(t: pa.Table, keys: list[str]) -> pa.Table:
    keys = [k for k in keys if k in t.column_names]
    if t.num_rows == 0 or not keys:
        return t
    idx = pa.array(range(t.num_rows), pa.int64())
    first = (t.select(keys).append_column("_i", idx).group_by(keys, use_threads=False)
             .aggregate([("_i", "min")]).column("_i_min"))
    return t.take(pa.array(sorted(first.to_pylist()), pa.int64())) if len(first) != t.num_rows else t


def only_committed(rows: pa.Table, log: pa.Table) -> pa.Table:
    if rows.num_rows == 0:
        return rows
    keys = log.select(["stage_key", "attempt"]).group_by(["stage_key", "attempt"]).aggregate([])
    # A semi join keeps row order only per batch: restore it, readers and tests compare frames.
    idx = rows.append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
    kept = idx.join(keys, keys=["stage_key", "attempt"], join_type="left semi", use_threads=False)
    return kept.sort_by("_row").drop_columns(["_row"])

