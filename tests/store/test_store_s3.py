"""The store on object storage: a moto S3 server on loopback (results, views, resume, lease, compaction, artifacts)."""
import socket

import pandas as pd
import pytest
import torch

from orchestrator.store import artifacts
from orchestrator.store import health
from orchestrator.store.lease import Lease, LeaseHeld
from orchestrator.store.results_store import ResultsStore

moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]' (in the test extra)")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def location(s3_endpoint, request):
    bucket = "ts-" + request.node.name.replace("_", "-").lower()[:50]
    boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/store?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"


def commit(store, key, attempt=1, status="ok"):
    return store.commit("sw", key, attempt, {"kind": "oneshot", "status": status, "seconds": 1.0},
                        [{"method": "snip", "status": status, "test_accuracy": 0.5}],
                        [{"phase": "train", "epoch": 1.0}, {"phase": "train", "epoch": 2.0}], log="printed")


def test_commit_views_resume_and_compaction_on_s3(location, s3_endpoint):
    store = ResultsStore(location)
    store.check_writable()
    for i in range(4):
        commit(store, f"k{i}")
    assert set(store.read("points", "sw")["stage_key"]) == {f"k{i}" for i in range(4)}
    assert store.sweeps() == ["sw"]

    # a view lost between commit and view (a crash): resume re-makes it from the commit
    bucket, prefix = location[5:].split("?")[0].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/points/")["Contents"]
            if o["Key"].endswith(".parquet")]
    s3.delete_object(Bucket=bucket, Key=keys[0])
    state = health.inspect(store, None, "sw")
    assert len(state.unmaterialized) == 1
    health.repair(store, state, echo=lambda *_: None)
    assert len(store.read("points", "sw")) == 4 and not health.inspect(store, None, "sw").needs_repair

    before = store.read("points", "sw").sort_values("stage_key").reset_index(drop=True)
    merged = store.compact("sw")
    assert merged["points/sweep=sw/method=snip"] == (4, 1)
    after = store.read("points", "sw").sort_values("stage_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert len(store.read("curves", "sw")) == 8
    assert not health.inspect(store, None, "sw").needs_repair


def test_lease_on_s3(location):
    store = ResultsStore(location)
    held = Lease(store, "sw").acquire()
    try:
        with pytest.raises(LeaseHeld, match="--take-over"):
            Lease(store, "sw").acquire()
    finally:
        held.release()
    Lease(store, "sw").acquire().release()


def test_artifacts_on_s3(location):
    artifacts.save(location, "k1", {"weights": {"w": torch.arange(3.0)}})
    assert artifacts.exists(location, "k1") and not artifacts.exists(location, "k2")
    assert torch.equal(artifacts.load(location, "k1")["weights"]["w"], torch.arange(3.0))
    with pytest.raises(artifacts.ArtifactMissing):
        artifacts.load(location, "k2")


def test_foreign_objects_and_an_interrupted_compaction_on_s3_are_named_and_repaired(location, s3_endpoint):
    store = ResultsStore(location)
    for i in range(3):
        commit(store, f"k{i}")
    bucket, prefix = location[5:].split("?")[0].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1")
    view_keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/points/")["Contents"]
                 if o["Key"].endswith(".parquet")]
    sources = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in view_keys}
    before = store.read("points", "sw").sort_values("stage_key").reset_index(drop=True)
    store.compact("sw")
    for key, body in sources.items():  # as if compaction had died before deleting what it merged
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    foreign = [f"{prefix}/points/stray.parquet", f"{prefix}/junk/a/b.txt", f"{prefix}/stages/sweep=sw/notes.txt"]
    for key in foreign:
        s3.put_object(Bucket=bucket, Key=key, Body=b"not the store's")

    state = health.inspect(store, None, "sw")
    problems = "\n".join(state.problems())
    for path in (f"{bucket}/{prefix}/points/stray.parquet", f"{bucket}/{prefix}/junk",
                 f"{bucket}/{prefix}/stages/sweep=sw/notes.txt"):
        assert f"{path} (" in problems, problems
    assert len(state.merged) == 3 and "interrupted compaction" in problems
    health.repair(store, state, echo=lambda *_: None)

    after = health.inspect(store, None, "sw")
    assert after.problems() == []
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"]]
    assert not set(sources) & set(left) and not set(foreign) & set(left)
    moved = sorted(k.split("/", 3)[3] for k in left if k.startswith(f"{prefix}/quarantine/") and not k.endswith("/"))
    assert moved == sorted(k.split("/", 1)[1] for k in foreign)  # moved aside, never deleted
    points = pd.read_parquet(f"{bucket}/{prefix}/points", filesystem=store.fs)
    assert len(points) == 3
    pd.testing.assert_frame_equal(store.read("points", "sw").sort_values("stage_key").reset_index(drop=True), before)


def test_a_damaged_artifact_on_s3_is_found_by_the_cheap_check_and_by_load(location, s3_endpoint):
    artifacts.save(location, "k1", {"weights": {"w": torch.arange(3.0)}})
    store = ResultsStore(location)
    assert artifacts.problem(store.fs, store.root, "k1") is None
    bucket, prefix = location[5:].split("?")[0].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/artifacts/k1/outputs.pt", Body=b"truncated")
    assert artifacts.problem(store.fs, store.root, "k1") == f"9 bytes, {_written_size(s3, bucket, prefix)} when written"
    with pytest.raises(artifacts.ArtifactDamaged, match="artifacts/k1/outputs.pt"):
        artifacts.load(location, "k1")


def _written_size(s3, bucket: str, prefix: str) -> int:
    import json

    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/artifacts/k1/outputs.pt.sha256")["Body"].read()
    return json.loads(body)["size"]
