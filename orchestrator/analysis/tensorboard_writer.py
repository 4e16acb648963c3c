"""Writes TensorBoard event files in a child process: `python -m orchestrator.analysis.tensorboard_writer < runs.json`.

A child, because every TensorBoard writer imports torch (tensorboardX's writer module does, and
torch.utils.tensorboard is torch), and the driver never does. Input on stdin: {"dir": folder, "runs": {run:
[[tag, value, step], ...]}}; one event file per run under folder/run. Exit 2 with one line when no writer
is installed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

MISSING = "needs a TensorBoard writer: pip install tensorboardX (or tensorboard)"


def available() -> str | None:
    """The writer package this machine has (looked up without importing it), or None."""
    if importlib.util.find_spec("tensorboardX") is not None:
        return "tensorboardX"
    if importlib.util.find_spec("tensorboard") is not None and importlib.util.find_spec("torch") is not None:
        return "torch.utils.tensorboard"
    return None


def main() -> int:
    which = available()
    if which is None:
        print(MISSING, file=sys.stderr)
        return 2
    if which == "tensorboardX":
        from tensorboardX import SummaryWriter
    else:
        from torch.utils.tensorboard import SummaryWriter
    job = json.load(sys.stdin)
    for run, scalars in job["runs"].items():
        writer = SummaryWriter(os.path.join(job["dir"], run))
        try:
            for tag, value, step in scalars:
                writer.add_scalar(tag, value, global_step=step)
        finally:
            writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
