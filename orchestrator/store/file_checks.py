"""Why a file found in a table's directory is not the store's own: its columns, its rows against its name, a
compacted file's list of what it merged, a commit's summary. Scans, health checks and compaction all ask here.

A file that fails a check is foreign: readers skip it (and say so), `submit` moves it to quarantine.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.store.files import one_line
from orchestrator.store.layout import attempt_name
from orchestrator.store.schemas import SOURCES_KEY, SUMMARY_KEY, TABLES


class Footer(NamedTuple):
    """A file's footer as read, and what reading it found."""
    info: pafs.FileInfo
    meta: dict | None        # the footer's key-value metadata
    columns: str | None      # why its columns cannot be the table's
    reason: str | None       # why it cannot be read
    summary: dict | None = None  # a commit's summary, parsed


def merged_leftovers(footers: list[Footer]) -> list[tuple[str, str]]:
    """(file, compacted file) for each file whose rows a compacted file beside it lists as merged: a small
    file it names, or an older compacted file whose every name it holds. Such files exist only between the
    write of a compacted file and the deletion of what it replaced, or after that was interrupted."""
    by_dir: dict[str, list[Footer]] = {}
    for f in footers:
        by_dir.setdefault(f.info.path.rsplit("/", 1)[0], []).append(f)
    out = []
    for files in by_dir.values():
        compacted = sorted(((f.info.path, set(json.loads(f.meta[SOURCES_KEY]))) for f in files
                            if SOURCES_KEY in f.meta), key=lambda c: (-len(c[1]), c[0]))
        if not compacted:
            continue
        holder: dict[str, str] = {}  # attempt name -> the largest compacted file holding it
        for path, names in compacted:
            for name in names:
                holder.setdefault(name, path)
        for path, names in compacted:
            holders = {holder[n] for n in names}
            if len(holders) == 1 and holders != {path}:
                out.append((path, holders.pop()))
        for f in files:
            name = f.info.base_name[:-len(".parquet")]
            if SOURCES_KEY not in f.meta and name in holder:
                out.append((f.info.path, holder[name]))
    return out


def commit_summary(meta: dict) -> dict | None:
    """A commit footer's summary of its stage row, or None if it has none that can be read."""
    if SUMMARY_KEY not in meta:
        return None
    try:
        summary = json.loads(meta[SUMMARY_KEY])
        if not {"stage_key", "attempt"} <= summary.keys():
            return None
        if summary.get("finished_at"):
            summary["finished_at"] = datetime.fromisoformat(summary["finished_at"])
    except (ValueError, TypeError, AttributeError):
        return None
    return summary


def foreign_parquet_schema(table: str, md: pq.FileMetaData, meta: dict) -> str | None:
    """`foreign_columns` of a file from its footer. Files written by pyarrow carry their Arrow schema in the
    footer, and nearly every file of a table has one of a few: those found sound are remembered by those bytes,
    which costs nothing to compare (reading the Parquet schema would cost a fifth of the footer read)."""
    arrow = meta.get(b"ARROW:schema")
    sound = _SOUND_PARQUET.setdefault(table, set())
    if arrow is not None and arrow in sound:
        return None
    try:
        why = foreign_columns(table, md.schema.to_arrow_schema())
    except (pa.ArrowException, ValueError) as err:
        return f"a schema that cannot be read ({one_line(err)})"
    if why is None and arrow is not None and len(sound) < 64:
        sound.add(arrow)
    return why


def foreign_columns(table: str, schema: pa.Schema) -> str | None:
    """Why a file of this schema cannot be one of `table`'s (None if it can)."""
    sound = _SOUND_SCHEMAS.setdefault(table, [])
    if any(schema.equals(other) for other in sound):  # nearly every file of a table has one of a few schemas
        return None
    known = TABLES[table]
    unknown = [c for c in schema.names if c not in known.names]
    if unknown:
        return f"columns not in the store's {table} schema: {', '.join(unknown[:3])}"
    missing = [c for c in ("stage_key", "attempt") if c not in schema.names]
    if missing:
        return f"no {missing[0]} column"
    for name in schema.names:
        have, want = schema.field(name).type, known.field(name).type
        if not (have == want or any(same(have) and same(want) for same in _TYPE_FAMILIES)):
            return f"column {name} is {have}, not {want}"
    if len(sound) < 16:
        sound.append(schema)
    return None


# Schemas found sound, by table: nearly every file of a table has one of a few, so each is checked once.
_SOUND_SCHEMAS: dict[str, list[pa.Schema]] = {}
_SOUND_PARQUET: dict[str, set[bytes]] = {}


# Types a column may have been written with and still be read as the schema's (older files, other writers).
_TYPE_FAMILIES = (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), pa.types.is_integer,
                  pa.types.is_floating, pa.types.is_timestamp,
                  lambda t: pa.types.is_list(t) or pa.types.is_large_list(t))


def foreign_rows(table: str, kind: str, parts: dict[str, str], t: pa.Table,
                  sources: bytes | None = None) -> str | None:
    """Why these rows cannot be the content of a file of this kind and name, whose footer lists `sources` as the
    files it merged (None if they can)."""
    if sources is not None and kind != "compacted":
        return "a footer listing merged files, in a file not named as a compacted one"
    if table == "stages" and kind == "commit" and t.num_rows != 1:
        return f"a commit holds one stage row, this file {t.num_rows}"
    if t.num_rows == 0:
        return "no rows"
    for column in ("stage_key", "attempt"):
        if t.column(column).null_count:
            return f"rows without a {column}"
    if kind in ("commit", "view"):
        key, attempt = parts["key"], int(parts["attempt"])
        if t.num_rows <= 64:  # one attempt's few rows: Python is cheaper than a compute kernel call
            same = set(t.column("stage_key").to_pylist()) == {key} and set(t.column("attempt").to_pylist()) == {attempt}
        else:
            same = (pc.all(pc.equal(t.column("stage_key"), key)).as_py()
                    and pc.all(pc.equal(t.column("attempt"), attempt)).as_py())
        if not same:
            return f"rows of another stage attempt than its name ({key}-{attempt}) says"
    if kind == "compacted":
        return claim_mismatch(sources, t)
    return None


def claim_mismatch(sources: bytes | None, t: pa.Table) -> str | None:
    """Why a compacted file's rows are not exactly those of the files its footer lists as merged (None if they
    are): a compaction writes the rows of every file it lists and lists every file whose rows it writes, and each
    such file held rows. A footer copied onto other rows would otherwise make readers and repairs trust it."""
    if sources is None:
        return "a compacted file that does not list the files it merged"
    try:
        names = json.loads(sources)
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError
    except ValueError:
        return "a compacted file whose list of merged files cannot be read"
    held = {attempt_name(k, a, None) for k, a in set(zip(t.column("stage_key").to_pylist(),
                                                          t.column("attempt").to_pylist()))}
    listed = set()
    for name in names:
        attempt = name if name in held else name.rsplit("-", 1)[0]  # <key>-<attempt>[-<token>]
        if attempt not in held:
            return (f"a compacted file whose footer lists {name} as merged, but which holds none of its rows "
                    f"(not what a compaction wrote)")
        listed.add(attempt)
    if held - listed:
        return (f"a compacted file holding rows of {len(held - listed)} stage attempt(s) its footer does not list "
                f"as merged (not what a compaction wrote)")
    return None


