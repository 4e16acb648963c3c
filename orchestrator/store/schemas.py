"""The store's tables: their Arrow schemas, partitions and row identities, and the metadata keys of its files.

A commit file holds one row of STAGES with the attempt's rows of the other tables nested in it (`PAYLOAD`); the
views POINTS, CURVES and TUNING hold the same rows flat. PLANS is a sweep's plan as submitted
(plan_manifests.py). Readers conform older files to these schemas (`conform`): a column added later reads as
nulls.
"""
from __future__ import annotations

import functools
import math

import pyarrow as pa

SCHEMA_VERSION = 4
SOURCES_KEY = b"ticketsweep.sources"  # parquet metadata of a compacted file: the names it replaced
# Parquet metadata of a commit file: its stage row's small columns, so planning reads footers, not data.
SUMMARY_KEY = b"ticketsweep.commit"
# The work a point's standalone cost sums over its ancestors (orchestrator/run/recorder.py), read by resuming.
WORK_SUMMARY = ("train_epochs", "search_epochs", "train_flops", "search_flops")
SUMMARY_COLUMNS = ("stage_key", "attempt", "token", "kind", "method", "status", "error_type", "seconds",
                   "n_points", "n_curve", "n_trials", "finished_at", *WORK_SUMMARY)

_UTC = pa.timestamp("us", tz="UTC")
_MEMORY = [("peak_rss_mb", pa.float64()), ("cuda_peak_mb", pa.float64())]
# A stage's machine-independent work (workers/work.py): epochs of training and of mask search; examples passed
# forward and backward in training, search and scoring; examples evaluated; FLOPs of the masked network per
# phase (a tune stage: the sum over its configurations, TUNING). Null in stores written before schema 4, for
# failed attempts, and for tune stages written before their trials counted work.
_WORK = [("train_epochs", pa.float64()), ("search_epochs", pa.float64()), ("forward_examples", pa.int64()),
         ("backward_examples", pa.int64()), ("eval_examples", pa.int64()), ("train_flops", pa.int64()),
         ("search_flops", pa.int64()), ("eval_flops", pa.int64())]
WORK_COLUMNS = tuple(name for name, _ in _WORK)  # what a stage's meta["work"] holds (workers/work.py Meter.totals)
WORK_FRACTIONAL = tuple(name for name, kind in _WORK if pa.types.is_floating(kind))  # epochs; the rest are counts
# The machine a stage ran on (workers/machine.py; `host` is older): CPU model, logical cores, GPU model, torch's
# threads, and the 1-minute load average at the stage's start and end. Null before schema 4.
_MACHINE = [("cpu_model", pa.string()), ("logical_cores", pa.int32()), ("gpu_model", pa.string()),
            ("torch_threads", pa.int32()), ("load_start", pa.float64()), ("load_end", pa.float64())]

POINTS = pa.schema([
    ("point_key", pa.string()), ("stage_key", pa.string()), ("attempt", pa.int32()),
    ("criterion", pa.string()), ("objective", pa.string()), ("model", pa.string()), ("dataset", pa.string()),
    ("seed", pa.int64()), ("target_sparsity", pa.float64()), ("sparsity", pa.float64()), ("level", pa.int32()),
    ("requested", pa.bool_()),
    ("test_accuracy", pa.float64()), ("test_loss", pa.float64()),
    # The evaluation with the best validation accuracy (earliest on ties): its epoch, validation accuracy and
    # test accuracy. Without a validation split, the last evaluation.
    ("val_accuracy", pa.float64()), ("selected_epoch", pa.float64()), ("selected_test_accuracy", pa.float64()),
    # The accuracies as counts (exact paired tests: orchestrator/analysis/stats.py): correct examples at the end, at the
    # selected evaluation, and on the validation split there, out of test_examples / val_examples; and the
    # class count (chance accuracy is 1 / num_classes). Null in stores written before they existed, and for a
    # split that is absent.
    ("test_correct", pa.int64()), ("selected_test_correct", pa.int64()), ("val_correct", pa.int64()),
    ("test_examples", pa.int64()), ("val_examples", pa.int64()), ("num_classes", pa.int64()),
    ("dense_test_accuracy", pa.float64()),
    ("search_seconds", pa.float64()), ("retrain_seconds", pa.float64()),
    ("marginal_seconds", pa.float64()), ("standalone_seconds", pa.float64()),
    # The point's work from scratch, as standalone_seconds sums seconds: its stage's and its cost ancestors'
    # train + search epochs, and train + search FLOPs; null where any of them lacks a count.
    *_WORK, ("standalone_epochs", pa.float64()), ("standalone_flops", pa.int64()),
    ("device", pa.string()), ("gpu_fraction", pa.float64()), ("host", pa.string()), *_MACHINE, *_MEMORY,
    ("status", pa.string()), ("error_type", pa.string()), ("error", pa.string()),
    ("started_at", _UTC), ("finished_at", _UTC),
    # JSON: the method's typed configuration, and what its stage measured beyond accuracy (e.g. CTS's final λ)
    ("settings", pa.string()), ("measurements", pa.string()),
    ("versions", pa.string()), ("schema_version", pa.int32()),
])

CURVES = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("method", pa.string()), ("target_sparsity", pa.float64()),
    ("label", pa.string()), ("seed", pa.int64()), ("phase", pa.string()),
    ("epoch", pa.float64()), ("iteration", pa.int64()), ("train_loss", pa.float64()), ("lr", pa.float64()),
    ("val_accuracy", pa.float64()), ("val_loss", pa.float64()),
    ("test_accuracy", pa.float64()), ("test_loss", pa.float64()),
    # CTS search epochs (phase "search"): the objective and the expected kept fraction Σσ(s)/d
    ("objective", pa.float64()), ("expected_kept_fraction", pa.float64()),
    ("schema_version", pa.int32()),
])

# A tune stage's search (orchestrator/tuning): one row per configuration tried.
TUNING = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("method", pa.string()), ("trial", pa.int32()),
    ("config", pa.string()),         # JSON {knob: value}
    ("reports", pa.string()),        # JSON [[epochs, validation accuracy], ...]: what ASHA saw
    ("epochs", pa.float64()), ("max_epochs", pa.float64()),
    ("seconds", pa.float64()),       # the trial's wall time as Tune measures it
    ("work_seconds", pa.float64()),  # of which its own stages (the rest is set-up and Tune's own overhead)
    # The work it ran (its last attempt; stopped by ASHA: up to its last report), summed by the tune stage's row.
    *_WORK,
    ("score", pa.float64()),         # mean validation accuracy at the tuning sparsities and seeds (completed only)
    ("completed", pa.bool_()), ("diverged", pa.bool_()), ("chosen", pa.bool_()), ("error", pa.string()),
    ("schema_version", pa.int32()),
])

STAGES = pa.schema([
    ("stage_key", pa.string()), ("attempt", pa.int32()), ("token", pa.string()),
    ("kind", pa.string()), ("label", pa.string()), ("method", pa.string()), ("target_sparsity", pa.float64()),
    ("seed", pa.int64()), ("parents", pa.string()), ("seconds", pa.float64()), *_WORK,
    ("host", pa.string()), ("device", pa.string()), *_MACHINE, *_MEMORY, ("status", pa.string()),
    ("error_type", pa.string()), ("error", pa.string()),
    ("started_at", _UTC), ("finished_at", _UTC),
    # How many rows this attempt's views hold, so a missing view is noticed without reading the payload.
    ("n_points", pa.int32()), ("n_curve", pa.int32()), ("n_trials", pa.int32()),
    ("schema_version", pa.int32()),
    ("points", pa.list_(pa.struct(list(POINTS) + [pa.field("method", pa.string())]))),
    ("curve", pa.list_(pa.struct(list(CURVES)))),
    ("trials", pa.list_(pa.struct(list(TUNING)))),
])

# A sweep's plan as submitted: one row per stage (plan_manifests.py); the newest file is the current plan.
PLANS = pa.schema([
    ("stage_key", pa.string()), ("kind", pa.string()), ("method", pa.string()), ("target_sparsity", pa.float64()),
    ("seed", pa.int64()), ("requested", pa.bool_()), ("planned_at", _UTC),
])

TABLES = {"points": POINTS, "stages": STAGES, "curves": CURVES, "tuning": TUNING}
# The columns a table's directory names give (hive partitions), which its files do not hold.
PARTITIONS = {"points": ("sweep", "method"), "stages": ("sweep",), "curves": ("sweep",), "tuning": ("sweep",)}
PAYLOAD = ("points", "curve", "trials")
# Within one committed attempt, these columns identify a row (so compaction overlaps never duplicate one).
ROW_IDENTITY = {"stages": ["stage_key", "attempt"], "points": ["stage_key", "attempt"],
                "curves": ["stage_key", "attempt", "phase", "epoch"], "tuning": ["stage_key", "attempt", "trial"]}


@functools.lru_cache(maxsize=64)
def wanted_schema(table: str, wanted: tuple[str, ...]) -> pa.Schema:
    return pa.schema([TABLES[table].field(c) for c in wanted])


def conform(column: pa.ChunkedArray, type_: pa.DataType) -> pa.ChunkedArray:
    return column if column.type == type_ else column.cast(type_)


def empty_table(schema: pa.Schema, columns: list[str]) -> pa.Table:
    return pa.table([pa.array([], schema.field(c).type if c in schema.names else pa.string()) for c in columns],
                    names=columns)


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    unknown = set().union(*rows) - set(schema.names) if rows else set()
    if unknown:
        raise ValueError(f"columns not in the store schema: {sorted(unknown)}")
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)


def total_work(rows: list[dict]) -> dict:
    """The work of these rows together, as one row's work columns: epochs summed exactly rounded (so equal work
    is an equal number whatever the order), counts as integers; every column null where any row lacks any
    count (None or NaN), since a sum over the counted rows would pass for the whole."""
    if not rows or any(r.get(c) is None or r[c] != r[c] for r in rows for c in WORK_COLUMNS):
        return dict.fromkeys(WORK_COLUMNS)
    return {c: math.fsum(r[c] for r in rows) if c in WORK_FRACTIONAL else sum(int(r[c]) for r in rows)
            for c in WORK_COLUMNS}
