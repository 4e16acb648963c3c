"""Faults of Ray Tune trials on real processes: a trial's process stopped with SIGSTOP while the tune stage runs
is detected within the sweep's hang limit (from the trial's own beats), killed and run again, and the search
gives exactly what an unfaulted search gives; a trial whose process is killed in every attempt fails the tune
stage, naming the configuration and the error, its dependants are skipped and `submit` exits non-zero. The rule
of the watch itself (limits, and why a trial is hung) on a clock of the test's own."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pandas as pd
import psutil
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.run.scheduler import STARTUP_FACTOR, HangPolicy
from orchestrator.store.results_store import ResultsStore
from orchestrator.store.schemas import WORK_COLUMNS
from tests.helpers.in_process_sweeps import before_kind, submit

FLOOR_S = 10
SPEC = {
    "name": "stall",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic"},
    "training": {"epochs": 6, "batch_size": 32, "lr": 0.05, "rewind": "2it"},
    "methods": [{"kind": "oneshot", "criterion": "magnitude", "tune": {"training.lr": {"loguniform": [0.01, 0.3]}}}],
    "sparsities": [0.8],
    "seeds": [0],
    "tuning": {"configurations": 3, "grace_period": 1, "reduction_factor": 3, "sparsities": [0.8],
               "seeds": [1000000]},
    # A trial's first epoch counts its set-up (seconds), its others milliseconds: a factor of 3 over the slowest
    # keeps the limit near the floor, so the stopped trial is given up on in seconds rather than a minute.
    "resources": {"hang_floor_s": FLOOR_S, "hang_factor": 3, "max_retries": 1,
                  "max_concurrent": 1},  # one trial actor: each is a process start (torch), dearer than these stages
}


class TrialProcesses(threading.Thread):
    """Watches this test session's own cluster (the processes below this one) for Tune trial processes running a
    trial (titled `ray::ImplicitFunc.train` while Tune waits on the trial's next report) and sends `sig`:
    - when="reported": to the first one as soon as its first report is in (its title changes back: the trial
      is mid-run and beating);
    - when="every": to every one seen, at once."""

    def __init__(self, sig: int, when: str):
        super().__init__(daemon=True)
        self.sig, self.when, self.hit = sig, when, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            for pid in _trials():
                if pid in self.hit:
                    continue
                if self.when == "reported":
                    while _title(pid).startswith("ray::ImplicitFunc.train") and not self.done.is_set():
                        # Tune's next request for a report follows within milliseconds: poll this one process
                        time.sleep(0.001)
                try:
                    os.kill(pid, self.sig)
                except ProcessLookupError:
                    continue
                self.hit.append(pid)
                if self.when != "every":
                    return

    def __enter__(self) -> "TrialProcesses":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()
        for pid in self.hit:  # whatever is left of a process this test stopped
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _trials() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True)
            if _title(p.pid).startswith("ray::ImplicitFunc.train")]


@pytest.fixture(scope="module")
def unfaulted(ray_cluster, tmp_path_factory):
    store = tmp_path_factory.mktemp("unfaulted") / "store"
    assert submit(SPEC, store).failed == 0
    return store


@pytest.mark.slow
def test_a_trial_stopped_mid_run_is_detected_within_the_hang_limit_retried_and_the_choice_is_unchanged(
        unfaulted, tmp_path):
    # The faulted run starts where the unfaulted one stood before its search: the stages the search reads are
    # not what is tested, and running them again would only repeat the unfaulted run's work.
    before_kind(SPEC, unfaulted, tmp_path / "faulted", "tune")
    t0 = time.monotonic()
    with TrialProcesses(signal.SIGSTOP, "reported") as stopper:
        summary = submit(SPEC, tmp_path / "faulted")
    seconds = time.monotonic() - t0
    assert len(stopper.hit) == 1, "no trial process was seen"
    assert summary.failed == 0, summary.failures
    assert not psutil.pid_exists(stopper.hit[0]) or psutil.Process(stopper.hit[0]).status() == psutil.STATUS_ZOMBIE

    clean, faulted = (pd.read_parquet(s / "tuning").sort_values("trial").reset_index(drop=True)
                      for s in (unfaulted, tmp_path / "faulted"))
    # Every configuration, every report ASHA saw, every score and the choice: as without the fault; and the work
    # each counted (a configuration run again counts its last attempt, as a sweep stage counts its ok attempt).
    assert faulted[list(WORK_COLUMNS)].notna().all(axis=None)
    for column in ("trial", "config", "reports", "epochs", "score", "completed", "chosen", *WORK_COLUMNS):
        assert clean[column].fillna(-1).tolist() == faulted[column].fillna(-1).tolist(), column
    assert json.loads(clean.loc[clean["chosen"], "config"].iloc[0]) == {"training.lr": 0.05}  # the untuned default

    # One trial was stopped (the first, unless its first report went by unseen); its failed attempt is in its row.
    (stopped,) = faulted.index[faulted["error"].notna()]
    message = faulted["error"].iloc[stopped]
    assert message.startswith("attempt 1: hung: no sign of life") and "it has sent no beat for" in message, message
    silent, limit = map(float, re.search(r"no sign of life for (\d+) s \(limit (\d+) s", message).groups())
    # The sweep's hang limit: max(floor, hang_factor x the slowest epoch, which counts a trial's set-up), or 5 x
    # the floor before the watch has heard of an epoch; detected within a few turns of Tune's loop.
    assert FLOOR_S <= limit <= max(STARTUP_FACTOR * FLOOR_S, 150), message
    assert limit <= silent <= limit + 15, message
    assert seconds < 400  # far below Ray's own reaping of a stopped worker, generous for a loaded machine

    stages = ResultsStore(str(tmp_path / "faulted")).read("stages", "stall")
    tune = stages[stages["kind"] == "tune"]
    assert list(tune["status"]) == ["ok"]
    clean_stages = ResultsStore(str(unfaulted)).read("stages", "stall")
    assert tune[list(WORK_COLUMNS)].to_dict("records") == \
        clean_stages.loc[clean_stages["kind"] == "tune", list(WORK_COLUMNS)].to_dict("records")
    log = (tmp_path / "faulted" / "logs" / "sweep=stall" / f"{tune['stage_key'].iloc[0]}-1.log").read_text()
    assert "failed (attempt 1 of 2), running it again: hung: no sign of life" in log, log
    accuracy = {s: pd.read_parquet(s / "points")["selected_test_accuracy"].tolist()
                for s in (unfaulted, tmp_path / "faulted")}
    assert accuracy[tmp_path / "faulted"] == accuracy[unfaulted]


@pytest.mark.slow
def test_a_trial_killed_in_every_attempt_fails_the_tune_stage_and_submit(unfaulted, tmp_path):
    before_kind(SPEC, unfaulted, tmp_path / "store", "tune")  # only the search and what follows it run
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "store": str(tmp_path / "store")}))
    with TrialProcesses(signal.SIGKILL, "every") as killer:
        r = CliRunner().invoke(main, ["submit", str(path), "--no-progress", "--no-dashboard"])
    assert len(killer.hit) == 2                             # max_retries 1: two attempts of the first configuration
    assert r.exit_code == 1, r.output
    stages = ResultsStore(str(tmp_path / "store")).read("stages", "stall")
    tune = stages[stages["kind"] == "tune"]
    assert list(tune["status"]) == ["failed"]
    error = tune["error"].iloc[0]
    assert 'tune magnitude[tuned]: configuration 0 {"training.lr": 0.05} failed in all 2 attempts' in error, error
    assert "ActorDiedError" in error, error
    assert error.splitlines()[0] in r.output                # the console says which configuration, and why
    dependants = stages[stages["kind"] == "oneshot"]
    assert len(dependants) == 1 and list(dependants["status"]) == ["skipped"]
    assert not (tmp_path / "store" / "tuning").exists() or pd.read_parquet(tmp_path / "store" / "tuning").empty


def test_the_trial_watch_applies_the_sweeps_hang_limit_to_each_trial():
    from orchestrator.tuning.watch import TrialWatch

    now = [0.0]
    watch = TrialWatch(HangPolicy(floor_s=10, factor=10), max_retries=1, start_s=5, clock=lambda: now[0])
    for trial in ("t_00000", "t_00001", "t_00002"):
        watch.started(trial)
    running = ["t_00000", "t_00001", "t_00002"]
    now[0] = 54.9
    assert watch.hung(running) == {}          # nothing measured yet: 5 x the floor, + 5 s until a first beat
    watch.beat("t_00001", 0.0, 3.0)           # an epoch of 3 s: 10 x 3 s from now on, for every trial
    watch.beat("t_00002", 0.0, 0.1)
    now[0] = 55.5
    assert watch.hung(running) == {"t_00000": "hung: no sign of life for 56 s (limit 35 s: it has sent no beat "
                                              "since it started)"}
    assert watch.limit("t_00002") == 30.0
    now[0] = 70.0
    watch.beat("t_00002", 19.0, 0.1)          # beats, but its stage has made no progress for 19 s
    now[0] = 87.3
    hung = watch.hung(running[1:])
    assert hung == {"t_00001": "hung: no sign of life for 32 s (limit 30 s: it has sent no beat for 32 s)",
                    "t_00002": "hung: no sign of life for 36 s (limit 30 s: it beats but makes no progress)"}
    watch.beat("t_00001", 0.0, 3.0)           # a late beat of the killed attempt is not heard
    now[0] = 200.0
    assert watch.hung(running[1:]) == {}      # watched afresh from now: the retry's start
    watch.attempt_failed("t_00001", "1 {}", "ActorDiedError: gone", retried=True)
    watch.attempt_failed("t_00001", "1 {}", "ValueError: boom", retried=False)
    assert watch.faults["t_00001"][0] == hung["t_00001"] + "; its process was killed"
    assert watch.failed == {"t_00001": "ValueError: boom"}
    assert watch.events[-1] == "trial 1 {} failed (attempt 2 of 2), no retry left: ValueError: boom"


def test_a_trial_tells_the_watch_of_its_slowest_epoch_at_once(monkeypatch):
    """Not only at its next regular beat, which a trial of short epochs may never send before it ends."""
    import queue
    from types import SimpleNamespace

    from orchestrator.tuning import watch

    monkeypatch.setattr(watch, "BEAT_S", 3600.0)  # no regular beat during the test: any beat below is the epoch's
    sent, now = queue.Queue(), [0.0]
    monitor = SimpleNamespace(trial_beat=SimpleNamespace(remote=lambda *beat: sent.put(beat)))
    beats = watch.TrialBeats(monitor, "t_00000", clock=lambda: now[0]).start()
    assert sent.get(timeout=60)[2] == 0.0     # the first beat, at its start
    now[0] = 3.0
    beats.epoch()
    assert sent.get(timeout=60)[::2] == ("t_00000", 3.0)
    now[0] = 3.5
    beats.epoch()                             # not its slowest: nothing new to tell
    beats.stop()
    assert sent.empty() or sent.get()[2] == 3.0  # stop() may wake it for one last beat
