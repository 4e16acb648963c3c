"""One driver per sweep: the lease file, its holder, staleness and take-over (local disk; S3 in test_store_s3)."""
import json
import os
import subprocess
import sys

import pytest

from orchestrator import lease as lease_mod
from orchestrator.lease import Lease, LeaseHeld
from orchestrator.store import ResultsStore


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
