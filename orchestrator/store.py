"""Parquet results store: one atomic commit per stage attempt, pandas-readable views, scans, compaction.

The store's layout (every path it writes, under a local path or a pyarrow filesystem URI such as s3://bucket/x)
is `LAYOUT` below, the one place that defines it; anything else found in a store is foreign (`walk`), and
`orchestrate status` names it, `submit` moves it to quarantine/.

Why a commit file plus views: one file is the only thing every filesystem writes atomically (a local
rename, one object-store PUT), so an attempt becomes visible all at once or not at all. The views exist so
that `pandas.read_parquet("<store>/points")` works; they are written only after their commit, so a raw
pandas read never sees an uncommitted row, and a crash between commit and view is repaired from the commit
by the next `submit` (`materialize`). Every write goes to a fresh name: nothing is ever overwritten.
`sweep` (and, in points, `method`) live only in directory names (hive partitions, `PARTITIONS`); `stages`,
`curves` and `tuning` hold `method` as a column of their own.
"""
from __future__ import annotations

import functools
import io
import json
import os
import re
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator import read_processes

SCHEMA_VERSION = 4
if TYPE_CHECKING:  # pandas is imported by read() alone: the driver never needs its ~40 MB
    import pandas as pd

COMPACTED_PREFIX = "compacted-"
COMPACT_BATCH = 1000  # files merged into one compacted file: bounds compaction's memory, keeps reads to few files
SOURCES_KEY = b"ticketsweep.sources"  # parquet metadata of a compacted file: the names it replaced
# Parquet metadata of a commit file: its stage row's small columns, so planning reads footers, not data.
SUMMARY_KEY = b"ticketsweep.commit"
# The work a point's standalone cost sums over its ancestors (orchestrator/recorder.py), read by resuming.
WORK_SUMMARY = ("train_epochs", "search_epochs", "train_flops", "search_flops")
SUMMARY_COLUMNS = ("stage_key", "attempt", "token", "kind", "method", "status", "error_type", "seconds",
                   "n_points", "n_curve", "n_trials", "finished_at", *WORK_SUMMARY)
# Reads of many small files. On object storage each GET is latency-bound: threads. On a local disk reading a
# small file is mostly Python and pyarrow holding the GIL, so threads only hand off (a pool of any width read whole
# files 10-30 % slower than a loop, measured on 2 cores): whole files are read in a loop, footers in a few threads
# (as fast), and reads of thousands of files in worker processes (read_processes.py).
_READ_THREADS = 16
_LOCAL_FOOTER_THREADS = 4
_SCAN_CHUNK = 512


class StoreError(ValueError):
    """A store location or file that cannot be used; the message is one line naming it."""


# ------------------------------------------------------------------ the layout
# Every path the store writes, relative to its root, by kind: the one definition of what a store may hold.
# <part>s match _PARTS; a final "**" admits anything below. The store's directories are those these patterns
# pass through, and each may also hold hidden temporaries of writes in progress (_TEMPORARY). Anything else
# is foreign: `walk` marks it, `orchestrate status` names it, `submit` moves it to quarantine/. The first
# pattern that matches a path gives its kind (so compacted-<token> comes before <key>-<attempt>).
# Adding a directory is one line here (plus a part in _PARTS if it names a new kind of part).
LAYOUT: tuple[tuple[str, str], ...] = (
    ("compacted", "stages/sweep=<sweep>/compacted-<token>.parquet"),   # merged files (compact)
    ("commit", "stages/sweep=<sweep>/<key>-<attempt>-<token>.parquet"),  # a stage attempt's commit
    ("commit", "stages/sweep=<sweep>/<key>-<attempt>.parquet"),          # schema 1: no token
    ("compacted", "points/sweep=<sweep>/method=<method>/compacted-<token>.parquet"),
    ("view", "points/sweep=<sweep>/method=<method>/<key>-<attempt>-<token>.parquet"),
    ("view", "points/sweep=<sweep>/method=<method>/<key>-<attempt>.parquet"),
    ("compacted", "curves/sweep=<sweep>/compacted-<token>.parquet"),
    ("view", "curves/sweep=<sweep>/<key>-<attempt>-<token>.parquet"),
    ("view", "curves/sweep=<sweep>/<key>-<attempt>.parquet"),
    ("compacted", "tuning/sweep=<sweep>/compacted-<token>.parquet"),
    ("view", "tuning/sweep=<sweep>/<key>-<attempt>-<token>.parquet"),   # a tune stage's configurations
    ("plan", "plans/sweep=<sweep>/plan-<attempt>-<token>.parquet"),      # a plan as submitted (plans.py)
    ("log", "logs/sweep=<sweep>/<key>-<attempt>.log"),
    ("artifact", "artifacts/<key>/outputs.pt"),                # weights and masks (artifacts.py)
    ("checksum", "artifacts/<key>/outputs.pt.sha256"),         # its size and SHA-256, written after it
    ("lease", "leases/<sweep>.json"),                          # lease.py
    ("stop request", "leases/<sweep>.stop"),                   # lease.py: `cancel` asking a driver to stop
    ("job", "jobs/<sweep>.json"),                              # jobs.py
    ("decision log", "decisions/sweep=<sweep>/look-<attempt>.json"),  # decision_log.py: one file per look
    ("quarantine", "quarantine/**"),                           # files moved aside, never deleted
)
_PARTS = {"sweep": r"[A-Za-z0-9_.-]+",  # spec.py's rule for sweep names
          "key": r"[^/.][^/]*",           # stage keys are hex; the store itself takes any name
          "method": r"[^/]+", "attempt": r"[0-9]+", "token": r"[0-9a-f]+",
          "name": r"[^/.][^/]*"}          # any other file name part (not hidden)
_TEMPORARY = re.compile(r"\.[^/]+\.tmp|\.probe-[0-9a-f]+")  # the second: probes of versions before .tmp
TABLE_KINDS = ("commit", "view", "compacted")  # the Parquet files of a table, named by their first directory
DIRECTORY, TEMPORARY, FOREIGN = "directory", "temporary", "foreign"


def _compile(pattern: str) -> str:
    def part(m: re.Match) -> str:
        return f"(?P<{m.group(1)}>{_PARTS[m.group(1)]})"
    return "".join(part(m) if m else re.escape(text)
                   for text, m in ((t, re.fullmatch(r"<(\w+)>", t)) for t in re.split(r"(<\w+>)", pattern) if t))


def _layout_index():
    files: dict[str, list[tuple[str, re.Pattern]]] = {}
    dirs: dict[str, list[re.Pattern]] = {}
    for kind, pattern in LAYOUT:
        top, components = pattern.split("/", 1)[0], pattern.split("/")
        if components[-1] == "**":
            head = "/".join(components[:-1])
            files.setdefault(top, []).append((kind, re.compile(_compile(head) + "/.+")))
            dirs.setdefault(top, []).append(re.compile(_compile(head) + "(?:/.+)?"))
            continue
        files.setdefault(top, []).append((kind, re.compile(_compile(pattern))))
        for depth in range(1, len(components)):
            dirs.setdefault(top, []).append(re.compile(_compile("/".join(components[:depth]))))
    return files, dirs


_FILES, _DIRS = _layout_index()
# Top-level directories whose second level is sweep=<sweep> (a sweep's partition); and those listed in full.
_SWEPT = {p.split("/")[0] for _, p in LAYOUT if p.split("/")[1:2] == ["sweep=<sweep>"]}
_LISTED = {p.split("/")[0] for _, p in LAYOUT if not p.endswith("/**")}


def classify(rel: str, is_dir: bool) -> tuple[str, dict[str, str]]:
    """(kind, named parts) of a path relative to the store root: a LAYOUT kind, DIRECTORY, TEMPORARY or FOREIGN."""
    top = rel.split("/", 1)[0]
    if is_dir:
        return (DIRECTORY, {}) if any(rx.fullmatch(rel) for rx in _DIRS.get(top, ())) else (FOREIGN, {})
    for kind, rx in _FILES.get(top, ()):
        m = rx.fullmatch(rel)
        if m:
            return kind, m.groupdict()
    parent, _, base = rel.rpartition("/")
    if _TEMPORARY.fullmatch(base) and (not parent or classify(parent, True)[0] == DIRECTORY):
        return TEMPORARY, {}
    return FOREIGN, {}


def layout_path(root: str, kind: str, **parts) -> str:
    """The path of a file of `kind` (its first LAYOUT pattern) under `root`, its <part>s filled in."""
    pattern = next(p for k, p in LAYOUT if k == kind)
    return f"{root}/" + re.sub(r"<(\w+)>", lambda m: str(parts[m.group(1)]), pattern)


class Entry(NamedTuple):
    """One file or directory found in a store, classified against LAYOUT."""
    info: pafs.FileInfo
    rel: str                 # its path relative to the store root
    top: str                 # the first directory of `rel`
    kind: str                # a LAYOUT kind, DIRECTORY, TEMPORARY or FOREIGN
    parts: dict[str, str]
    sweep: str | None        # the sweep whose partition (<top>/sweep=<s>/...) holds it, if any
    why: str = ""            # for FOREIGN: what is wrong with it

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def is_dir(self) -> bool:
        return self.info.type == pafs.FileType.Directory


def _entry(info: pafs.FileInfo, rel: str) -> Entry:
    is_dir = info.type == pafs.FileType.Directory
    head = rel.split("/", 2)
    sweep = head[1][len("sweep="):] if head[0] in _SWEPT and len(head) > 1 and head[1].startswith("sweep=") else None
    if info.type == pafs.FileType.Unknown:  # what `list_dir` gives for a link or a special file
        return Entry(info, rel, head[0], FOREIGN, {}, sweep, _special(info.path))
    kind, parts = classify(rel, is_dir)
    why = (("a directory" if is_dir else "a file") + " not in the store's layout") if kind == FOREIGN else ""
    return Entry(info, rel, head[0], kind, parts, sweep, why)


def claimed_sweeps(entries: list[Entry]) -> set[str]:
    """The sweeps a listing shows to exist: those with a commit log directory or a plan manifest."""
    return {e.sweep for e in entries if e.sweep is not None and (e.top == "stages" or e.kind == "plan")}


def _special(path: str) -> str:
    """Why a listed entry that is neither a regular file nor a directory is foreign."""
    try:
        return f"a symbolic link to {os.readlink(path)}, which the store never follows"
    except OSError:
        return "neither a regular file nor a directory"


def _local_listing(base: str, recursive: bool) -> list[pafs.FileInfo]:
    """What a local directory holds, never through a symbolic link: a link (or a socket, a FIFO) is listed as
    itself, with type Unknown, and not followed; so nothing outside the store is ever listed, read, moved,
    deleted or written as the store's.

    Size and modification time are read only where the store uses them (artifacts, temporaries, anything not
    Parquet): a table holds tens of thousands of Parquet files, and a stat each made listing them slower than
    pyarrow's own listing."""
    out, todo = [], [base]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    out.append(pafs.FileInfo(e.path, pafs.FileType.Directory))
                    if recursive:
                        todo.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    if e.name.endswith(".parquet") and not e.name.startswith("."):
                        out.append(pafs.FileInfo(e.path, pafs.FileType.File))
                        continue
                    st = e.stat(follow_symlinks=False)
                    out.append(pafs.FileInfo(e.path, pafs.FileType.File, size=st.st_size, mtime_ns=st.st_mtime_ns))
                else:
                    out.append(pafs.FileInfo(e.path, pafs.FileType.Unknown))
    return out


_UTC = pa.timestamp("us", tz="UTC")
_MEMORY = [("peak_rss_mb", pa.float64()), ("cuda_peak_mb", pa.float64())]
# A stage's machine-independent work (workers/work.py): epochs of training and of mask search; examples passed
# forward and backward in training, search and scoring; examples evaluated; FLOPs of the masked network per
# phase. Null in stores written before schema 4, for failed attempts and for tune stages (not counted).
_WORK = [("train_epochs", pa.float64()), ("search_epochs", pa.float64()), ("forward_examples", pa.int64()),
         ("backward_examples", pa.int64()), ("eval_examples", pa.int64()), ("train_flops", pa.int64()),
         ("search_flops", pa.int64()), ("eval_flops", pa.int64())]
WORK_COLUMNS = tuple(name for name, _ in _WORK)  # what a stage's meta["work"] holds (workers/work.py Meter.totals)
# The machine a stage ran on (workers/machine.py; `host` is older): CPU model, logical cores, GPU model, torch's
# threads, and the 1-minute load average at the stage's start and end. Null before schema 4.
_MACHINE = [("cpu_model", pa.string()), ("logical_cores", pa.int32()), ("gpu_model", pa.string()),
            ("torch_threads", pa.int32()), ("load_start", pa.float64()), ("load_end", pa.float64())]

POINTS = pa.schema([
    ("point_key", pa.string()), ("stage_key", pa.string()), ("attempt", pa.int32()),
    ("criterion", pa.string()), ("objective", pa.string()), ("model", pa.string()), ("dataset", pa.string()),
    ("seed", pa.int64()), ("target_sparsity", pa.float64()), ("sparsity", pa.float64()), ("level", pa.int32()),
    ("requested", pa.bool_()),
    ("test_accuracy", pa.float64()), ("test_loss", pa.float64()),
    # The evaluation with the best validation accuracy (earliest on ties): its epoch, validation accuracy and
    # test accuracy. Without a validation split, the last evaluation.
    ("val_accuracy", pa.float64()), ("selected_epoch", pa.float64()), ("selected_test_accuracy", pa.float64()),
    # The accuracies as counts (exact paired tests: orchestrator/stats.py): correct examples at the end, at the
    # selected evaluation, and on the validation split there, out of test_examples / val_examples; and the
    # class count (chance accuracy is 1 / num_classes). Null in stores written before they existed, and for a
    # split that is absent.
    ("test_correct", pa.int64()), ("selected_test_correct", pa.int64()), ("val_correct", pa.int64()),
    ("test_examples", pa.int64()), ("val_examples", pa.int64()), ("num_classes", pa.int64()),
    ("dense_test_accuracy", pa.float64()),
    ("search_seconds", pa.float64()), ("retrain_seconds", pa.float64()),
    ("marginal_seconds", pa.float64()), ("standalone_seconds", pa.float64()),
    # The point's work from scratch, as standalone_seconds sums seconds: its stage's and its cost ancestors'
    # train + search epochs, and train + search FLOPs; null where any of them lacks a count.
    *_WORK, ("standalone_epochs", pa.float64()), ("standalone_flops", pa.int64()),
    ("device", pa.string()), ("gpu_fraction", pa.float64()), ("host", pa.string()), *_MACHINE, *_MEMORY,
    ("status", pa.string()), ("error_type", pa.string()), ("error", pa.string()),
    ("started_at", _UTC), ("finished_at", _UTC),
    # JSON: the method's typed configuration, and what its stage measured beyond accuracy (e.g. CTS's final λ)
    ("settings", pa.string()), ("measurements", pa.string()),
    ("versions", pa.string()), ("schema_version", pa.int32()),
])

CURVES = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("method", pa.string()), ("target_sparsity", pa.float64()),
    ("label", pa.string()), ("seed", pa.int64()), ("phase", pa.string()),
    ("epoch", pa.float64()), ("iteration", pa.int64()), ("train_loss", pa.float64()), ("lr", pa.float64()),
    ("val_accuracy", pa.float64()), ("val_loss", pa.float64()),
    ("test_accuracy", pa.float64()), ("test_loss", pa.float64()),
    # CTS search epochs (phase "search"): the objective and the expected kept fraction Σσ(s)/d
    ("objective", pa.float64()), ("expected_kept_fraction", pa.float64()),
    ("schema_version", pa.int32()),
])

# A tune stage's search (orchestrator/tuning): one row per configuration tried.
TUNING = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("method", pa.string()), ("trial", pa.int32()),
    ("config", pa.string()),         # JSON {knob: value}
    ("reports", pa.string()),        # JSON [[epochs, validation accuracy], ...]: what ASHA saw
    ("epochs", pa.float64()), ("max_epochs", pa.float64()),
    ("seconds", pa.float64()),       # the trial's wall time as Tune measures it
    ("work_seconds", pa.float64()),  # of which its own stages (the rest is set-up and Tune's own overhead)
    ("score", pa.float64()),         # mean validation accuracy at the tuning sparsities and seeds (completed only)
    ("completed", pa.bool_()), ("diverged", pa.bool_()), ("chosen", pa.bool_()), ("error", pa.string()),
    ("schema_version", pa.int32()),
])

STAGES = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("token", pa.string()),
    ("kind", pa.string()), ("label", pa.string()), ("method", pa.string()), ("target_sparsity", pa.float64()),
    ("seed", pa.int64()), ("parents", pa.string()), ("seconds", pa.float64()), *_WORK,
    ("host", pa.string()), ("device", pa.string()), *_MACHINE, *_MEMORY, ("status", pa.string()),
    ("error_type", pa.string()), ("error", pa.string()),
    ("started_at", _UTC), ("finished_at", _UTC),
    # How many rows this attempt's views hold, so a missing view is noticed without reading the payload.
    ("n_points", pa.int32()), ("n_curve", pa.int32()), ("n_trials", pa.int32()),
    ("schema_version", pa.int32()),
    ("points", pa.list_(pa.struct(list(POINTS) + [pa.field("method", pa.string())]))),
    ("curve", pa.list_(pa.struct(list(CURVES)))),
    ("trials", pa.list_(pa.struct(list(TUNING)))),
])

# A sweep's plan as submitted: one row per stage (orchestrator/plans.py); the newest file is the current plan.
PLANS = pa.schema([
    ("stage_key", pa.string()), ("kind", pa.string()), ("method", pa.string()), ("target_sparsity", pa.float64()),
    ("seed", pa.int64()), ("requested", pa.bool_()), ("planned_at", _UTC),
])

TABLES = {"points": POINTS, "stages": STAGES, "curves": CURVES, "tuning": TUNING}
# The columns a table's directory names give (hive partitions), which its files do not hold.
PARTITIONS = {"points": ("sweep", "method"), "stages": ("sweep",), "curves": ("sweep",), "tuning": ("sweep",)}
PAYLOAD = ("points", "curve", "trials")
# Within one committed attempt, these columns identify a row (so compaction overlaps never duplicate one).
ROW_IDENTITY = {"stages": ["stage_key", "attempt"], "points": ["stage_key", "attempt"],
                "curves": ["stage_key", "attempt", "phase", "epoch"], "tuning": ["stage_key", "attempt", "trial"]}


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name if it has none)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def open_store(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a local path or a URI; one line naming the location if unusable."""
    try:
        if "://" in location:
            fs, root = pafs.FileSystem.from_uri(location)
        else:
            fs, root = pafs.LocalFileSystem(), os.path.abspath(location)
        info = fs.get_file_info(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise StoreError(f"store {location}: cannot open ({one_line(err)})") from None
    if info.type == pafs.FileType.File:
        raise StoreError(f"store {location}: is a file, expected a directory")
    if info.type == pafs.FileType.NotFound and isinstance(fs, pafs.LocalFileSystem):
        above = os.path.dirname(root)
        while not os.path.exists(above):  # the first ancestor that exists must be a directory to create it in
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise StoreError(f"store {location}: {above} is a file, expected a directory")
    return fs, root.rstrip("/")


def attempt_name(key: str, attempt: int, token: str | None) -> str:
    """The file name (without .parquet) shared by an attempt's commit and its views; schema-1 files had no token."""
    return f"{key}-{attempt}" + (f"-{token}" if token else "")


@dataclass
class ViewFiles:
    """What a view directory holds (see ResultsStore.view_names)."""
    names: set[str]                          # attempts whose rows it holds
    files: list[pafs.FileInfo]               # its readable files of the store's own
    bad: list[tuple[str, str]]
    foreign: list[tuple[str, str]]
    merged: list[tuple[str, str]]            # (file, the compacted file that holds its rows)


class Footer(NamedTuple):
    info: pafs.FileInfo
    meta: dict | None        # the footer's key-value metadata
    columns: str | None      # why its columns cannot be the table's
    reason: str | None       # why it cannot be read
    summary: dict | None = None  # a commit's summary, parsed


@dataclass
class Scan:
    """Rows read from one table; the files that could not be read and those the store did not write
    (path, reason); and files a compaction merged but did not delete (path, the compacted file holding them)."""
    table: pa.Table
    bad: list[tuple[str, str]] = field(default_factory=list)
    foreign: list[tuple[str, str]] = field(default_factory=list)
    merged: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ResultsStore:
    location: str

    def __post_init__(self):
        self.fs, self.root = open_store(self.location)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)  # reads are tuned for a local disk or not
        self._made_dirs: set[str] = set()  # a sweep writes thousands of files into a few directories
        self._claims: dict[str, str | None] = {}  # compacted files checked (`_compacted_claim`)

    # ------------------------------------------------------------ low-level I/O
    def _io(self, what: str, fn, *args):
        """Run a filesystem call; any I/O error becomes a one-line StoreError naming the path."""
        try:
            return fn(*args)
        except StoreError:
            raise
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"store {self.location}: cannot {what} ({one_line(err)})") from None

    def check_writable(self) -> None:
        """Create the root and prove a file can be written there, before any work starts."""
        def probe():
            self.fs.create_dir(self.root, recursive=True)
            path = f"{self.root}/.probe-{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(path) as f:
                f.write(b"ok")
            self.fs.delete_file(path)
        self._io(f"write to {self.root}", probe)

    def list_dir(self, base: str, recursive: bool = False) -> list[pafs.FileInfo]:
        """What a directory of the store holds ([] if it is missing). On a local disk nothing is listed through a
        symbolic link: a link is listed as itself (type Unknown), and a `base` reached through one holds nothing."""
        def ls():
            if self._local:
                if self._link_on_the_way(base) is not None or not os.path.isdir(base):
                    return []
                return _local_listing(base, recursive)
            if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
                return []
            return self.fs.get_file_info(pafs.FileSelector(base, recursive=recursive))
        return self._io(f"list {base}", ls)

    def _link_on_the_way(self, path: str) -> str | None:
        """The first symbolic link between the store's root (which may be one) and `path`, itself included."""
        if not self._local or not path.startswith(self.root + "/"):
            return None
        here = self.root
        for part in self._rel(path).split("/"):
            here = f"{here}/{part}"
            if os.path.islink(here):
                return here
            if not os.path.exists(here):
                return None
        return None

    def check_no_link(self, path: str) -> None:
        """Refuse to write `path` through a symbolic link: what the store writes stays inside it."""
        link = self._link_on_the_way(path)
        if link is not None:
            raise StoreError(f"store {self.location}: {link} is a symbolic link, and the store never writes through "
                             f"one (remove it, or let submit move it to quarantine)")

    def exists(self, path: str) -> bool:
        return self._io(f"stat {path}", self.fs.get_file_info, path).type != pafs.FileType.NotFound

    def put_bytes(self, path: str, data: bytes) -> None:
        """Write a new file atomically (hidden temporary name, then rename); an existing file is an error."""
        def put():
            directory, name = path.rsplit("/", 1)
            if directory not in self._made_dirs:
                self.check_no_link(directory)
                self.fs.create_dir(directory, recursive=True)
                self._made_dirs.add(directory)
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise StoreError(f"store {self.location}: refusing to overwrite {path}")
            tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)
        self._io(f"write {path}", put)

    def get_bytes(self, path: str) -> bytes:
        def get():
            with self.fs.open_input_stream(path) as f:
                return f.read()
        return self._io(f"read {path}", get)

    def _put_table(self, path: str, table: pa.Table, small: bool = True) -> None:
        buf = io.BytesIO()
        if small:  # one attempt's rows: statistics, dictionaries and compression cost more than they save
            pq.write_table(table, buf, write_statistics=False, compression="NONE", use_dictionary=False)
        else:
            pq.write_table(table, buf)
        self.put_bytes(path, buf.getvalue())

    def _dir(self, table: str, sweep: str | None = None, method: str | None = None) -> str:
        return "/".join([self.root, table] + ([f"sweep={sweep}"] if sweep else [])
                        + ([f"method={method}"] if method else []))

    # ------------------------------------------------------------ the commit protocol
    def commit(self, sweep: str, key: str, attempt: int, stage_row: dict, points: list[dict],
               curve: list[dict], log: str | None = None, trials: list[dict] = ()) -> str:
        """Commit one stage attempt: its commit file (the single atomic step), then its views, then its log.

        Returns the attempt's name. A crash after the commit file leaves views that `materialize` re-creates.
        """
        token = uuid.uuid4().hex[:12]
        stamp = {"stage_key": key, "attempt": attempt, "schema_version": SCHEMA_VERSION}
        row = {**stage_row, **stamp, "token": token, "n_points": len(points), "n_curve": len(curve),
               "n_trials": len(trials), "points": [{**p, **stamp} for p in points],
               "curve": [{**c, **stamp} for c in curve], "trials": [{**t, **stamp} for t in trials]}
        name = attempt_name(key, attempt, token)
        summary = {c: row.get(c) for c in SUMMARY_COLUMNS}
        summary["finished_at"] = summary["finished_at"].isoformat() if summary["finished_at"] else None
        table = _table([row], STAGES).replace_schema_metadata({SUMMARY_KEY: json.dumps(summary)})
        self._put_table(f"{self._dir('stages', sweep)}/{name}.parquet", table)
        self.materialize(sweep, row)
        if log:
            path = f"{self.root}/logs/sweep={sweep}/{key}-{attempt}.log"
            if not self.exists(path):
                self.put_bytes(path, log.encode("utf-8", "replace"))
        return name

    def materialize(self, sweep: str, commit_row: dict) -> int:
        """Write the views of one committed attempt that are not there yet; returns how many were written."""
        name = attempt_name(commit_row["stage_key"], commit_row["attempt"], commit_row.get("token"))
        written = 0
        by_method: dict[str, list[dict]] = {}
        for p in commit_row.get("points") or []:
            by_method.setdefault(p["method"], []).append({k: v for k, v in p.items() if k != "method"})
        targets = [(f"{self._dir('points', sweep, m)}/{name}.parquet", rows, POINTS) for m, rows in by_method.items()]
        if commit_row.get("curve"):
            targets.append((f"{self._dir('curves', sweep)}/{name}.parquet", list(commit_row["curve"]), CURVES))
        if commit_row.get("trials"):
            targets.append((f"{self._dir('tuning', sweep)}/{name}.parquet", list(commit_row["trials"]), TUNING))
        for path, rows, schema in targets:
            if self.exists(path):
                continue
            self._put_table(path, _table(rows, schema))
            written += 1
        return written

    # ------------------------------------------------------------ listing and reading
    def list_files(self, table: str, sweep: str | None = None) -> list[pafs.FileInfo]:
        """The table's Parquet files that the layout names (temporaries and foreign files left out), by path."""
        return sorted((f for f in self.list_dir(self._dir(table, sweep), recursive=True) if f.type == pafs.FileType.File
                       and classify(self._rel(f.path), False)[0] in TABLE_KINDS), key=lambda f: f.path)

    def _rel(self, path: str) -> str:
        return path[len(self.root) + 1:]

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
            if info.type == pafs.FileType.Directory and info.base_name in _LISTED:
                infos += self.list_dir(info.path, recursive=True)
        entries = [_entry(info, self._rel(info.path)) for info in sorted(infos, key=lambda f: f.path)]
        sweeps = claimed_sweeps(entries) | ({sweep} if sweep else set())
        out, foreign_dirs = [], set()
        for e in entries:  # parents sort before their children
            if foreign_dirs and any(a in foreign_dirs for a in _ancestors(e.rel)):
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
        time and peak memory (measured: 1.0 s / +140 MB vs 1.7 s / +400 MB for 3 000 files); a large local scan
        reads its chunks in worker processes (orchestrator/read_processes.py), object storage in threads.
        """
        schema = TABLES[table]
        wanted = [c for c in (columns or schema.names) if c in schema.names]
        for _ in range(10):
            paths = files if files is not None else [f.path for f in self.list_files(table, sweep)]
            gathered = self._in_workers("scan", (table, wanted), paths)
            if gathered is None and self._local:
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
            return Scan(_empty(schema, wanted + list(PARTITIONS[table])), bad, foreign)
        return Scan(pa.concat_tables(parts), bad, foreign)

    def _in_workers(self, kind: str, args: tuple, paths: list[str]) -> list | None:
        """Per-chunk answers of `read_processes` for these paths when a local read is large enough to pay for
        worker processes; None when the caller is to read them itself (too few, object storage, or a worker
        failed)."""
        if not (self._local and read_processes.worth_it(len(paths))):
            return None
        return read_processes.map_chunks(kind, self.root, args, _chunks(paths))

    def read_chunk(self, table: str, wanted: list[str], paths: list[str], each=map):
        """One chunk of a scan (`each` maps the per-file read over it): (its rows as one table or None, bad
        files, foreign files, whether one vanished)."""
        rows, bad, foreign, vanished = [], [], [], False
        for path, (t, reason, why) in zip(paths, list(each(lambda p: self._read_one(p, table, wanted), paths))):
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

    def _read_one(self, path: str, table: str, wanted: list[str]) -> tuple[pa.Table | None, str | None, str | None]:
        """(rows, why unreadable, why foreign) of one file; its rows are checked against its name."""
        schema = TABLES[table]
        try:
            with self.fs.open_input_file(path) as f:
                # Pre-buffering coalesces a file's column reads into few requests: it pays on object storage,
                # where each is a round trip, and costs 40 % of a small file's read on a local disk (measured).
                pf = pq.ParquetFile(f, pre_buffer=not self._local)
                arrow_schema = pf.schema_arrow
                present = arrow_schema.names
                why = _foreign_columns(table, arrow_schema)
                if why is not None:
                    return None, None, why
                t = pf.read(columns=[c for c in dict.fromkeys(wanted + ["stage_key", "attempt"]) if c in present],
                            use_threads=False)
                sources = (pf.metadata.metadata or {}).get(SOURCES_KEY)
        except FileNotFoundError:
            return None, "vanished", None
        except (OSError, pa.ArrowException, ValueError) as err:
            return None, one_line(err), None
        rel = self._rel(path)
        try:
            why = _foreign_rows(table, *classify(rel, False), t, sources)
            if t.schema.equals(_wanted_schema(table, tuple(wanted))):  # nearly every file: nothing to conform
                arrays = t.columns
            else:  # files of an older schema version lack newer columns: they read as nulls
                arrays = [_conform(t.column(c), schema.field(c).type) if c in present
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
            return Scan(_dedup(s.table, ["sweep", "stage_key", "attempt", "token"]), s.bad, s.foreign)
        parts, found = [], Scan(pa.table({}))
        for name in ([sweep] if sweep else self.sweeps()):
            s = self._summaries(name, needed, files if sweep else None)
            parts.append(s.table)
            found.bad += s.bad
            found.foreign += s.foreign
            found.merged += s.merged
        t = pa.concat_tables(parts) if parts else _empty(STAGES, needed + ["sweep"])
        found.table = _dedup(t, ["sweep", "stage_key", "attempt", "token"])
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
                threads = _LOCAL_FOOTER_THREADS if self._local else _READ_THREADS
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
                return meta, _foreign_parquet_schema(table, md, raw), None, None
            # A commit is checked by its summary or, without one, when scanned.
            return meta, None, None, _summary(meta)
        except FileNotFoundError:
            return None, None, "vanished", None
        except (OSError, pa.ArrowException, ValueError) as err:
            return None, None, one_line(err), None

    def _checked_footers(self, table: str, sweep: str, infos: list[pafs.FileInfo] | None) -> tuple[Scan, list[Footer]]:
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
        found.merged = _merged_leftovers(good)
        return found, good

    def _foreign_footer(self, table: str, f: Footer) -> str | None:
        kind, parts = classify(self._rel(f.info.path), False)
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
        """Why a compacted file's rows are not those its footer lists as merged (`_claim_mismatch`), from its
        identity columns; remembered by path (a compacted file's name is new and never rewritten), since checks
        and reads meet the same few files often."""
        if info.path not in self._claims:
            _, reason, why = self._read_one(info.path, table, [])
            if reason == "vanished":
                return None  # merged into a newer file meanwhile: the reader lists again
            self._claims[info.path] = why if reason is None else f"rows that cannot be read ({reason})"
        return self._claims[info.path]

    def _summaries(self, sweep: str, columns: list[str], infos: list[pafs.FileInfo] | None = None) -> Scan:
        for _ in range(10):
            found, good = self._checked_footers("stages", sweep, infos)
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
            t = _dedup(_only_committed(s.table, log.table), ["sweep"] + ROW_IDENTITY[table])
        if warn:
            for path, reason in skipped:
                print(f"warning: skipping store file {path}: {reason}", file=sys.stderr)
        import pandas as pd

        df = t.to_pandas()
        for col in PARTITIONS[table]:
            if col not in df:
                df[col] = pd.Series(dtype=object)
        return df

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
        found, good = self._checked_footers(table, sweep, files)
        names = set()
        for f in good:
            if SOURCES_KEY in f.meta:
                names.update(json.loads(f.meta[SOURCES_KEY]))
            else:
                names.add(f.info.base_name[:-len(".parquet")])
        return ViewFiles(names, [f.info for f in good], found.bad, found.foreign, found.merged)

    # ------------------------------------------------------------ repair and compaction
    def quarantine(self, path: str, stamp: str) -> str | None:
        """Move a file or directory aside under quarantine/<stamp>/ (never deleted), so readers stop meeting it.
        A symbolic link is moved as itself: what it points to is never touched. Returns where it went, or None
        if another process moved it first."""
        target = f"{self.root}/quarantine/{stamp}/{self._rel(path)}"
        self.check_no_link(target)
        if self._local and os.path.islink(path):
            self.check_no_link(path.rsplit("/", 1)[0])
            def move_link():
                os.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                try:
                    os.rename(path, target)  # rename(2) moves the link, never its target
                except FileNotFoundError:
                    return None  # moved by another process meanwhile
                return target
            return self._io(f"move {path} to quarantine", move_link)
        self.check_no_link(path)
        info = self._io(f"stat {path}", self.fs.get_file_info, path)
        if info.type == pafs.FileType.NotFound:
            return None  # another process moved it first
        if info.type == pafs.FileType.Directory and not isinstance(self.fs, pafs.LocalFileSystem):
            # Object stores move single objects only: move what the directory holds, then drop its marker.
            def files():
                inside = self._io(f"list {path}", self.fs.get_file_info, pafs.FileSelector(path, recursive=True))
                return [f.path for f in inside if f.type == pafs.FileType.File]
            for f in files():
                self.quarantine(f, stamp)
            if not files():  # only markers are left (a file written meanwhile stays where it is)
                self._io(f"remove the emptied {path}", self.fs.delete_dir, path)
            return target
        self._io(f"create {target.rsplit('/', 1)[0]}", self.fs.create_dir, target.rsplit("/", 1)[0])
        try:
            self.fs.move(path, target)
        except FileNotFoundError:
            return None  # moved by another process meanwhile
        except (OSError, pa.ArrowException) as err:
            raise StoreError(f"store {self.location}: cannot move {path} to quarantine ({one_line(err)})") from None
        return target

    def sweeps(self) -> list[str]:
        return sorted(f.base_name.partition("=")[2] for f in self.list_dir(f"{self.root}/stages")
                      if f.type == pafs.FileType.Directory and f.base_name.startswith("sweep="))

    def finish_compaction(self, merged: list[tuple[str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
        """Delete each file an interrupted compaction merged but left, once every row it holds is found in the
        compacted file that lists it. Returns (deleted, kept with the reason)."""
        held: dict[str, set | None] = {}
        deleted, kept = [], []
        for path, holder in merged:
            table = self._rel(path).split("/", 1)[0]
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
        t, reason, _ = self._read_one(path, table, ROW_IDENTITY[table])
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
            found, good = self._checked_footers(table, sweep, None)
            deleted, kept = self.finish_compaction(found.merged)
            left_out = set(deleted) | {p for p, _ in kept}
            by_dir: dict[str, list[Footer]] = {}
            for f in good:
                if f.info.path not in left_out:
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
                if table != "stages" and _only_committed(t, log).num_rows != t.num_rows:
                    continue
                t = _dedup(t, ROW_IDENTITY[table])
                merged = [f for f in footers if f.info.path not in skipped]
                sources = set()
                for f in merged:
                    sources.update(json.loads(f.meta[SOURCES_KEY]) if SOURCES_KEY in f.meta
                                   else [f.info.base_name[:-len(".parquet")]])
                t = t.replace_schema_metadata({SOURCES_KEY: json.dumps(sorted(sources))})
                self._put_table(f"{directory}/{COMPACTED_PREFIX}{uuid.uuid4().hex[:12]}.parquet", t, small=False)
                fault.step("written")
                for f in merged:
                    self._delete_merged(f.info.path)
                    fault.step("deleted")
                merged_before, written_before = out.get(self._rel(directory), (0, 0))
                out[self._rel(directory)] = (merged_before + len(merged), written_before + 1)
        return out


# Test-only fault injection (tests/test_store_faults.py), never set otherwise: with
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


def _merged_leftovers(footers: list[Footer]) -> list[tuple[str, str]]:
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


def _summary(meta: dict) -> dict | None:
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


def _foreign_parquet_schema(table: str, md: pq.FileMetaData, meta: dict) -> str | None:
    """`_foreign_columns` of a file from its footer. Files written by pyarrow carry their Arrow schema in the
    footer, and nearly every file of a table has one of a few: those found sound are remembered by those bytes,
    which costs nothing to compare (reading the Parquet schema would cost a fifth of the footer read)."""
    arrow = meta.get(b"ARROW:schema")
    sound = _SOUND_PARQUET.setdefault(table, set())
    if arrow is not None and arrow in sound:
        return None
    try:
        why = _foreign_columns(table, md.schema.to_arrow_schema())
    except (pa.ArrowException, ValueError) as err:
        return f"a schema that cannot be read ({one_line(err)})"
    if why is None and arrow is not None and len(sound) < 64:
        sound.add(arrow)
    return why


def _foreign_columns(table: str, schema: pa.Schema) -> str | None:
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


def _foreign_rows(table: str, kind: str, parts: dict[str, str], t: pa.Table,
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
        return _claim_mismatch(sources, t)
    return None


def _claim_mismatch(sources: bytes | None, t: pa.Table) -> str | None:
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
    held = {f"{k}-{a}" for k, a in set(zip(t.column("stage_key").to_pylist(), t.column("attempt").to_pylist()))}
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


def _chunks(paths: list[str]) -> list[list[str]]:
    return [paths[i:i + _SCAN_CHUNK] for i in range(0, len(paths), _SCAN_CHUNK)]


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@functools.lru_cache(maxsize=64)
def _wanted_schema(table: str, wanted: tuple[str, ...]) -> pa.Schema:
    return pa.schema([TABLES[table].field(c) for c in wanted])


def _conform(column: pa.ChunkedArray, type_: pa.DataType) -> pa.ChunkedArray:
    return column if column.type == type_ else column.cast(type_)


def _dedup(t: pa.Table, keys: list[str]) -> pa.Table:
    keys = [k for k in keys if k in t.column_names]
    if t.num_rows == 0 or not keys:
        return t
    idx = pa.array(range(t.num_rows), pa.int64())
    first = (t.select(keys).append_column("_i", idx).group_by(keys, use_threads=False)
             .aggregate([("_i", "min")]).column("_i_min"))
    return t.take(pa.array(sorted(first.to_pylist()), pa.int64())) if len(first) != t.num_rows else t


def _only_committed(rows: pa.Table, log: pa.Table) -> pa.Table:
    if rows.num_rows == 0:
        return rows
    keys = log.select(["stage_key", "attempt"]).group_by(["stage_key", "attempt"]).aggregate([])
    # A semi join keeps row order only per batch: restore it, readers and tests compare frames.
    idx = rows.append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
    kept = idx.join(keys, keys=["stage_key", "attempt"], join_type="left semi", use_threads=False)
    return kept.sort_by("_row").drop_columns(["_row"])


def _empty(schema: pa.Schema, columns: list[str]) -> pa.Table:
    return pa.table([pa.array([], schema.field(c).type if c in schema.names else pa.string()) for c in columns],
                    names=columns)


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    unknown = set().union(*rows) - set(schema.names) if rows else set()
    if unknown:
        raise ValueError(f"columns not in the store schema: {sorted(unknown)}")
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}-{int(time.time() * 1000) % 1000:03d}"
