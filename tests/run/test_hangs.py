"""Hung stages on real processes: a trial actor stopped with SIGSTOP mid-stage, and a stage that spins in Python
without returning. Both are detected within their hang limit, the actor is replaced, and the sweep finishes with
exactly one ok row per point."""
from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from orchestrator.run import driver
from orchestrator.spec.plan import build_plan
from orchestrator.run.scheduler import STARTUP_FACTOR, HangPolicy
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store.results_store import ResultsStore
from workers import liveness

FLOOR_S = 3.0
SPEC = {
    "name": "hangs",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "random"},
                {"kind": "oneshot", "criterion": "magnitude", "score_at": "trained"}],
    "sparsities": [0.5],
    "seeds": [0],
    # The limit is max(floor, factor x the slowest epoch of the stage's kind), and the first epoch of a stage
    # counts its set-up: 4 x that still leaves a healthy stage on a loaded machine room (its set-up slows down
    # with the load as the measured one did), where the default 10 only makes the hung stage wait longer.
    "resources": {"max_retries": 1, "hang_floor_s": FLOOR_S, "hang_factor": 4},
}


class HangingActor(driver.TrialActorBody):
    """After the first epoch of the `random` stage's first attempt: stop this process (SIGSTOP), or spin in
    Python without progress (the process still answers pings)."""
    how: str = ""
    marks: str = ""
    pings = 0

    def run(self, payload, roles, *parents):
        self.faulty = payload["params"].get("method") == "random" and \
            not list(Path(self.marks).glob(payload["key"] + "*"))
        if self.faulty:
            Path(self.marks, payload["key"] + "-hung").touch()
        return super().run(payload, roles, *parents)

    def heartbeat(self):
        self.pings += 1
        return super().heartbeat()

    def _on_epoch(self, row):
        super()._on_epoch(row)
        if self.faulty and row.get("phase") == "train":
            # Alive until the driver has heard this epoch: it sends its next ping only once it has read the answer
            # to the last one, so a second ping from now on means the first answer was read.
            pings = self.pings
            while self.pings < pings + 2:
                liveness.beat()
                time.sleep(0.05)
            if self.how == "sigstop":
                os.kill(os.getpid(), signal.SIGSTOP)
            while True:  # a live-lock: the process answers pings, the stage never progresses
                pass


def run_with(monkeypatch, tmp_path, how):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(driver, "TrialActor", ray.remote(type("Hanging", (HangingActor,), {"how": how,
                                                                                           "marks": str(tmp_path)})))
    s = parse_spec(SPEC)
    store = tmp_path / "store"
    t0 = time.monotonic()
    summary = driver.run_plan(build_plan(s), s, ResultsStore(str(store)), progress=False, echo=lambda *_: None)
    return summary, store, time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.parametrize("how, why", [("sigstop", "has not answered"), ("spin", "answers but the stage makes no progress")])
def test_a_hung_stage_is_detected_within_its_limit_and_retried(ray_cluster, monkeypatch, tmp_path, how, why):
    summary, store, seconds = run_with(monkeypatch, tmp_path, how)
    assert summary.failed == 0 and summary.ran == len(build_plan(parse_spec(SPEC)).stages)
    stages = ResultsStore(str(store)).read("stages", "hangs")
    random = stages[stages["method"] == "random"].sort_values("attempt")
    assert list(random["status"]) == ["failed", "ok"] and random["error_type"].iloc[0] == "hung"
    message = random["error"].iloc[0]
    assert why in message, message
    silent, limit = map(float, re.search(r"no sign of life for (\d+) s \(limit (\d+) s", message).groups())
    # At least the floor (4 x the slowest epoch seen, or the start-up limit before any); detected within a few
    # ticks of it.
    assert FLOOR_S <= limit <= 60 and limit <= silent <= limit + 10
    points = pd.read_parquet(store / "points")
    ok = points[points["status"] == "ok"].groupby("point_key").size()
    assert len(ok) == len(build_plan(parse_spec(SPEC)).points()) and (ok == 1).all()
    assert seconds < 300  # a bound on hanging, generous for a loaded machine (Ray nices its workers)


def test_the_hang_limit_scales_with_the_slowest_epoch_and_has_a_floor():
    policy = HangPolicy(floor_s=60, factor=10)
    assert policy.limit(0.0) == STARTUP_FACTOR * 60      # nothing measured yet
    assert policy.limit(0.5) == 60                       # fast epochs: the floor
    assert policy.limit(30.0) == 300                     # slow epochs: 10 x the slowest
