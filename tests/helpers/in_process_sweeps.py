"""A sweep run by the driver inside the test's process (on the session's cluster), without the CLI."""
from __future__ import annotations

from orchestrator.run import driver
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store.results_store import ResultsStore


def submit(spec: dict, store):
    s = parse_spec(spec)
    return driver.run_plan(build_plan(s), s, ResultsStore(str(store)), progress=False, echo=lambda *_: None)


def submitted(spec: dict, tmp_path_factory, name: str):
    """A fresh store with `spec` run into it, every stage ok."""
    store = tmp_path_factory.mktemp(name) / "store"
    summary = submit(spec, store)
    assert summary.failed == 0, summary.failures
    return store
