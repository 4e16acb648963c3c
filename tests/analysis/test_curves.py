"""`orchestrate curves` and `export tensorboard` on hand-made stored rows with known means, through the CLI."""
from __future__ import annotations

import io
import math
import struct

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.analysis.curves import CURVE_COLUMNS
from orchestrator.store.results_store import ResultsStore

SWEEP = "s"
T = 4.302652729911275  # t(0.975, 2): the 95 % interval of a mean over 3 seeds is mean ± T · sd / √3
# (method, target, seed) -> validation accuracy at epochs 1 and 2; test accuracy is 0.1 lower, val loss 1 - acc
VAL = {("dense", 0.0, s): (0.5 + 0.1 * s, 0.8 + 0.01 * s) for s in range(3)}
VAL |= {("a", 0.5, s): (0.5 + 0.1 * s, 0.7) for s in range(3)}
VAL |= {("a", 0.9, s): (0.3 + 0.05 * s, 0.6 + 0.05 * s) for s in range(3)}
VAL |= {("b", 0.5, s): (0.2 + 0.2 * s, 0.5 + 0.1 * s) for s in range(3)}
VAL |= {("b", 0.9, s): (0.1, 0.2) for s in range(2)}  # seed 2 of b at 0.9 failed: its curve is not counted


def _commit(store, method, target, seed, attempt, status, val):
    key = f"{method}-{target}-{seed}"
    point = {"method": method, "target_sparsity": target, "seed": seed, "sparsity": target, "requested": True,
             "selected_test_accuracy": val[1] - 0.1 if status == "ok" else None, "status": status,
             "point_key": f"p-{key}"}
    curve = [{"phase": "train", "epoch": float(e + 1), "iteration": 10 * (e + 1), "train_loss": 2.0 - v,
              "val_accuracy": v, "val_loss": 1.0 - v, "test_accuracy": v - 0.1, "test_loss": 1.1 - v}
             for e, v in enumerate(val)]
    stage = {"kind": "train", "label": key, "seed": seed, "status": status, "method": method}
    store.commit(SWEEP, key, attempt, stage, [point], curve)


@pytest.fixture
def store_dir(tmp_path):
    store = ResultsStore(str(tmp_path / "store"))
    for (method, target, seed), val in VAL.items():
        if (method, target, seed) == ("a", 0.5, 1):  # ran twice: only the newer ok attempt is the frontier's
            _commit(store, method, target, seed, 1, "ok", (0.0, 0.0))
            _commit(store, method, target, seed, 2, "ok", val)
        else:
            _commit(store, method, target, seed, 1, "ok", val)
    _commit(store, "b", 0.9, 2, 1, "failed", (0.9, 0.9))
    return tmp_path / "store"


def run(*args):
    return CliRunner().invoke(main, ["curves", *map(str, args)])


def _csv(output: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(output))


def _half(values) -> float:
    return T * pd.Series(values).std(ddof=1) / math.sqrt(len(values))


def test_csv_gives_the_mean_and_interval_over_seeds_of_the_frontiers_runs(store_dir):
    r = run("--store", store_dir, "--format", "csv")
    assert r.exit_code == 0, r.output
    table = _csv(r.output)
    assert list(table.columns) == CURVE_COLUMNS
    assert set(table["metric"]) == {"val_accuracy_pct", "test_accuracy_pct", "val_loss", "test_loss", "train_loss"}
    by = {(x.method, x.target_sparsity, x.epoch, x.metric): x for x in table.itertuples(index=False)}
    a1 = by[("a", 0.5, 1.0, "val_accuracy_pct")]  # 0.5, 0.6, 0.7 (not attempt 1's 0.0)
    assert (a1.n, a1.mean) == (3, pytest.approx(60.0))
    half = 100 * _half([0.5, 0.6, 0.7])
    assert (a1.low, a1.high) == pytest.approx((60.0 - half, 60.0 + half))
    a2 = by[("a", 0.5, 2.0, "test_accuracy_pct")]  # three equal values: a zero-width interval
    assert (a2.mean, a2.low, a2.high) == pytest.approx((60.0, 60.0, 60.0))
    loss = by[("a", 0.9, 2.0, "val_loss")]  # 1 - (0.6, 0.65, 0.7): losses are not in percent
    assert loss.mean == pytest.approx(0.35) and loss.high - loss.mean == pytest.approx(_half([0.4, 0.35, 0.3]))
    failed = by[("b", 0.9, 1.0, "val_accuracy_pct")]  # seed 2 failed: two seeds, 0.1 each
    assert (failed.n, failed.mean) == (2, pytest.approx(10.0))
    clipped = by[("b", 0.5, 1.0, "val_accuracy_pct")]  # 0.2, 0.4, 0.6: the interval stops at 0
    assert clipped.low == 0.0 and clipped.high == pytest.approx(40.0 + 100 * _half([0.2, 0.4, 0.6]))
    assert table["method"].iloc[0] == "dense"


def test_a_search_phase_is_its_own_curve_and_only_losses_stop_at_zero(tmp_path):
    store = ResultsStore(str(tmp_path / "store"))
    for seed, objective in enumerate((-0.1, 0.0, 0.1)):
        key = f"cts-{seed}"
        point = {"method": "cts", "target_sparsity": 0.9, "seed": seed, "status": "ok", "point_key": f"p{seed}"}
        curve = [{"phase": "search", "epoch": 1.0, "iteration": 5, "objective": objective,
                  "expected_kept_fraction": 0.1 + 0.01 * seed},
                 {"phase": "train", "epoch": 1.0, "iteration": 5, "train_loss": 0.01 * seed, "val_accuracy": 0.5}]
        store.commit(SWEEP, key, 1, {"kind": "cts", "label": key, "status": "ok"}, [point], curve)
    table = _csv(run("--store", tmp_path / "store", "--format", "csv").output)
    by = {(x.phase, x.metric): x for x in table.itertuples(index=False)}
    assert set(by) == {("search", "objective"), ("search", "expected_kept_fraction"), ("train", "train_loss"),
                       ("train", "val_accuracy_pct")}
    objective = by[("search", "objective")]
    assert objective.mean == pytest.approx(0.0) and objective.low == pytest.approx(-_half([-0.1, 0.0, 0.1]))
    assert by[("train", "train_loss")].low == 0.0  # 0.01 - T · 0.01 / √3 < 0: a loss is never negative
    assert by[("search", "expected_kept_fraction")].mean == pytest.approx(0.11)


def test_filters_keep_the_dense_reference_and_json_matches_csv(store_dir):
    table = _csv(run("--store", store_dir, "--format", "csv", "--method", "b", "--sparsity", "0.5").output)
    assert set(zip(table["method"], table["target_sparsity"])) == {("dense", 0.0), ("b", 0.5)}
    import json
    records = json.loads(run("--store", store_dir, "--format", "json", "--method", "b", "--sparsity", "0.5").output)
    assert [r["mean"] for r in records] == pytest.approx(table["mean"].tolist())


def test_png_is_written_and_is_a_valid_png(store_dir, tmp_path):
    from PIL import Image

    out = tmp_path / "c.png"
    r = run("--store", store_dir, "-o", out)
    assert r.exit_code == 0 and r.output.strip() == f"wrote {out}"
    with Image.open(out) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(out) as image:
        width, height = image.size
    # 2 sparsities side by side, 4 metrics stacked
    assert width > 700 and height > width
    one = tmp_path / "one.png"
    assert run("--store", store_dir, "-o", one, "--sparsity", "0.9").exit_code == 0
    with Image.open(one) as image:
        assert image.size[0] < width  # one column


def test_many_sparsities_are_spread_over_at_most_four_columns():
    from orchestrator.analysis.curves import shown_sparsities

    table = pd.DataFrame({"method": ["a"] * 9, "target_sparsity": [0.1 * i for i in range(1, 10)]})
    assert shown_sparsities(table) == pytest.approx([0.1, 0.4, 0.6, 0.9])
    assert shown_sparsities(table.iloc[:3]) == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("args, expected", [
    (["--method", "c"], "curves: sweep s in {store}: --method c: no finished points of it; known: a, b, dense"),
    (["--sparsity", "0.7"], "curves: sweep s in {store}: --sparsity 0.7: no finished points at this target "
                            "sparsity (have 0.5, 0.9)"),
    (["--sparsity", "most"], "--sparsity most: not a number (a target sparsity of the sweep, e.g. 0.9)"),
    (["-o", "{tmp}/nowhere/c.png"], "-o {tmp}/nowhere/c.png: no such directory {tmp}/nowhere"),
    (["--sweep", "t"], "store {store}: no results for sweep t; known: s"),
])
def test_bad_arguments_are_one_line_and_exit_2(store_dir, tmp_path, args, expected):
    fill = {"tmp": tmp_path, "store": store_dir}
    r = run("--store", store_dir, *[a.format(**fill) for a in args])
    assert r.exit_code == 2 and r.output.strip() == expected.format(**fill), r.output
    assert not (tmp_path / "curves.png").exists()


def test_a_store_without_curves_says_so(tmp_path):
    store = ResultsStore(str(tmp_path / "store"))
    store.commit(SWEEP, "k", 1, {"kind": "train", "label": "k", "status": "ok"},
                 [{"method": "a", "target_sparsity": 0.5, "seed": 0, "status": "ok", "point_key": "p"}], [])
    r = run("--store", tmp_path / "store", "--format", "csv")
    assert r.exit_code == 2 and "no curves stored for these points" in r.output


def _events(path) -> list:
    """The records of a TensorBoard event file (TFRecord framing: length, its CRC, data, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        events.append(Event.FromString(data[at + 12:at + 12 + length]))
        at += 12 + length + 4
    return events


def test_tensorboard_export_reads_back(store_dir, tmp_path):
    pytest.importorskip("tensorboardX", reason="the export needs tensorboardX (an optional package)")
    out = tmp_path / "tb"
    r = CliRunner().invoke(main, ["export", "tensorboard", str(out), "--store", str(store_dir)])
    assert r.exit_code == 0, r.output
    runs = sorted(str(p.parent.relative_to(out)) for p in out.rglob("events.out.tfevents.*"))
    assert len(runs) == 3 + 3 + 3 + 3 + 2 and "s/a/sparsity=0.5/seed=1" in runs
    (file,) = (out / "s/a/sparsity=0.5/seed=1").glob("events.out.tfevents.*")
    scalars = {(v.tag, e.step): v.simple_value for e in _events(file) for v in e.summary.value}
    assert scalars[("train/val_accuracy", 10)] == pytest.approx(0.6)  # attempt 2's, not attempt 1's 0.0
    assert scalars[("train/test_loss", 20)] == pytest.approx(0.4)
    again = CliRunner().invoke(main, ["export", "tensorboard", str(out), "--store", str(store_dir)])
    assert again.exit_code == 2 and "not empty" in again.output and len(again.output.strip().splitlines()) == 1


def test_tensorboard_export_without_a_writer_names_the_package(store_dir, tmp_path, monkeypatch):
    from orchestrator.analysis import tensorboard_writer

    monkeypatch.setattr(tensorboard_writer, "available", lambda: None)
    r = CliRunner().invoke(main, ["export", "tensorboard", str(tmp_path / "tb"), "--store", str(store_dir)])
    assert r.exit_code == 2
    assert r.output.strip() == ("export tensorboard: needs a TensorBoard writer: pip install tensorboardX "
                                "(or tensorboard)")
    assert not (tmp_path / "tb").exists()
