"""'did you mean' hints for a mistyped name (a spec key, a method, a sweep)."""
from __future__ import annotations

import difflib
from typing import Iterable

_MAX_LISTED = 12  # beyond this, listing every known name is noise rather than help


def suggest(name: str, choices: Iterable[str], list_known: bool = False) -> str:
    """A suffix for an error message: "; did you mean 'seeds'?", or "" when nothing is close.

    Close means difflib's similarity, or one name being a prefix of the other ("cpus" -> "cpus_per_trial").
    With `list_known`, a name with no close match gets "; known: a, b, c" instead (when the list is short).
    """
    choices = list(dict.fromkeys(str(c) for c in choices))  # de-duplicated, in the caller's order
    name = str(name)
    close = difflib.get_close_matches(name, choices, n=2, cutoff=0.6)
    if not close and name:
        close = [c for c in choices if c.startswith(name) or name.startswith(c)][:2]
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if list_known and choices and len(choices) <= _MAX_LISTED:
        return "; known: " + ", ".join(choices)
    return ""
