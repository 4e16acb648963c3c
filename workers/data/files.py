"""Which files a file dataset (one whose descriptor has a `files` layout) is read from, and a fingerprint of
their content; torch-free.

The loaders find their files here, and the planner puts the fingerprint of the same files
in the stage keys (`orchestrator/plan.py`), so changed data runs again and the same data under another path
does not. The fingerprint is the SHA-256 of each file's name and the SHA-256 of its content as the loader
reads it (a `.gz` file decompressed): the same whether a dataset sits in the root or its subfolder, plain or
gzipped, at one path or another.

Hashing reads every byte of the files, so each file's hash is cached in
`$TICKETSWEEP_CACHE/fingerprints/` (default `~/.cache/ticketsweep`), under its real path, with its size,
mtime, ctime, inode and device: an entry is used only while all five are unchanged (a rewrite changes the
ctime even when it restores the mtime), and a file modified within the last few seconds is not cached (its
next change may keep the same timestamps).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import tempfile
import time
from pathlib import Path

from workers.data.registry import get_dataset_descriptor


class DataError(ValueError):
    """A data root or file that cannot be used; the message is one line naming the path and what was expected."""


# A file changed this recently may change again within its timestamps' resolution: its hash is not cached.
_SETTLED_S = 2.0
_CHUNK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("TICKETSWEEP_CACHE") or Path.home() / ".cache" / "ticketsweep")


def default_data_root() -> Path:
    """Where file datasets are read from when a spec gives no root: $TICKETSWEEP_DATA, else
    ~/.cache/ticketsweep/data (under $TICKETSWEEP_CACHE when that is set); `orchestrate data fetch` fills it."""
    env = os.environ.get("TICKETSWEEP_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def fetch_hint(name: str, root: Path) -> str:
    return f"; `orchestrate data fetch {name} --root {shlex.quote(str(root))}` downloads them"


def data_root(root: str | None, what: str, name: str) -> Path:
    path = Path(root).expanduser() if root else default_data_root()
    if not path.is_dir():
        raise DataError(f"data root {path}: not a directory ({what} expected){fetch_hint(name, path)}")
    return path


def find_dir(root: Path, candidates: list[Path], required: list[str], what: str, gz: bool, name: str) -> Path:
    """The first candidate directory holding every required file (optionally gzipped)."""
    def present(d: Path, name: str) -> bool:
        return (d / name).is_file() or (gz and (d / f"{name}.gz").is_file())

    holding = [d for d in candidates if any(present(d, n) for n in required)]
    for d in holding:
        missing = [n for n in required if not present(d, n)]
        if not missing:
            return d
    suffix = "[.gz]" if gz else ""
    if not holding:
        places = " or ".join(str(d) for d in candidates)
        raise DataError(f"data root {root}: missing {', '.join(n + suffix for n in required)} "
                        f"({what} expected in {places}){fetch_hint(name, root)}")
    missing = [n for n in required if not present(holding[0], n)]
    raise DataError(f"data root {root}: missing {', '.join(n + suffix for n in missing)} in {holding[0]} "
                    f"({what} expected){fetch_hint(name, root)}")


def dataset_files(name: str, root: str | None) -> tuple[Path, dict[str, Path]]:
    """(the data root, {required name: the file the loader reads}) of a file dataset; DataError if absent."""
    layout = get_dataset_descriptor(name).files
    base = data_root(root, layout.what, name)
    d = find_dir(base, [base / f if f else base for f in layout.folders], list(layout.required), layout.what,
                 layout.gz, name)
    return base, {n: d / n if (d / n).is_file() else d / f"{n}.gz" for n in layout.required}


def fingerprint(name: str, root: str | None) -> str | None:
    """The content fingerprint of dataset `name` under `root`, or None for a dataset without files (a generated
    one, whose options, which the stage keys hash already, determine it). DataError when the files are missing
    or unreadable."""
    if get_dataset_descriptor(name).files is None:
        return None
    _, files = dataset_files(name, root)
    digest = hashlib.sha256()
    for required, path in files.items():
        digest.update(f"{required}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's content as read (decompressed for .gz), from the cache while the file is unchanged."""
    real, gz = os.path.realpath(path), path.name.endswith(".gz")  # the loader decompresses by the name it opens
    try:
        st = os.stat(real)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    stamp = {"path": real, "gz": gz, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
             "ino": st.st_ino, "dev": st.st_dev}
    entry = cache_dir() / "fingerprints" / f"{hashlib.sha256(f'{gz:d}{real}'.encode()).hexdigest()[:32]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in stamp} == stamp and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass  # absent or unreadable: hash the file
    try:
        value = _hash(real, gz)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    after = os.stat(real)
    settled = time.time_ns() - max(after.st_mtime_ns, after.st_ctime_ns) > _SETTLED_S * 1e9
    if settled and (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (st.st_size, st.st_mtime_ns,
                                                                            st.st_ctime_ns):
        _write_entry(entry, {**stamp, "sha256": value})
    return value


def _hash(path: str, gz: bool) -> str:
    digest = hashlib.sha256()
    with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_entry(entry: Path, record: dict) -> None:
    """Atomically (temp file, rename); a cache that cannot be written only costs hashing again next time."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=entry.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.replace(tmp, entry)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def atomic_savez(path: Path, arrays: dict) -> None:
    """Write numpy arrays to a temp file in the same directory, then rename: readers never see half a file."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

