"""Stage outputs (weights, masks) persisted by stage key, on local disk or any pyarrow filesystem.

Within a run, outputs travel between stages through Ray's object store; these files
let a later `submit` resume from finished stages instead of recomputing them.

Each artifact (`outputs.pt`, a torch.save archive) gets a checksum file beside it, written after it: its size
and SHA-256. The driver, which never imports torch, checks an artifact cheaply against the size (and, for
artifacts stored before checksums, reads the archive's zip directory); `load` checks the SHA-256 of what it
read, so any damage becomes `ArtifactDamaged`, which a trial records as error_type "artifact" naming the file,
and which the next `submit` repairs by quarantining the file and running its stage again.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import pyarrow.fs as pafs

from orchestrator.store.files import one_line, open_store
from orchestrator.store.layout import layout_path, temporary_name

MISSING = "missing"  # what `problem` says of an artifact that is not there


class ArtifactMissing(FileNotFoundError):
    """A finished stage's stored outputs are gone; `submit` notices this and runs that stage again."""


class ArtifactDamaged(ArtifactMissing):
    """A finished stage's stored outputs cannot be loaded: treated like missing ones (quarantined, re-made)."""

    def __init__(self, key: str, path: str, why: str):
        super().__init__(f"artifact of stage {key} damaged at {path}: {why}")
        self.key, self.path, self.why = key, path, why


_NAMED = re.compile(r"artifact of stage (\S+) (?:missing|damaged) at ")


def key_named(error: str | None) -> str | None:
    """The stage key whose artifact a recorded ArtifactMissing/ArtifactDamaged error names, if any."""
    m = _NAMED.search(error or "")
    return m.group(1) if m else None


def artifact_path(root: str, key: str) -> str:
    return layout_path(root, "artifact", key=key)


def checksum_path(root: str, key: str) -> str:
    return layout_path(root, "checksum", key=key)


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write in one step: a hidden temporary, then a rename (a reader never sees half a file)."""
    directory = path.rsplit("/", 1)[0]
    tmp = f"{directory}/{temporary_name(path.rsplit('/', 1)[1])}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def save(location: str, key: str, outputs: dict) -> None:
    """Write once: a stage key names deterministic content, so an existing file is kept, never replaced."""
    fs, root = open_store(location)
    path = artifact_path(root, key)
    if fs.get_file_info(path).type == pafs.FileType.File:
        return
    import torch  # here, not at the top: the driver imports this module and must stay torch-free

    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    buf = io.BytesIO()
    torch.save(outputs, buf)
    data = buf.getvalue()
    _put(fs, path, data)
    checksum = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _put(fs, checksum_path(root, key), json.dumps(checksum).encode())


def load(location: str, key: str) -> dict:
    fs, root = open_store(location)
    path = artifact_path(root, key)
    try:
        with fs.open_input_file(path) as f:
            data = f.read()
    except (FileNotFoundError, OSError) as err:
        raise ArtifactMissing(f"artifact of stage {key} missing at {path}: {err}") from None
    expected = _recorded(fs, root, key)
    why = _differs(len(data), lambda: hashlib.sha256(data).hexdigest(), expected) if expected else None
    if why is not None:
        raise ArtifactDamaged(key, path, why)
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch.load raises, the file is unusable
        raise ArtifactDamaged(key, path, f"{type(err).__name__}: {one_line(err)}") from None


def exists(location: str, key: str) -> bool:
    fs, root = open_store(location)
    return fs.get_file_info(artifact_path(root, key)).type == pafs.FileType.File


def problem(fs: pafs.FileSystem, root: str, key: str, size: int | None = None, checksum: bool | None = None,
            deep: bool = False) -> str | None:
    """Why the stored artifact of `key` cannot be used (MISSING, or what is damaged), or None if it can.

    Torch-free. Cheap by default: the size against the checksum file (`size` and whether a `checksum` file is
    there may come from a listing), or, without a checksum file, the archive's zip directory. `deep` reads the
    whole file: its SHA-256 against the checksum file, or every member's CRC.
    """
    path = artifact_path(root, key)
    if size is None:
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            return MISSING
        size = info.size
    expected = _recorded(fs, root, key) if checksum is not False else None
    try:
        if expected is not None:
            return _differs(size, (lambda: _file_sha256(fs, path)) if deep else None, expected)
        # Written before checksums existed, or interrupted before its checksum: a torch.save file is a zip archive.
        with fs.open_input_file(path) as f, zipfile.ZipFile(f) as archive:
            failed = archive.testzip() if deep else None
        return f"member {failed} fails its CRC check" if failed else None
    except FileNotFoundError:
        return MISSING
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        return f"{size} bytes, not a readable torch.save archive ({one_line(err)})"


def _recorded(fs: pafs.FileSystem, root: str, key: str) -> dict | None:
    """The size and SHA-256 recorded when the artifact was written; None without a usable checksum file."""
    try:
        with fs.open_input_stream(checksum_path(root, key)) as f:
            recorded = json.loads(f.read())
        return recorded if isinstance(recorded.get("size"), int) and isinstance(recorded.get("sha256"), str) else None
    except (OSError, ValueError, AttributeError):
        return None


def _differs(size: int, digest, expected: dict) -> str | None:
    """How an artifact of `size` bytes (and SHA-256 `digest()`, when given) differs from what was written."""
    if size != expected["size"]:
        return f"{size} bytes, {expected['size']} when written"
    if digest is not None and digest() != expected["sha256"]:
        return "its SHA-256 differs from the one recorded when it was written"
    return None


def _file_sha256(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
