"""Versions of everything that can change a result, recorded with every row."""
from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path


@functools.lru_cache(maxsize=1)
def versions_json() -> str:
    import ray
    import torch

    try:
        package = metadata.version("ticketsweep")
    except metadata.PackageNotFoundError:
        package = "unknown"
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        git = None
    return json.dumps({"torch": torch.__version__, "ray": ray.__version__, "ticketsweep": package, "git": git},
                      sort_keys=True)
