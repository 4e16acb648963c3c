"""Stage outputs (weights, masks) persisted by stage key, on local disk or any pyarrow filesystem.

Within a run, outputs travel between stages through Ray's object store; these files
let a later `submit` resume from finished stages instead of recomputing them.
"""
from __future__ import annotations

import io
import uuid

import pyarrow.fs as pafs

from orchestrator.store import open_store


class ArtifactMissing(FileNotFoundError):
    """A finished stage's stored outputs are gone; `submit` notices this and runs that stage again."""


def _path(root: str, key: str) -> str:
    return f"{root}/artifacts/{key}/outputs.pt"


def save(location: str, key: str, outputs: dict) -> None:
    """Write once: a stage key names deterministic content, so an existing file is kept, never replaced."""
    fs, root = open_store(location)
    path = _path(root, key)
    if fs.get_file_info(path).type == pafs.FileType.File:
        return
    import torch  # here, not at the top: the driver imports this module and must stay torch-free

    directory = path.rsplit("/", 1)[0]
    fs.create_dir(directory, recursive=True)
    buf = io.BytesIO()
    torch.save(outputs, buf)
    tmp = f"{directory}/.outputs.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(buf.getvalue())
    fs.move(tmp, path)


def load(location: str, key: str) -> dict:
    fs, root = open_store(location)
    path = _path(root, key)
    try:
        with fs.open_input_file(path) as f:
            data = f.read()
    except (FileNotFoundError, OSError) as err:
        raise ArtifactMissing(f"artifact of stage {key} missing at {path}: {err}") from None
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def exists(location: str, key: str) -> bool:
    fs, root = open_store(location)
    return fs.get_file_info(_path(root, key)).type == pafs.FileType.File
