import os
import tempfile

import pytest
import torch

# Tiny models on a 2-core machine: one thread avoids oversubscription (Ray's trial actors
# use the other core), which otherwise slows these tests down many times over.
torch.set_num_threads(1)

# Tests never touch a user's cache or data: everything goes to a per-session temp dir.
os.environ.setdefault("TICKETSWEEP_CACHE", os.path.join(tempfile.gettempdir(), "ticketsweep-test-cache"))

# The object-storage tests talk to a moto S3 server on loopback, which accepts any credentials; set some
# before Ray starts so trial actors inherit them, and never let the AWS SDK probe instance metadata.
for _name, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                      ("AWS_EC2_METADATA_DISABLED", "true")):
    os.environ.setdefault(_name, _value)

# Ray's session files go to a directory of this test session's own, so a stranger's (or a dead) cluster
# recorded in the default /tmp/ray is never joined, and nothing this session starts is left behind there.
# Short path: Ray's unix sockets must fit in 107 characters.
RAY_TMPDIR = tempfile.mkdtemp(prefix="tsray-", dir="/tmp")
os.environ["RAY_TMPDIR"] = RAY_TMPDIR
# The session cluster is private: a RAY_ADDRESS in the caller's environment must not make it join another.
os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Code under test may set torch's thread count (a tuning trial or a trial actor run in-process does);
    restore one thread for the next test, whose float results (recorded bit for bit in some tests) depend on
    how a reduction is split over threads, so that no test's outcome depends on which test ran before it."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_cluster():
    """One real private local Ray (2 CPUs) for the whole session: starting Ray costs ~5 s and ~700 MB. Started
    as `submit` starts its private cluster, so it too listens on loopback only."""
    import ray

    from orchestrator.deploy.cluster import connect

    connect(None, dashboard=False, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_cluster) -> str:
    """The session cluster's GCS address (loopback), for a `submit --address` in a subprocess: a driver that
    joins it skips starting and stopping a cluster of its own. Only for tests whose subject is not how a
    private cluster starts."""
    return ray_cluster.get_runtime_context().gcs_address


def pytest_collection_modifyitems(config, items):
    """A test on the session's Ray is `slow` (pyproject.toml's marker): the fast tier (-m "not slow") must never
    start a cluster."""
    unmarked = [item.nodeid for item in items
                if {"ray_cluster", "ray_address"} & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("tests on the session's Ray must be marked @pytest.mark.slow: " + ", ".join(unmarked))


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(RAY_TMPDIR, ignore_errors=True)
