"""A stage's own log in the store, `<store>/logs/sweep=<sweep>/<stage_key>-<attempt>.log`, found by key prefix."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow.fs as pafs

from orchestrator.store.files import StoreError, open_store
from orchestrator.store.layout import layout_dir


class LogNotFound(ValueError):
    """No log, or no single stage, answers the request; the message is one line naming the option."""


@dataclass(frozen=True)
class StageLog:
    stage_key: str
    attempt: int
    path: str
    text: str


def logs_dir(root: str, sweep: str) -> str:
    return layout_dir(root, "log", sweep=sweep)


def attempts(location: str, sweep: str) -> dict[str, dict[int, str]]:
    """stage key -> attempt -> path, for every stage log of the sweep."""
    fs, root = open_store(location)
    directory = logs_dir(root, sweep)
    try:
        if fs.get_file_info(directory).type == pafs.FileType.NotFound:
            return {}
        infos = fs.get_file_info(pafs.FileSelector(directory))
    except OSError as err:
        raise StoreError(f"store {location}: cannot list {directory} ({err})") from None
    found: dict[str, dict[int, str]] = {}
    for info in infos:
        name = info.base_name
        if info.type != pafs.FileType.File or name.startswith(".") or not name.endswith(".log"):
            continue  # hidden names are writes still in progress
        key, _, attempt = name[:-len(".log")].rpartition("-")
        if key and attempt.isdigit():
            found.setdefault(key, {})[int(attempt)] = info.path
    return found


def find(location: str, sweep: str, prefix: str, attempt: int | None = None) -> StageLog:
    """The log of the one stage whose key starts with `prefix`: the given attempt, else its latest."""
    if not prefix:
        raise LogNotFound("--stage: give the start of a stage key or its label (orchestrate plan SPEC lists them)")
    logs = attempts(location, sweep)
    keys = sorted(k for k in logs if k.startswith(prefix))
    if not keys:
        raise LogNotFound(f"--stage {prefix}: no stage log of sweep {sweep} starts with it "
                          f"(in {logs_dir(location.rstrip('/'), sweep)}; orchestrate plan SPEC lists every stage's "
                          f"key and label)")
    if len(keys) > 1:
        shown = ", ".join(k[:12] for k in keys[:4]) + (", ..." if len(keys) > 4 else "")
        raise LogNotFound(f"--stage {prefix}: matches {len(keys)} stages ({shown}); give more of the key")
    key = keys[0]
    if attempt is None:
        attempt = max(logs[key])
    elif attempt not in logs[key]:
        have = ", ".join(str(a) for a in sorted(logs[key]))
        raise LogNotFound(f"--attempt {attempt}: stage {key[:12]} has logs of attempt(s) {have}")
    path = logs[key][attempt]
    fs, _ = open_store(location)
    try:
        with fs.open_input_stream(path) as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as err:
        raise StoreError(f"store {location}: cannot read {path} ({err})") from None
    return StageLog(key, attempt, path, text)
