"""A spec's plugin code on the cluster: the Ray runtime env that ships its `code:` paths to every worker."""
from __future__ import annotations

import logging
import os
import tempfile


def runtime_env(manifest: dict | None) -> dict | None:
    """Ray's runtime env that ships the `code:` paths to every worker (trial actors, and the tune actors whose
    Tune trials inherit it), the paths uploaded to the connected cluster now: an actor's own runtime env takes
    only URIs (Ray uploads local paths for a whole job at `ray.init`, and the driver may join a cluster it
    did not start). Ray's own upload function, as `ray.init` calls it; .gitignore files are honoured as Ray
    honours them (RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1: not). None when the spec names no code."""
    if not manifest or not manifest["code"]:
        return None
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    with tempfile.TemporaryDirectory(prefix="ticketsweep-code-") as scratch:
        return upload_py_modules_if_needed({"py_modules": list(manifest["code"])}, include_gitignore=include_gitignore,
                                           scratch_dir=scratch, logger=logging.getLogger("ray"))
