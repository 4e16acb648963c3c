"""submit's input check runs while its private Ray starts (driver._prepare): the verdict is awaited once Ray is
up, bad input is still the error reported whatever else failed, and a cluster started meanwhile is shut down.
Ray itself is stood in for here (what is tested is the order); tests/cli/test_preflight.py runs a real one."""
import pytest

from orchestrator.deploy import cluster
from orchestrator.run import driver
from orchestrator.spec.sweep_spec import parse_spec

SPEC = parse_spec({"name": "overlap", "model": {"name": "mlp"}, "dataset": {"name": "synthetic"},
                   "training": {"epochs": 1}, "methods": [{"kind": "oneshot", "criterion": "random"}],
                   "sparsities": [0.5], "seeds": [0]})


@pytest.fixture
def events(monkeypatch):
    seen = []
    monkeypatch.setattr(cluster, "local_resources", lambda: {"CPU": 64, "GPU": 0, "memory": 2 ** 40})
    monkeypatch.setattr(cluster, "connect", lambda *a, **k: seen.append("ray started") or ("http://x", True))
    monkeypatch.setattr(driver.ray, "shutdown", lambda: seen.append("ray shut down"))
    return seen


def check(events, verdict=None):
    """A preflight as submit's: starting it returns what waits for the verdict (`verdict` raised there)."""
    def start():
        events.append("check started")

        def wait():
            events.append("check waited")
            if verdict is not None:
                raise verdict
        return wait
    return start


def test_the_input_check_runs_while_ray_starts_and_is_waited_for_after(events):
    assert driver._prepare(SPEC, check(events), False, None, True, False) == ("http://x", True)
    assert events == ["check started", "ray started", "check waited"]


def test_bad_input_found_while_ray_started_shuts_the_cluster_down_and_exits_2(events):
    with pytest.raises(SystemExit) as exit_:
        driver._prepare(SPEC, check(events, SystemExit(2)), False, None, True, False)
    assert exit_.value.code == 2
    assert events == ["check started", "ray started", "check waited", "ray shut down"]


def test_bad_input_is_the_error_reported_when_the_cluster_fails_too(events, monkeypatch):
    def no_start(*a, **k):
        events.append("ray failed")
        raise cluster.ClusterStartError("private Ray cluster: did not start")
    monkeypatch.setattr(cluster, "connect", no_start)
    with pytest.raises(SystemExit):
        driver._prepare(SPEC, check(events, SystemExit(2)), False, None, True, False)
    assert events == ["check started", "ray failed", "check waited"]
    with pytest.raises(cluster.ClusterStartError):  # good input: the cluster's failure is the error
        driver._prepare(SPEC, check(events), False, None, True, False)
    # and a trial that no node can host, found before Ray starts
    big = SPEC.model_copy(update={"resources": SPEC.resources.model_copy(update={"cpus_per_trial": 1000})})
    events.clear()
    with pytest.raises(SystemExit):
        driver._prepare(big, check(events, SystemExit(2)), False, None, True, False)
    assert events == ["check started", "check waited"]
