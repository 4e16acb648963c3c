"""Parquet results store: the schema (defined once, versioned), atomic per-stage files, reading back.

Layout under the store root (a local path or a pyarrow filesystem URI such as s3://bucket/x):
    points/sweep=<name>/method=<method>/<stage_key>-<attempt>.parquet   one row per result
    stages/sweep=<name>/<stage_key>-<attempt>.parquet                   one row per stage attempt
    curves/sweep=<name>/<stage_key>-<attempt>.parquet                   per-epoch metrics
    artifacts/<stage_key>/outputs.pt                                    weights and masks (artifacts.py)
`sweep` and `method` live only in the directory names (hive partitions), so
`pandas.read_parquet("<store>/points")` gives them back as columns.
Files are written under a hidden temporary name and renamed; nothing is ever overwritten.
"""
from __future__ import annotations

import io
import sys
import uuid
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCHEMA_VERSION = 1


class StoreError(ValueError):
    """A store location that cannot be used; the message names it."""


POINTS = pa.schema([
    ("point_key", pa.string()), ("stage_key", pa.string()), ("attempt", pa.int32()),
    ("criterion", pa.string()), ("objective", pa.string()), ("model", pa.string()), ("dataset", pa.string()),
    ("seed", pa.int64()), ("target_sparsity", pa.float64()), ("sparsity", pa.float64()), ("level", pa.int32()),
    ("requested", pa.bool_()),
    ("test_accuracy", pa.float64()), ("best_test_accuracy", pa.float64()), ("test_loss", pa.float64()),
    ("dense_test_accuracy", pa.float64()),
    ("search_seconds", pa.float64()), ("retrain_seconds", pa.float64()),
    ("marginal_seconds", pa.float64()), ("standalone_seconds", pa.float64()),
    ("device", pa.string()), ("gpu_fraction", pa.float64()), ("host", pa.string()),
    ("status", pa.string()), ("error_type", pa.string()), ("error", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")), ("finished_at", pa.timestamp("us", tz="UTC")),
    ("versions", pa.string()), ("schema_version", pa.int32()),
])

STAGES = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("kind", pa.string()), ("label", pa.string()),
    ("seed", pa.int64()), ("parents", pa.string()), ("seconds", pa.float64()),
    ("host", pa.string()), ("device", pa.string()), ("status", pa.string()),
    ("error_type", pa.string()), ("error", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")), ("finished_at", pa.timestamp("us", tz="UTC")),
    ("schema_version", pa.int32()),
])

CURVES = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("seed", pa.int64()), ("phase", pa.string()),
    ("epoch", pa.float64()), ("iteration", pa.int64()), ("train_loss", pa.float64()), ("lr", pa.float64()),
    ("test_accuracy", pa.float64()), ("test_loss", pa.float64()),
    # CTS search epochs (phase "search"): the objective and the expected kept fraction Σσ(s)/d
    ("objective", pa.float64()), ("expected_kept_fraction", pa.float64()),
    ("schema_version", pa.int32()),
])

TABLES = {"points": POINTS, "stages": STAGES, "curves": CURVES}


def open_store(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a local path or a URI; one line naming the location if unusable."""
    try:
        if "://" in location:
            fs, root = pafs.FileSystem.from_uri(location)
        else:
            import os
            fs, root = pafs.LocalFileSystem(), os.path.abspath(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise StoreError(f"store {location}: cannot open ({str(err).splitlines()[0]})") from None
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise StoreError(f"store {location}: is a file, expected a directory")
    return fs, root.rstrip("/")


@dataclass
class ResultsStore:
    location: str

    def __post_init__(self):
        self.fs, self.root = open_store(self.location)

    # ------------------------------------------------------------ writing
    def check_writable(self) -> None:
        """Create the root and prove a file can be written there, before any work starts."""
        try:
            self.fs.create_dir(self.root, recursive=True)
            probe = f"{self.root}/.probe-{uuid.uuid4().hex}"
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as err:
            raise StoreError(f"store {self.location}: not writable ({str(err).splitlines()[0]})") from None

    def _write(self, path: str, table: pa.Table) -> None:
        directory, name = path.rsplit("/", 1)
        self.fs.create_dir(directory, recursive=True)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise StoreError(f"store {self.location}: refusing to overwrite {path}")
        tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
        buf = io.BytesIO()
        pq.write_table(table, buf)
        with self.fs.open_output_stream(tmp) as f:
            f.write(buf.getvalue())
        self.fs.move(tmp, path)

    def write_stage(self, sweep: str, key: str, attempt: int, stage_row: dict,
                    points: list[dict], curve: list[dict]) -> None:
        """Write one finished stage attempt: curves and points first, the stage row last (it marks 'done')."""
        if curve:
            rows = [{**r, "stage_key": key, "attempt": attempt, "schema_version": SCHEMA_VERSION} for r in curve]
            self._write(f"{self.root}/curves/sweep={sweep}/{key}-{attempt}.parquet", _table(rows, CURVES))
        for p in points:
            row = {**p, "stage_key": key, "attempt": attempt, "schema_version": SCHEMA_VERSION}
            method = row.pop("method")
            self._write(f"{self.root}/points/sweep={sweep}/method={method}/{key}-{attempt}.parquet",
                        _table([row], POINTS))
        row = {**stage_row, "stage_key": key, "attempt": attempt, "schema_version": SCHEMA_VERSION}
        self._write(f"{self.root}/stages/sweep={sweep}/{key}-{attempt}.parquet", _table([row], STAGES))

    # ------------------------------------------------------------ reading
    def _files(self, directory: str) -> list[str]:
        info = self.fs.get_file_info(directory)
        if info.type == pafs.FileType.NotFound:
            return []
        sel = pafs.FileSelector(directory, recursive=True)
        return sorted(f.path for f in self.fs.get_file_info(sel)
                      if f.type == pafs.FileType.File and f.path.endswith(".parquet")
                      and not f.base_name.startswith("."))

    def read(self, table: str, sweep: str | None = None) -> pd.DataFrame:
        """All rows of one table (partition columns included); corrupt files are reported on stderr and skipped."""
        schema = TABLES[table]
        base = f"{self.root}/{table}" + (f"/sweep={sweep}" if sweep else "")
        frames = []
        for path in self._files(base):
            try:
                with self.fs.open_input_file(path) as f:
                    t = pq.read_table(f)
            except (pa.ArrowException, OSError) as err:
                print(f"warning: skipping unreadable store file {path}: {str(err).splitlines()[0]}", file=sys.stderr)
                continue
            df = t.to_pandas()
            for part in path[len(self.root) + 1:].split("/")[1:-1]:
                name, _, value = part.partition("=")
                df[name] = value
            frames.append(df)
        if not frames:
            cols = [f.name for f in schema] + ["sweep"] + (["method"] if table == "points" else [])
            return pd.DataFrame(columns=cols)
        return pd.concat(frames, ignore_index=True)

    def done_keys(self, sweep: str | None = None) -> set[str]:
        stages = self.read("stages", sweep)
        return set(stages.loc[stages["status"] == "ok", "stage_key"])


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    unknown = set().union(*rows) - set(schema.names)
    if unknown:
        raise ValueError(f"columns not in the store schema: {sorted(unknown)}")
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
