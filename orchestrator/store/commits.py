"""Committing a stage attempt: one commit file, the single atomic step, then its views and its log.

Why a commit file plus views: one file is the only thing every filesystem writes atomically (a local
rename, one object-store PUT), so an attempt becomes visible all at once or not at all. The views exist so
that `pandas.read_parquet("<store>/points")` works; they are written only after their commit, so a raw
pandas read never sees an uncommitted row, and a crash between commit and view is repaired from the commit
by the next `submit` (`materialize`). Every write goes to a fresh name: nothing is ever overwritten.
`sweep` (and, in points, `method`) live only in directory names (hive partitions, `PARTITIONS`); `stages`,
`curves` and `tuning` hold `method` as a column of their own.
"""
from __future__ import annotations

import json
import uuid

from orchestrator.store.files import StoreFiles
from orchestrator.store.layout import attempt_name, layout_path, table_dir
from orchestrator.store.schemas import (CURVES, POINTS, SCHEMA_VERSION, STAGES, SUMMARY_COLUMNS, SUMMARY_KEY, TUNING,
                                        to_table)


class CommitWriter(StoreFiles):
    """The writes of a stage attempt (see the module's docstring)."""

    def commit(self, sweep: str, key: str, attempt: int, stage_row: dict, points: list[dict],
               curve: list[dict], log: str | None = None, trials: list[dict] = ()) -> str:
        """Commit one stage attempt: its commit file (the single atomic step), then its views, then its log.

        Returns the attempt's name. A crash after the commit file leaves views that `materialize` re-creates.
        """
        token = uuid.uuid4().hex[:12]
        stamp = {"stage_key": key, "attempt": attempt, "schema_version": SCHEMA_VERSION}
        row = {**stage_row, **stamp, "token": token, "n_points": len(points), "n_curve": len(curve),
               "n_trials": len(trials), "points": [{**p, **stamp} for p in points],
               "curve": [{**c, **stamp} for c in curve], "trials": [{**t, **stamp} for t in trials]}
        name = attempt_name(key, attempt, token)
        summary = {c: row.get(c) for c in SUMMARY_COLUMNS}
        summary["finished_at"] = summary["finished_at"].isoformat() if summary["finished_at"] else None
        table = to_table([row], STAGES).replace_schema_metadata({SUMMARY_KEY: json.dumps(summary)})
        self.put_table(f"{table_dir(self.root, 'stages', sweep)}/{name}.parquet", table)
        self.materialize(sweep, row)
        if log:
            path = layout_path(self.root, "log", sweep=sweep, key=key, attempt=attempt)
            if not self.exists(path):
                self.put_bytes(path, log.encode("utf-8", "replace"))
        return name

    def materialize(self, sweep: str, commit_row: dict) -> int:
        """Write the views of one committed attempt that are not there yet; returns how many were written."""
        name = attempt_name(commit_row["stage_key"], commit_row["attempt"], commit_row.get("token"))
        written = 0
        by_method: dict[str, list[dict]] = {}
        for p in commit_row.get("points") or []:
            by_method.setdefault(p["method"], []).append({k: v for k, v in p.items() if k != "method"})

        def view(table: str, method: str | None = None) -> str:
            return f"{table_dir(self.root, table, sweep, method)}/{name}.parquet"
        targets = [(view("points", m), rows, POINTS) for m, rows in by_method.items()]
        if commit_row.get("curve"):
            targets.append((view("curves"), list(commit_row["curve"]), CURVES))
        if commit_row.get("trials"):
            targets.append((view("tuning"), list(commit_row["trials"]), TUNING))
        for path, rows, schema in targets:
            if self.exists(path):
                continue
            self.put_table(path, to_table(rows, schema))
            written += 1
        return written

