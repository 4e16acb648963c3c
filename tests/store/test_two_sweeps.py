"""Several sweeps on one store: a sweep's own files are never foreign to it, and another sweep's are moved only by a
driver holding that sweep's lease. Real `orchestrate submit` processes: two sweeps at once, and a first submit
killed with SIGKILL before its first commit."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.store import health
from orchestrator.store.lease import Lease
from orchestrator.store.results_store import ResultsStore
from tests.helpers.store_cli import ORCHESTRATE, env_without_ray_address
from tests.helpers.store_cli import SPEC, write_spec

pytestmark = pytest.mark.slow  # real `orchestrate submit` processes

TINY_A = {**SPEC, "name": "tinyA", "methods": [{"kind": "oneshot", "criterion": "random"}], "sparsities": [0.5]}
TINY_B = {**TINY_A, "name": "tinyB"}


def start(folder: Path, store: Path, spec: dict, address: str) -> subprocess.Popen:
    """A driver joining the session's cluster (what is tested is the store, not the cluster's start)."""
    return subprocess.Popen(ORCHESTRATE + ["submit", write_spec(folder, spec), "--store", str(store), "--no-progress",
                                           "--address", address], env=env_without_ray_address(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def manifests(store: Path, sweep: str) -> list[Path]:
    return sorted((store / "plans" / f"sweep={sweep}").glob("plan-*.parquet"))


def wait_for_manifest(driver: subprocess.Popen, store: Path, sweep: str) -> None:
    deadline = time.time() + 300  # a bound on hanging only: a loaded machine imports slowly
    while not manifests(store, sweep):
        assert driver.poll() is None and time.time() < deadline, driver.communicate()
        time.sleep(0.05)


def current_plans(store: Path) -> pd.DataFrame:
    """The README's recipe for each sweep's current plan."""
    plans = pd.read_parquet(store / "plans")
    return plans[plans.planned_at == plans.groupby("sweep").planned_at.transform("max")]


def quarantined_plans(store: Path) -> list[Path]:
    return list((store / "quarantine").rglob("plans/*")) if (store / "quarantine").exists() else []


def test_two_sweeps_submitted_at_once_both_complete_with_their_plans(ray_address, tmp_path):
    store = tmp_path / "store"
    a = start(tmp_path, store, TINY_A, ray_address)
    # B starts while A has recorded its plan and (most likely) committed nothing yet: the moment A's plan looked
    # foreign to another driver, which moved it to quarantine.
    wait_for_manifest(a, store, "tinyA")
    b = start(tmp_path, store, TINY_B, ray_address)
    out_b, err_b = b.communicate(timeout=600)
    out_a, err_a = a.communicate(timeout=600)
    assert a.returncode == 0, out_a[-2000:] + err_a[-2000:]
    assert b.returncode == 0, out_b[-2000:] + err_b[-2000:]
    assert "quarantined" not in out_a + out_b
    assert len(manifests(store, "tinyA")) == 1 and len(manifests(store, "tinyB")) == 1
    assert not quarantined_plans(store)
    current = current_plans(store)
    assert set(current["sweep"].astype(str)) == {"tinyA", "tinyB"}
    for sweep in ("tinyA", "tinyB"):
        done = ResultsStore(str(store)).done_keys(sweep)
        assert set(current.loc[current["sweep"] == sweep, "stage_key"]) == done


def test_a_first_submit_killed_before_its_first_commit_keeps_its_plan_on_resubmit(ray_address, tmp_path):
    store = tmp_path / "store"
    first = start(tmp_path, store, TINY_A, ray_address)
    wait_for_manifest(first, store, "tinyA")
    os.killpg(first.pid, signal.SIGKILL)  # the driver, as kill -9
    first.communicate()
    assert not list(store.rglob("stages/*/*.parquet"))  # killed before its first commit
    written = manifests(store, "tinyA")

    again = subprocess.run(ORCHESTRATE + ["submit", write_spec(tmp_path, TINY_A), "--store", str(store),
                                          "--no-progress", "--address", ray_address], env=env_without_ray_address(),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "quarantined" not in again.stdout
    assert manifests(store, "tinyA") == written and not quarantined_plans(store)
    current = current_plans(store)
    assert set(current["stage_key"]) == ResultsStore(str(store)).done_keys("tinyA")


def test_partitions_of_no_sweep_are_moved_only_under_that_sweeps_lease(tmp_path):
    """A directory of a sweep with neither a commit log nor a plan is foreign to every other sweep, but while a
    driver holds that sweep's lease (it may be about to record its plan) nobody else moves it."""
    store = ResultsStore(str(tmp_path / "s"))
    store.commit("mine", "k1", 1, {"kind": "oneshot", "status": "ok"}, [{"method": "m", "status": "ok"}], [])
    stray = tmp_path / "s" / "points" / "sweep=starting" / "method=m"
    stray.mkdir(parents=True)
    (stray / "notes.txt").write_text("x")
    state = health.inspect(store, None, "mine")
    assert [p for p, _ in state.unclaimed["starting"]] == [str(stray.parent)]
    assert any(str(stray.parent) in line for line in health.inspect(store, None, "mine").problems())

    held = Lease(store, "starting").acquire()
    said = []
    try:
        health.repair(store, health.inspect(store, None, "mine"), said.append)
        assert (stray / "notes.txt").read_text() == "x"
        assert any("left 1 file(s) of sweep starting in place" in line for line in said), said
    finally:
        held.release()
    health.repair(store, health.inspect(store, None, "mine"), said.append)
    assert not stray.exists() and list((tmp_path / "s" / "quarantine").rglob("sweep=starting/method=m/notes.txt"))
    assert Lease(store, "starting").read() is None  # the lease taken to move them is given back
