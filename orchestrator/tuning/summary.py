"""What a sweep's tuning found, per tuned method: the chosen values, the budget spent, and how sensitive the
method is to its knobs (the spread of validation accuracy over the configurations tried).

Sensitivity is measured where every configuration has a number: at each configuration's first evaluation (ASHA
stops configurations later, so final scores exist only for the survivors). Read next to `best − default`, it
is the measurement behind a claim like "needs no sensitive tuning".

Beside its seconds, each search's work: the counts its tune stage's row holds (docs/cost.md), every unit at once,
since a search has one cost and not the search/marginal/standalone triple `--cost` chooses a unit for.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from orchestrator.analysis.cost_units import WORK_PARTS
from orchestrator.analysis.frontier import cost_text
from orchestrator.analysis.text_tables import percent, records, render
from orchestrator.store.schemas import WORK_COLUMNS, total_work

SUMMARY_COLUMNS = ["sweep", "method", "chosen", "configurations", "completed", "diverged", "epochs_run",
                   "epochs_budget", "trial_seconds", "work_seconds", "first_val_min", "first_val_q25", "first_val_median",
                   "first_val_q75", "first_val_max", "first_val_iqr", "best_minus_default_first",
                   "chosen_score", "default_score", *WORK_COLUMNS]
# Validation accuracies: fractions here, percent (named ..._pct) in csv and json as in the table.
SUMMARY_PERCENT = ["first_val_min", "first_val_q25", "first_val_median", "first_val_q75", "first_val_max",
                   "first_val_iqr", "best_minus_default_first", "chosen_score", "default_score"]


def summarize(trials: pd.DataFrame, stages: pd.DataFrame, tune_keys: set[str] | None = None) -> pd.DataFrame:
    """One row per tune stage (the latest attempt of each; only `tune_keys` when given), its work from that
    attempt's row in `stages` (null where it has none or no count). Trial 0 is the method's untuned
    configuration (the search always evaluates it first)."""
    if trials.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    df = trials.copy()
    df["sweep"], df["method"] = df["sweep"].astype(str), df["method"].astype(str)
    if tune_keys is not None:
        df = df[df["stage_key"].isin(tune_keys)]
    latest = df.groupby("stage_key")["attempt"].transform("max")
    df = df[df["attempt"] == latest]
    stage_rows = {(k, int(a)): r for k, a, r in zip(stages.get("stage_key", []), stages.get("attempt", []),
                                                    stages.to_dict("records"))}
    rows = []
    for (sweep, method), g in df.groupby(["sweep", "method"], sort=True):
        g = g.sort_values("trial")
        first = pd.Series([_first_report(r) for r in g["reports"]], dtype=float)
        default = g[g["trial"] == 0]
        chosen = g[g["chosen"].astype(bool)]
        q = first.quantile([0.0, 0.25, 0.5, 0.75, 1.0]).tolist() if first.notna().any() else [math.nan] * 5
        rows.append({
            "sweep": sweep, "method": method, "chosen": chosen["config"].iloc[0] if len(chosen) else None,
            "configurations": len(g), "completed": int(g["completed"].astype(bool).sum()),
            "diverged": int(g["diverged"].astype(bool).sum()), "epochs_run": float(g["epochs"].sum()),
            "epochs_budget": float((g["max_epochs"]).sum()), "trial_seconds": float(g["seconds"].sum()),
            "work_seconds": float(g["work_seconds"].sum()),
            "first_val_min": q[0], "first_val_q25": q[1], "first_val_median": q[2], "first_val_q75": q[3],
            "first_val_max": q[4], "first_val_iqr": q[3] - q[1],
            "best_minus_default_first": (first.max() - first.iloc[0]) if len(default) and first.notna().any()
            else math.nan,
            "chosen_score": float(chosen["score"].iloc[0]) if len(chosen) else math.nan,
            "default_score": float(default["score"].iloc[0]) if len(default) else math.nan,
            **total_work([stage_rows.get((k, int(a)), {}) for k, a in
                          sorted(set(zip(g["stage_key"], g["attempt"])))]),
        })
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for c in WORK_COLUMNS:  # as Python numbers, so a count stays exact and a missing one null
        out[c] = pd.Series([r[c] for r in rows], dtype=object)
    return out


def _first_report(reports: str) -> float:
    values = json.loads(reports) if isinstance(reports, str) else []
    return float(values[0][1]) if values else math.nan


def format_summary(frame: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in ("table", "markdown"):
        return records(frame, SUMMARY_COLUMNS, fmt, percent=SUMMARY_PERCENT)
    if frame.empty:
        return "no tuning results"
    header = ["method", "chosen", "configs", "completed", "epochs run / budget", "trial s (own work)", "work ep",
              "work FLOPs",
              "val % at 1st eval: min–max", "IQR (pts)", "best − default (pts)", "chosen score %", "default score %"]
    rows = [[str(r.method), str(r.chosen), str(r.configurations), str(r.completed),
             f"{r.epochs_run:g} / {r.epochs_budget:g}", f"{r.trial_seconds:.1f} ({r.work_seconds:.1f})",
             *(cost_text(_work(r, unit), unit) for unit in ("epochs", "flops")),
             f"{percent(r.first_val_min)}–{percent(r.first_val_max)}", percent(r.first_val_iqr),
             percent(r.best_minus_default_first, sign=True), percent(r.chosen_score), percent(r.default_score)]
            for r in frame.itertuples(index=False)]
    title = [f"sweep: {', '.join(sorted(set(frame['sweep'])))}; trial 0 is each method's untuned configuration; "
             "scores: mean validation accuracy at the tuning sparsities and seeds (completed configurations); "
             "work: the training + search epochs and FLOPs its configurations ran (docs/cost.md)"]
    return render(header, rows, left={0, 1}, markdown=fmt == "markdown", title=title)


def _work(r, unit: str) -> float:
    """A summary row's work in a work unit: its train + search count (null where either is missing)."""
    return sum(math.nan if getattr(r, part) is None else float(getattr(r, part)) for part in WORK_PARTS[unit])
