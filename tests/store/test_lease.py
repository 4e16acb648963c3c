"""One driver per sweep: the lease file, its holder, staleness and take-over (local disk; S3 in test_store_s3)."""
import json
import os
import subprocess
import sys

import pytest

from orchestrator.store import lease as lease_mod
from orchestrator.store.lease import Lease, LeaseHeld
from orchestrator.store.results_store import ResultsStore


def test_second_holder_is_refused_with_the_holder_named(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    first = Lease(store, "sw").acquire()
    try:
        with pytest.raises(LeaseHeld, match=rf"pid {os.getpid()} on .* since .*--take-over"):
            Lease(store, "sw").acquire()
        Lease(store, "other").acquire().release()  # different sweeps run side by side
    finally:
        first.release()
    assert not (tmp_path / "s" / "leases" / "sw.json").exists()
    Lease(store, "sw").acquire().release()


@pytest.mark.slow
def test_lease_of_a_dead_process_on_this_host_is_stale(tmp_path):
    store = ResultsStore(str(tmp_path / "s"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    path = tmp_path / "s" / "leases" / "sw.json"
    path.parent.mkdir(parents=True)
    import socket
    import time
    path.write_text(json.dumps({"sweep": "sw", "host": socket.gethostname(), "pid": int(dead), "token": "x",
                                "since": time.time(), "renewed": time.time()}))
    held = Lease(store, "sw").acquire()
    assert json.loads(path.read_text())["token"] == held.token
    held.release()


def test_expired_lease_is_taken_over_and_a_live_one_only_on_request(tmp_path, monkeypatch):
    store = ResultsStore(str(tmp_path / "s"))
    path = tmp_path / "s" / "leases" / "sw.json"
    path.parent.mkdir(parents=True)
    import time
    live = {"sweep": "sw", "host": "elsewhere", "pid": 1, "token": "x", "since": time.time(), "renewed": time.time()}
    path.write_text(json.dumps(live))
    with pytest.raises(LeaseHeld, match="elsewhere"):
        Lease(store, "sw").acquire()
    Lease(store, "sw").acquire(take_over=True).release()
    path.write_text(json.dumps({**live, "renewed": time.time() - lease_mod.TTL_SECONDS - 1}))
    Lease(store, "sw").acquire().release()


def test_renewal_notices_a_take_over(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "RENEW_SECONDS", 0.05)
    store = ResultsStore(str(tmp_path / "s"))
    first = Lease(store, "sw").acquire()
    before = json.loads((tmp_path / "s" / "leases" / "sw.json").read_text())["renewed"]
    import time
    time.sleep(0.3)
    assert json.loads((tmp_path / "s" / "leases" / "sw.json").read_text())["renewed"] > before
    second = Lease(store, "sw").acquire(take_over=True)
    assert first.lost.wait(2)
    first.release()  # must not delete the new holder's lease
    assert json.loads((tmp_path / "s" / "leases" / "sw.json").read_text())["token"] == second.token
    second.release()


@pytest.mark.slow
def test_a_second_submit_of_a_busy_sweep_is_refused_before_its_data_check_and_ray(tmp_path):
    """Two real `orchestrate submit` processes of one sweep: the second is refused with the lease error (exit 3)
    while the first still runs, without having checked the data (its own empty cache gets no mnist1d arrays) or
    started a Ray cluster (its own RAY_TMPDIR stays empty)."""
    import tempfile
    import time

    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "busy", "model": {"name": "mlp", "options": {"hidden": [16]}}, "dataset": {"name": "mnist1d"},
        "training": {"epochs": 10, "batch_size": 128}, "methods": [{"kind": "oneshot", "criterion": "random"}],
        "sparsities": [0.5], "seeds": [0, 1], "store": str(tmp_path / "store")}))
    command = [sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--no-progress", "--no-dashboard"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lease = tmp_path / "store" / "leases" / "busy.json"
    try:
        while not lease.exists():
            assert first.poll() is None, first.communicate()[0]
            time.sleep(0.05)
        cache = tmp_path / "cache2"
        cache.mkdir()
        ray_tmp = tempfile.mkdtemp(prefix="tsr2-", dir="/tmp")  # short: Ray's socket paths must fit
        try:
            second = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                    env={**os.environ, "TICKETSWEEP_CACHE": str(cache), "RAY_TMPDIR": ray_tmp})
            first_running = first.poll() is None
            ray_files = os.listdir(ray_tmp)
        finally:
            import shutil
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert second.returncode == 3, second.stdout + second.stderr
        assert "sweep busy is already running" in second.stderr and f"pid {first.pid}" in second.stderr
        assert first_running, "the second submit ended after the first"
        assert os.listdir(cache) == [], "the second submit checked the data (the preflight ran)"
        assert ray_files == [], "the second submit started a Ray cluster"
        out, _ = first.communicate(timeout=900)
        assert first.returncode == 0, out
        assert "8 stage(s) ran" in out
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
