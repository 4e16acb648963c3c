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

    def version(name: str) -> str:
        # From the installed metadata, not by importing: the driver stays free of torch.
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"

    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        git = None
    return json.dumps({"torch": version("torch"), "ray": ray.__version__, "ticketsweep": version("ticketsweep"),
                       "git": git}, sort_keys=True)
