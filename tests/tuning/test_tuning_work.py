"""A tune stage's work, checked by hand on a real search: every configuration counts what it ran with the
counters of any stage (workers/work.py), the tune stage's row holds their sum, and a tuned method's standalone
work includes it, as its standalone seconds include the search's seconds."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store.results_store import ResultsStore
from orchestrator.store.schemas import WORK_COLUMNS
from tests.helpers.in_process_sweeps import submitted

pytestmark = pytest.mark.slow  # a real search on the session's cluster

N, E = 2, 3
SPEC = {
    "name": "tunework",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    # 160 examples, 32 held out for validation: 128 to train on, 4 batches of 32 an epoch.
    "dataset": {"name": "synthetic", "options": {"n_train": 160, "n_test": 64}, "validation": 0.2},
    "training": {"epochs": E, "batch_size": 32, "lr": 0.05, "rewind": "0it"},
    # Magnitude scoring reads no data, so samples_per_class changes nothing the trials compute: both
    # configurations validate identically, and ASHA (which stops a trial only below the rung's cutoff) stops none.
    "methods": [{"kind": "oneshot", "criterion": "magnitude", "tune": {"samples_per_class": {"choice": [10, 20]}}}],
    "sparsities": [0.5],
    "seeds": [0],
    "tuning": {"configurations": N, "grace_period": 1, "reduction_factor": 2, "sparsities": [0.5], "seeds": [0]},
    # One trial actor: a second is one more process start importing torch, dearer than these tiny stages.
    "resources": {"max_concurrent": 1},
}
TRAIN, VAL = 128, 32


@pytest.fixture(scope="module")
def store(ray_cluster, tmp_path_factory):
    return submitted(SPEC, tmp_path_factory, "tunework")


def test_n_configurations_of_e_epochs_count_n_times_e_epochs_and_their_examples(store):
    stages = ResultsStore(str(store)).read("stages", "tunework")
    (tune,) = stages[stages["kind"] == "tune"].to_dict("records")
    trials = pd.read_parquet(store / "tuning")
    assert len(trials) == N and trials["completed"].all() and (trials["epochs"] == E).all()  # none stopped
    # Each configuration: E epochs of the 128 training examples forward and backward, the 32 validation
    # examples evaluated after each epoch (the trials' data has no test split); magnitude scoring passes nothing.
    assert tune["train_epochs"] == N * E and tune["search_epochs"] == 0.0
    assert tune["forward_examples"] == tune["backward_examples"] == N * E * TRAIN
    assert tune["eval_examples"] == N * E * VAL and tune["search_flops"] == 0
    for c in WORK_COLUMNS:
        assert tune[c] == trials[c].sum(), c
    # A trial counts as any stage does: the sweep's own tuned stage at the same seed and sparsity trains the
    # same network on the same data (and evaluates the test split too).
    (point,) = stages[(stages["kind"] == "oneshot")].to_dict("records")
    assert point["train_epochs"] == E and point["forward_examples"] == E * TRAIN
    assert tune["train_flops"] == N * point["train_flops"] > 0
    assert tune["eval_flops"] == N * point["eval_flops"] * VAL // (VAL + 64)


def test_a_tuned_point_s_standalone_work_includes_its_tune_stage_as_its_seconds_do(store):
    plan = build_plan(parse_spec(SPEC))
    stages = ResultsStore(str(store)).read("stages", "tunework").set_index("stage_key")
    points = ResultsStore(str(store)).read("points", "tunework")
    (row,) = points[points["method"] == "magnitude[tuned]"].to_dict("records")
    paid = [row["stage_key"], *plan.ancestors_for_cost(row["stage_key"])]
    assert "tune" in set(stages.loc[paid, "kind"])
    assert row["standalone_epochs"] == math.fsum(
        [*stages.loc[paid, "train_epochs"], *stages.loc[paid, "search_epochs"]])
    flops = stages.loc[paid, "train_flops"].sum() + stages.loc[paid, "search_flops"].sum()
    assert row["standalone_flops"] == int(flops)
    assert math.isclose(row["standalone_seconds"], stages.loc[paid, "seconds"].sum())
