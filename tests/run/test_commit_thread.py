"""Commits off the scheduling loop's thread: the loop hands out work while the store is written, writes stay in
order, a stage is counted finished only once its commit has returned, and a failed write stops the run."""
import threading

import pytest

from orchestrator.run import driver
from orchestrator.run.commit_thread import CommitThread
from orchestrator.run.scheduler import Scheduler
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import parse_spec
from orchestrator.store.files import StoreError
from orchestrator.store.results_store import ResultsStore

SPEC = {
    "name": "commits",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 1, "batch_size": 32, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5, 0.9],
    "seeds": [0],
}


def test_writes_run_in_order_and_what_follows_each_runs_on_the_callers_thread_after_it():
    commits, log = CommitThread(), []
    writer = set()
    for i in range(50):
        commits.submit(lambda i=i: (log.append(("write", i)), writer.add(threading.get_ident())),
                       lambda i=i: log.append(("then", i, threading.get_ident())))
    commits.flush()
    commits.close()
    assert [e[1] for e in log if e[0] == "write"] == list(range(50))
    thens = [e for e in log if e[0] == "then"]
    assert [e[1] for e in thens] == list(range(50))
    assert {e[2] for e in thens} == {threading.get_ident()} and writer.isdisjoint({threading.get_ident()})
    for i in range(50):  # each write came before what follows it
        assert log.index(("write", i)) < log.index(("then", i, threading.get_ident()))


def test_a_failed_write_is_raised_on_the_callers_thread_and_nothing_after_it_is_written_or_counted():
    commits, written, counted = CommitThread(), [], []

    def fail():
        raise StoreError("store x: cannot write y (disk full)")
    commits.submit(lambda: written.append(1), lambda: counted.append(1))
    commits.submit(fail, lambda: counted.append(2))
    commits.submit(lambda: written.append(3), lambda: counted.append(3))
    with pytest.raises(StoreError, match="disk full"):
        commits.flush()
    commits.submit(lambda: written.append(4))  # the run is stopping on that error: nothing more is written
    commits.close()
    assert written == [1] and counted == [1]


def test_close_without_writing_what_is_pending_drops_it():
    commits, written, gate = CommitThread(), [], threading.Event()
    commits.submit(gate.wait)  # the write under way when the run stops: it ends, and nothing after it is made
    commits.submit(lambda: written.append(1))
    threading.Timer(2.0, gate.set).start()  # after close has said to drop what is pending (its first step)
    commits.close(write_pending=False)
    assert written == []


@pytest.mark.slow
def test_the_loop_hands_out_work_while_a_commit_is_written_and_counts_a_stage_only_after_it(ray_cluster,
                                                                                          monkeypatch, tmp_path):
    spec = parse_spec(SPEC)
    plan = build_plan(spec)
    started, all_started = [], threading.Event()
    start = Scheduler._start

    def counting_start(self, key, actor):
        start(self, key, actor)
        started.append(key)
        if len(started) == len(plan.stages):
            all_started.set()
    monkeypatch.setattr(Scheduler, "_start", counting_start)
    lines, held = [], {}
    commit = ResultsStore.commit

    def held_first_commit(self, sweep, key, *args, **kw):
        if not held:
            # The first stage's commit is held until every stage has been handed out. When commits were written
            # on the loop's thread nothing more was handed out meanwhile, and this wait ran out.
            held["all started"] = all_started.wait(120)
            held["lines"] = list(lines)
            held["stored"] = len(ResultsStore(str(tmp_path / "store")).list_files("stages", "commits"))
        return commit(self, sweep, key, *args, **kw)
    monkeypatch.setattr(ResultsStore, "commit", held_first_commit)
    summary = driver.run_plan(plan, spec, ResultsStore(str(tmp_path / "store")), progress=False, echo=lines.append)
    assert held["all started"], "no stage was handed out while the first commit was being written"
    # Written in order: nothing was committed, nor counted finished, before the first commit returned.
    assert held["stored"] == 0
    assert not [x for x in held["lines"] if x.startswith("[")], held["lines"]
    assert summary.ran == len(plan.stages) and summary.failed == 0
    assert len([x for x in lines if x.startswith("[")]) == len(plan.stages)
    committed = ResultsStore(str(tmp_path / "store")).committed("commits", ["stage_key", "status"]).table
    assert sorted(committed.column("stage_key").to_pylist()) == sorted(plan.stages)
