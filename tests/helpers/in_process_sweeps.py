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


def before_kind(spec: dict, finished, store, kind: str):
    """A copy of the `finished` store of `spec` as it stood before any stage of `kind` committed: those stages
    and everything below them gone (commits, views, artifacts, logs), what they depend on kept. The state a
    driver killed just before their first commit leaves, so a test of a fault in those stages runs only them
    rather than the whole sweep again."""
    import shutil
    from pathlib import Path

    from orchestrator.run.scheduler import descendants

    plan = build_plan(parse_spec(spec))
    children = plan.children()
    gone = set()
    for key, stage in plan.stages.items():
        if stage.kind == kind:
            gone |= {key} | descendants(key, children)
    shutil.copytree(finished, store)
    store = Path(store)
    for key in gone:
        shutil.rmtree(store / "artifacts" / key, ignore_errors=True)
        for path in store.glob(f"*/sweep=*/**/{key}-*"):
            path.unlink()
    for folder in sorted((p for p in store.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    return store
