"""A running stage's sign of life: the training loop, the mask searches and the scorers call `beat()` as they
make progress, and the trial actor reports how long the stage has been silent, so the driver can tell a hung
stage (a stopped process, a live-lock) from a slow one.

Module state on purpose: one stage runs per trial process at a time, `beat()` must cost nothing in a hot loop
(no host sync, no allocation), and the value changes no result.
"""
from __future__ import annotations

import time

_last = time.monotonic()


def beat() -> None:
    global _last
    _last = time.monotonic()


def silent_for() -> float:
    """Seconds since the last beat."""
    return time.monotonic() - _last
