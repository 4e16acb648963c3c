"""Text tables shared by `results`, `compare` and `report`: fixed-width or markdown, and csv/json records."""
from __future__ import annotations

import json
import math
from typing import Iterable, Sequence


def render(header: Sequence[str], rows: Iterable[Sequence[str]], *, left: set[int], markdown: bool,
           title: Sequence[str] = (), footer: Sequence[str] = ()) -> str:
    """Columns in `left` (names, prose) are left-aligned, the others right-aligned so decimal points line up.
    The title is left out of markdown (a heading there is the caller's), and a markdown footer is set off by a
    blank line, since a line right below a table would be read as one more row."""
    rows = [list(r) for r in rows]
    # Markdown needs at least one '-' besides the alignment colon in every separator cell.
    widths = [max(3, *(len(row[i]) for row in [list(header), *rows])) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    if markdown:
        rule = "| " + " | ".join("-" * w if i in left else "-" * (w - 1) + ":" for i, w in enumerate(widths)) + " |"
        lines = [line(header), rule, *map(line, rows)]
        return "\n".join(lines + ([""] + list(footer) if footer else []))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([*title, line(header), rule, *map(line, rows), *footer])


def json_value(v):
    """A cell as JSON: NaN and infinities (JSON has neither) as null, numpy scalars as Python numbers."""
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, float)) or hasattr(v, "item"):
        v = v.item() if hasattr(v, "item") else v
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return str(v)


PERCENT_SUFFIX = "_pct"


def records(frame, columns: list[str], fmt: str, percent: Iterable[str] = ()) -> str:
    """`frame[columns]` as csv (missing values empty) or json (a list of records, missing values null).

    The `percent` columns (accuracies, fractions in the frame) are written in percent like every table shows
    them, and their names end in `_pct` so the unit is never a guess."""
    import pandas as pd

    plain = frame[columns].copy() if not frame.empty else pd.DataFrame(columns=columns)
    percent = [c for c in columns if c in set(percent)]
    for col in percent:
        plain[col] = pd.to_numeric(plain[col], errors="coerce") * 100.0
    plain = plain.rename(columns={c: c + PERCENT_SUFFIX for c in percent})
    for col in ("sweep", "method", "method_a", "method_b"):
        if col in plain:
            plain[col] = plain[col].astype(str)
    if fmt == "csv":
        return plain.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        rows = [{k: json_value(v) for k, v in row.items()} for row in plain.to_dict(orient="records")]
        return json.dumps(rows, indent=2, allow_nan=False)
    raise ValueError(f"unknown format {fmt!r}; known: table, markdown, csv, json")


def percent(value: float, digits: int = 1, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:+.{digits}f}" if sign else f"{100 * value:.{digits}f}"
