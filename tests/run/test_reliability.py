"""Fault injection on real processes: crashes inside the commit sequence, two drivers, a stale cluster file,
damaged store files, a diverging stage and a trial actor killed with SIGKILL mid-stage."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from orchestrator.run import driver
from orchestrator.store import health
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store.results_store import ResultsStore
from tests.helpers.store_cli import ORCHESTRATE, env_without_ray_address

pytestmark = pytest.mark.slow  # fault injection on real drivers, clusters and trial actors

SPEC = {
    "name": "faults",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "random", "sanity_checks": ["shuffle"]},
                {"kind": "oneshot", "criterion": "magnitude", "score_at": "trained"}],
    "sparsities": [0.5],
    "seeds": [0],
    # One trial actor: a second is one more process start importing torch, dearer than these tiny stages.
    "resources": {"max_retries": 1, "max_concurrent": 1},
}
def write_spec(tmp_path: Path, spec: dict = SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_inprocess(store: Path, spec: dict = SPEC, **kw):
    s = parse_spec(spec)
    return driver.run_plan(build_plan(s), s, ResultsStore(str(store)), progress=False, echo=lambda *_: None, **kw)


def ok_rows_per_point(store: Path) -> pd.Series:
    points = pd.read_parquet(store / "points")
    return points[points["status"] == "ok"].groupby("point_key").size()


def commits(store: Path) -> pd.DataFrame:
    return ResultsStore(str(store)).read("stages", "faults")


# --------------------------------------------------------------------------- the cluster

def test_stale_cluster_file_is_ignored_and_a_private_cluster_is_used(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="tsstale-", dir="/tmp")  # short: Ray's socket paths must fit
    Path(ray_tmp, "ray_current_cluster").write_text("127.0.0.1:9")  # a dead cluster (discard port)
    try:
        out = subprocess.run(ORCHESTRATE + ["submit", str(write_spec(tmp_path)), "--store", str(tmp_path / "store"),
                                            "--no-dashboard", "--no-progress"],
                             env=env_without_ray_address(RAY_TMPDIR=ray_tmp), capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "0 failed" in out.stdout
        # not a terminal: one line per finished stage instead of a bar
        assert re.search(r"^\[1/6\] init s=0  ok  \d+\.\d s$", out.stdout, re.M), out.stdout
        assert re.search(r"^\[6/6\] .*  ok  \d+\.\d s  acc \d+\.\d%$", out.stdout, re.M), out.stdout
        assert (ok_rows_per_point(tmp_path / "store") == 1).all()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_unreachable_address_fails_fast_naming_it(tmp_path):
    t0 = time.time()
    out = subprocess.run(ORCHESTRATE + ["submit", str(write_spec(tmp_path)), "--store", str(tmp_path / "store"),
                                        "--address", "127.0.0.1:9"],
                         env=env_without_ray_address(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "127.0.0.1:9" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert time.time() - t0 < 60


# --------------------------------------------------------------------------- crashes in the commit sequence

CRASHING_DRIVER = textwrap.dedent('''
    import os, sys
    from orchestrator.store import results_store as st
    nth, after = int(sys.argv[1]), int(sys.argv[2])
    commit, put = st.ResultsStore.commit, st.ResultsStore.put_bytes
    seen = {"commits": 0, "files": 0}

    def crashing_put(self, path, data):
        put(self, path, data)
        seen["files"] += 1
        if seen["files"] == after:
            os._exit(9)  # the driver dies right after this file, like kill -9

    def counting_commit(self, sweep, key, attempt, stage_row, points, curve, log=None, **more):
        if points and curve:  # a stage whose commit writes every kind of file
            seen["commits"] += 1
            if seen["commits"] == nth:
                if after == 0:
                    os._exit(9)  # dies after the stage finished, before anything of its commit is written
                st.ResultsStore.put_bytes = crashing_put
        return commit(self, sweep, key, attempt, stage_row, points, curve, log, **more)

    st.ResultsStore.commit = counting_commit
    from orchestrator.cli import main
    main(sys.argv[3:])
''')


@pytest.mark.parametrize("after", [0, 1, 2, 3], ids=["before-commit", "after-commit", "after-points", "after-curves"])
def test_crash_at_each_point_of_the_commit_sequence_never_blocks_resume(ray_address, tmp_path, after):
    store = tmp_path / "store"
    args = ["submit", str(write_spec(tmp_path)), "--store", str(store), "--no-progress", "--address", ray_address]
    out = subprocess.run([sys.executable, "-c", CRASHING_DRIVER, "2", str(after)] + args,
                         env=env_without_ray_address(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 9, out.stderr[-2000:]
    before = commits(store)
    finished = set(before.loc[before["status"] == "ok", "stage_key"])

    state = health.inspect(ResultsStore(str(store)), None, "faults")
    assert state.orphans == [] and state.unreadable == []  # a raw pandas read never sees uncommitted rows
    if after in (1, 2):
        assert len(state.unmaterialized) == 1  # committed, views not all written yet: re-made, not recomputed

    summary = run_inprocess(store)
    plan = build_plan(parse_spec(SPEC))
    assert summary.failed == 0
    assert summary.ran == len(plan.stages) - len(finished)  # no finished stage is recomputed
    after_commits = commits(store)
    assert (after_commits[after_commits["status"] == "ok"].groupby("stage_key").size() == 1).all()
    assert set(after_commits["stage_key"]) == set(plan.stages)
    per_point = ok_rows_per_point(store)
    assert len(per_point) == len(plan.points()) and (per_point == 1).all()


# --------------------------------------------------------------------------- two drivers

def test_two_drivers_on_one_sweep_one_runs_the_other_exits_naming_the_holder(ray_address, tmp_path):
    store = tmp_path / "store"
    args = ORCHESTRATE + ["submit", str(write_spec(tmp_path)), "--store", str(store), "--no-progress",
                          "--address", ray_address]
    first = subprocess.Popen(args, env=env_without_ray_address(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lease = store / "leases" / "faults.json"
    deadline = time.time() + 60
    while not lease.exists() and time.time() < deadline:
        time.sleep(0.1)
    second = subprocess.run(args, env=env_without_ray_address(), capture_output=True, text=True, timeout=300)
    first_still_running = first.poll() is None
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 3
    assert f"pid {first.pid}" in second.stderr and "--take-over" in second.stderr
    # It did not wait for the holder: it was done while the first still ran (no bound in seconds, which a loaded
    # machine broke: the second driver's own start-up alone took longer there).
    assert first_still_running
    assert (ok_rows_per_point(store) == 1).all()
    assert not lease.exists()  # released at the end


def test_a_stop_request_in_the_store_stops_the_driver_like_ctrl_c(ray_address, tmp_path):
    """What `orchestrate cancel` leaves in the store stops a real driver, no signal involved: it exits as on
    Ctrl-C, keeps every committed row, and removes its lease and the request; a request naming another
    driver's lease stops nothing."""
    from orchestrator.store.lease import Lease, request_stop, stop_path
    from orchestrator.store.results_store import ResultsStore

    spec = {**SPEC, "name": "stopped", "methods": [{"kind": "ltr"}], "sparsities": [0.5, 0.8, 0.9, 0.95],
            "seeds": list(range(100))}
    store = tmp_path / "store"
    results = ResultsStore(str(store))
    stale = stop_path(results, "stopped")
    (store / "leases").mkdir(parents=True)
    Path(stale).write_text(json.dumps({"token": "a driver long gone"}))
    driver = subprocess.Popen(ORCHESTRATE + ["submit", str(write_spec(tmp_path, spec)), "--store", str(store),
                                             "--no-progress", "--address", ray_address],
                              env=env_without_ray_address(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300  # a bound on hanging: the driver starts Ray and imports torch first
    while len(results.done_keys("stopped")) < 3:
        assert driver.poll() is None and time.time() < deadline, "the driver committed fewer than 3 stages"
        time.sleep(0.5)
    assert driver.poll() is None   # the stale request named another lease: it stopped nothing
    assert request_stop(results, "stopped")
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "interrupted: finished stages are stored" in err, err[-2000:]
    done = results.done_keys("stopped")
    assert 3 <= len(done) < len(build_plan(parse_spec(spec)).stages)
    assert Lease(results, "stopped").read() is None and not Path(stale).exists()
    assert not request_stop(results, "stopped")  # nobody holds the sweep now: nothing to ask


# --------------------------------------------------------------------------- damaged store files

def test_damaged_files_are_reported_and_exactly_the_affected_stages_rerun(ray_cluster, tmp_path):
    store = tmp_path / "store"
    run_inprocess(store)
    plan = build_plan(parse_spec(SPEC))
    by_label = {s.label: k for k, s in plan.stages.items()}
    random_key = by_label["random s=0 sp=0.5000"]
    magnitude_key = by_label["magnitude[score_at=trained] s=0 sp=0.5000"]
    warmup_key = by_label["warmup s=0"]
    dense_key = by_label["dense s=0"]
    stages_dir = store / "stages" / "sweep=faults"
    truncated = next(stages_dir.glob(f"{magnitude_key}-*.parquet"))
    truncated.write_bytes(truncated.read_bytes()[:100])
    garbage = next((store / "points").rglob(f"{random_key}-*.parquet"))
    garbage.write_bytes(b"garbage" * 10)
    (store / "artifacts" / warmup_key / "outputs.pt").unlink()
    (store / "artifacts" / dense_key / "outputs.pt").unlink()

    from click.testing import CliRunner
    from orchestrator.cli import main
    spec_path = write_spec(tmp_path)
    status = CliRunner().invoke(main, ["status", str(spec_path), "--store", str(store)])
    assert status.exit_code == 0, status.output
    assert str(truncated) in status.output and str(garbage) in status.output
    assert f"missing artifact of finished stage {warmup_key[:12]}" in status.output
    assert f"missing artifact of finished stage {dense_key[:12]}" in status.output

    summary = run_inprocess(store)
    # magnitude[score_at=trained] (its commit is unreadable), the warm-up and the dense stage (it reads their artifacts)
    # run again, the dense stage without a second result row; the random point is re-made from its commit
    assert summary.ran == 3 and summary.failed == 0
    assert (ok_rows_per_point(store) == 1).all() and len(ok_rows_per_point(store)) == len(plan.points())
    assert len(list((store / "quarantine").rglob("*.parquet"))) >= 3
    status = CliRunner().invoke(main, ["status", str(spec_path), "--store", str(store)])
    assert "nothing unreadable, foreign, damaged, missing or left over" in status.output and f"{len(plan.stages)}/{len(plan.stages)} stages done" in status.output


# --------------------------------------------------------------------------- divergence and killed actors

class FaultyActor(driver.TrialActorBody):
    """Real faults in real processes: overflowed starting weights for one method, or SIGKILL mid-stage."""
    diverge_method: str = ""
    kill_method: str = ""
    marks: str = ""

    def _inputs(self, payload, roles, parents):
        inputs = super()._inputs(payload, roles, parents)
        if payload["params"].get("method") == self.diverge_method:
            # Weights it starts from overflowed (x 1e38, beyond float32 after one layer): the loss is not finite.
            # (A huge learning rate is no longer possible: the worker refuses a recipe outside its bounds.)
            inputs = {role: {**out, "weights": {k: v * 1e38 if v.is_floating_point() else v
                                                for k, v in out["weights"].items()}}
                      if isinstance(out, dict) and "weights" in out else out for role, out in inputs.items()}
        return inputs

    def run(self, payload, roles, *parents):
        method = payload["params"].get("method")
        if method == self.kill_method and not list(Path(self.marks).glob(payload["key"] + "*")):
            Path(self.marks, payload["key"] + "-killed").touch()
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGKILL)).start()
            time.sleep(30)  # killed mid-stage
        return super().run(payload, roles, *parents)


def with_actor(monkeypatch, tmp_path, **faults):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    body = type("Faulty", (FaultyActor,), {"marks": str(tmp_path), **faults})
    monkeypatch.setattr(driver, "TrialActor", ray.remote(body))


def test_diverged_stage_is_recorded_not_retried_and_its_dependants_skipped(ray_cluster, monkeypatch, tmp_path):
    store = tmp_path / "store"
    with_actor(monkeypatch, tmp_path, diverge_method="random")
    summary = run_inprocess(store)
    assert summary.diverged == 1 and summary.failed == 0 and summary.skipped_after_failure == 1
    stages = commits(store)
    diverged = stages[stages["status"] == "diverged"]
    assert list(diverged["method"]) == ["random"] and list(diverged["error_type"]) == ["diverged"]
    assert list(stages.loc[stages["status"] == "skipped", "error_type"]) == ["parent_diverged"]
    assert stages.loc[stages["method"] == "magnitude[score_at=trained]", "status"].eq("ok").all()

    monkeypatch.undo()  # a healthy actor: still not retried unless asked
    again = run_inprocess(store)
    assert again.ran == 0 and again.not_retried == 2
    asked = run_inprocess(store, retry_diverged=True)
    assert asked.ran == 2 and asked.failed == 0 and asked.diverged == 0


def test_sigkill_of_a_trial_actor_mid_stage_gives_one_retry_row(ray_cluster, monkeypatch, tmp_path):
    store = tmp_path / "store"
    with_actor(monkeypatch, tmp_path, kill_method="magnitude[score_at=trained]")
    summary = run_inprocess(store)
    assert summary.failed == 0
    stages = commits(store)
    magnitude = stages[stages["method"] == "magnitude[score_at=trained]"].sort_values("attempt")
    assert list(magnitude["attempt"]) == [1, 2]
    assert list(magnitude["status"]) == ["failed", "ok"] and magnitude["error_type"].iloc[0] == "lost"
    assert (ok_rows_per_point(store) == 1).all()


def test_a_stage_that_kills_every_actor_fails_after_bounded_retries(ray_cluster, monkeypatch, tmp_path):
    class AlwaysKilled(FaultyActor):
        def run(self, payload, roles, *parents):
            if payload["params"].get("method") == "magnitude[score_at=trained]":
                os.kill(os.getpid(), signal.SIGKILL)
            return super().run(payload, roles, *parents)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(driver, "TrialActor", ray.remote(AlwaysKilled))
    summary = run_inprocess(tmp_path / "store")
    assert summary.failed == 1
    stages = commits(tmp_path / "store")
    magnitude = stages[stages["method"] == "magnitude[score_at=trained]"]
    assert sorted(magnitude["attempt"]) == [1, 2] and set(magnitude["error_type"]) == {"lost"}  # max_retries=1
    assert stages.loc[stages["method"] == "random", "status"].eq("ok").all()
