"""What the terminal says about a sweep, on a tiny real one: the driver holding its lease, totals over sweeps,
what a resubmit resumes, a time estimate before running, and stage logs with their validation accuracy."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.run.estimate import Estimate, estimate
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import load_spec
from orchestrator.store.results_store import ResultsStore

SPEC = {
    "name": "watched",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 128, "n_test": 64}, "validation": 0.25},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "2it"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.8],
    "seeds": [0, 1],
}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def sweep(ray_cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("watched")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "store": str(folder / "store")}))
    r = run("submit", spec, "--no-progress", "--no-dashboard")
    assert r.exit_code == 0, r.output
    assert "resuming" not in r.output  # nothing was stored: a first run resumes nothing
    return spec, folder


@pytest.mark.slow
def test_stage_logs_show_validation_accuracy_and_take_a_label(sweep):
    spec, _ = sweep
    r = run("logs", spec, "--stage", "dense s=0")  # the label `plan` and the progress lines print
    assert r.exit_code == 0, r.output
    epochs = [line for line in r.output.splitlines() if line.startswith("train epoch")]
    assert len(epochs) == 2 and all("val_accuracy" in line and "val_loss" in line for line in epochs)
    assert "best validation accuracy" in r.output and "final test accuracy" in r.output
    missing = run("logs", spec, "--stage", "3f2a")
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
    assert "orchestrate plan SPEC lists every stage's key and label" in missing.output


@pytest.mark.slow
def test_status_says_which_driver_holds_the_lease(sweep):
    from orchestrator.store.lease import Lease

    spec, folder = sweep
    assert "\n  no driver is running\n" in run("status", spec).output
    store = ResultsStore(str(folder / "store"))
    lease = Lease(store, "watched").acquire()
    try:
        held = run("status", spec).output
    finally:
        lease.release()
    assert f"  driver running: pid {os.getpid()} on {socket.gethostname()} since 20" in held
    # A lease left by a driver that died (a real process, gone): no driver runs, and the line says whose it was.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = f"{store.root}/leases/watched.json"
    record = {"sweep": "watched", "host": socket.gethostname(), "pid": int(dead.stdout), "token": "t",
              "since": time.time() - 60, "renewed": time.time()}
    store.put_bytes(path, json.dumps(record).encode())
    try:
        stale = run("status", spec).output
    finally:
        store.fs.delete_file(path)
    assert f"  no driver is running (the lease of pid {int(dead.stdout)} on {socket.gethostname()}" in stale


@pytest.mark.slow
def test_sweeps_prints_totals_over_every_sweep(sweep):
    _, folder = sweep
    store = ResultsStore(str(folder / "store"))
    for key, status in (("k1", "ok"), ("k2", "failed"), ("k3", "failed")):
        store.commit("other", key, 1, {"kind": "train", "label": key, "status": status}, [], [])
    lines = run("sweeps", "--store", folder / "store").output.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["other"][:4] == ["1", "2", "0", "0"]
    watched = [int(v) for v in rows["watched"][:4]]
    assert lines[-1].startswith("total (2 sweeps)")
    assert [int(v) for v in lines[-1].split()[3:7]] == [watched[0] + 1, watched[1] + 2, watched[2], watched[3]]


def test_validate_without_timings_says_why_there_is_no_estimate(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "store": str(tmp_path / "store")}))
    r = run("validate", spec, "--skip-data")
    assert r.exit_code == 0, r.output
    assert f"estimated time: none yet: {tmp_path / 'store'} holds no finished stage of sweep watched" in r.output
    assert not (tmp_path / "store").exists()  # validate writes nothing


def test_the_estimate_prices_stages_by_kind_and_method_and_respects_dependencies(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "seeds": [0]}))
    plan = build_plan(load_spec(spec))
    todo = list(plan.stages)
    kinds = {(s.kind, s.meta.get("method") or "") for s in plan.stages.values()}
    one = {k: [0.5, 1.0, 9.0] for k in kinds}  # median 1 s each
    serial = estimate(plan, todo, one, parallel=1)
    assert isinstance(serial, Estimate) and serial.seconds == serial.stage_seconds == len(todo)
    wide = estimate(plan, todo, one, parallel=1000)
    # every parallel stage at once: the LTR chain (init, warm-up, then one level after the other) is the bound
    ltr_levels = sum(s.kind == "imp_level" for s in plan.stages.values())
    assert wide.seconds == wide.chain_seconds >= ltr_levels + 2 and wide.parallel == len(todo)
    # a method with no timing of its own is priced by its kind's
    by_kind = {k: v for k, v in one.items() if k != ("oneshot", "random")} | {("oneshot", "magnitude"): [3.0]}
    priced = estimate(plan, todo, by_kind, parallel=1)
    oneshots = sum(s.kind == "oneshot" for s in plan.stages.values())
    assert priced.stage_seconds == len(todo) + 2 * oneshots
    assert estimate(plan, todo, {k: v for k, v in one.items() if k[0] != "warmup"}, 1) == ["warmup"]


@pytest.mark.slow
def test_plan_estimates_and_a_resubmit_says_what_it_resumes(sweep):
    spec, folder = sweep
    more = folder / "more.yaml"
    more.write_text(yaml.safe_dump({**SPEC, "store": str(folder / "store"), "seeds": [0, 1, 2]}))
    planned = run("plan", more)
    stages = len(build_plan(load_spec(more)).stages)
    stored = len(build_plan(load_spec(spec)).stages)
    assert f"{stages - stored} stage(s) to run, {stored} already in" in planned.output
    assert "estimated time: about " in planned.output
    assert f"for {stages - stored} stage(s), 2 at once" in planned.output
    r = run("submit", more, "--no-progress", "--no-dashboard")
    assert r.exit_code == 0, r.output
    assert f"resuming: {stored} of {stages} stages already stored, {stages - stored} to run" in r.output
    assert "estimated time: nothing to run (every stage is stored)" in run("plan", more).output
