"""Ten classes of noisy 8×8 glyphs read from a .npz file (make_data.py writes it beside this module, so the
file travels with the code to every worker)."""
import hashlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from workers.plugins import register_dataset

HERE = Path(__file__).resolve().parent


class GlyphOptions(BaseModel):
    file: str = Field(default="glyphs.npz", description="the .npz file, relative to this module's folder")


def _path(file: str) -> Path:
    path = HERE / file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run make_data.py first")
    return path


def load(file: str) -> dict:
    with np.load(_path(file)) as arrays:
        return {k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")} | {"num_classes": 10}


def fingerprint(file: str) -> str:
    return hashlib.sha256(_path(file).read_bytes()).hexdigest()


register_dataset("glyphs", load, train_size=1500, options=GlyphOptions, fingerprint=fingerprint)
