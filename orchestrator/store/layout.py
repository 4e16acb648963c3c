"""The store's layout: every path a store may hold, what kind of file each is, and the one place paths are made.

`LAYOUT` lists every path the store writes, relative to its root (under a local path or a pyarrow filesystem URI
such as s3://bucket/x). Every module that writes or finds a file of the store makes its path here
(`layout_path`, `layout_dir`, `table_dir`), so the layout is typed once; anything else found in a store is
foreign (`classify`, `entry`): `orchestrate status` names it, `submit` moves it to quarantine/.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from datetime import datetime, timezone
from typing import NamedTuple

import pyarrow.fs as pafs

COMPACTED_PREFIX = "compacted-"  # the name of a compacted file begins so (see LAYOUT)


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
    ("plan", "plans/sweep=<sweep>/plan-<attempt>-<token>.parquet"),      # a plan as submitted (plan_manifests.py)
    ("log", "logs/sweep=<sweep>/<key>-<attempt>.log"),
    ("artifact", "artifacts/<key>/outputs.pt"),                # weights and masks (artifacts.py)
    ("checksum", "artifacts/<key>/outputs.pt.sha256"),         # its size and SHA-256, written after it
    ("lease", "leases/<sweep>.json"),                          # lease.py
    ("stop request", "leases/<sweep>.stop"),                   # lease.py: `cancel` asking a driver to stop
    ("job", "jobs/<sweep>.json"),                              # deploy/detached.py
    ("decision log", "decisions/sweep=<sweep>/look-<attempt>.json"),  # analysis/decision_log.py: one file per look
    ("quarantine", "quarantine/**"),                           # files moved aside, never deleted
)
_PARTS = {"sweep": r"[A-Za-z0-9_.-]+",  # sweep_spec.py's rule for sweep names
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
LISTED = {p.split("/")[0] for _, p in LAYOUT if not p.endswith("/**")}


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

def _pattern(kind: str | None, top: str | None = None) -> str:
    """The first LAYOUT pattern of `kind` (any kind if None) whose first directory is `top` (any if None)."""
    for k, pattern in LAYOUT:
        if (kind is None or k == kind) and (top is None or pattern.split("/", 1)[0] == top):
            return pattern
    raise KeyError(f"no {kind or 'file'} in the store's layout" + (f" under {top}/" if top else ""))


def _fill(pattern: str, parts: dict) -> str:
    if pattern.endswith("/**"):  # anything below: the caller names it as `rest`
        pattern = pattern[:-2] + "<rest>"
    return re.sub(r"<(\w+)>", lambda m: str(parts[m.group(1)]), pattern)


def layout_path(root: str, kind: str, top: str | None = None, **parts) -> str:
    """The path of a file of `kind` (its first LAYOUT pattern, under `top` if given) under `root`, its <part>s
    filled in (`rest` for what lies below a pattern ending in **)."""
    return f"{root}/" + _fill(_pattern(kind, top), parts)


def layout_dir(root: str, kind: str, top: str | None = None, **parts) -> str:
    """The directory that holds the files of `kind` (as `layout_path`), its <part>s filled in."""
    return f"{root}/" + _fill(_pattern(kind, top).rsplit("/", 1)[0], parts)


def file_name(kind: str, top: str, **parts) -> str:
    """The name, without its directory, of a file of `kind` under `top`."""
    return _fill(_pattern(kind, top).rsplit("/", 1)[1], parts)


def table_dir(root: str, table: str, sweep: str | None = None, method: str | None = None) -> str:
    """A table's directory; with `sweep`, that sweep's partition of it (and with `method`, that method's)."""
    components = _pattern(None, table).split("/")[:-1]
    given = {"sweep": sweep, "method": method}
    out = components[:1]
    for component in components[1:]:
        m = re.fullmatch(r"(\w+)=<(\w+)>", component)
        if m is None or given.get(m.group(2)) is None:
            break
        out.append(f"{m.group(1)}={given[m.group(2)]}")
    return f"{root}/" + "/".join(out)


def attempt_name(key: str, attempt: int, token: str | None) -> str:
    """The file name (without .parquet) shared by an attempt's commit and its views; schema-1 files had no token."""
    return f"{key}-{attempt}" + (f"-{token}" if token else "")


def temporary_name(name: str) -> str:
    """A hidden name to write `name` under before renaming it into place (a TEMPORARY while it exists)."""
    return f".{name}.{uuid.uuid4().hex}.tmp"


def utc_stamp() -> str:
    """A name for one repair's quarantine/ directory: the time, this process and its millisecond."""
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{os.getpid()}-{int(time.time() * 1000) % 1000:03d}"


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


def entry(info: pafs.FileInfo, rel: str) -> Entry:
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


def ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]
