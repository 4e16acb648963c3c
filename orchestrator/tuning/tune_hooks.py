"""The tune stage's hooks into Ray Tune's control loop: the watch over its trials (`Watcher`), the end of a
search whose trial failed in every attempt (`FirstFailureStops`), and ASHA keeping the trials it stopped
(`RecordingASHA`), so that a configuration without a score is accounted for. See `watch.py`."""
from __future__ import annotations

import json
import os

import ray
from ray.exceptions import RayTaskError
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from orchestrator.tuning.watch import TrialWatch
from workers import liveness


def trial_number(trial_id: str) -> int:
    """A trial's place in the search's draws (Tune numbers its trials in the order they are created)."""
    return int(trial_id.rsplit("_", 1)[-1])


def label(trial) -> str:
    """A trial as the stage's log names it: its number and its configuration."""
    return f"{trial_number(trial.trial_id)} {json.dumps(trial.config, sort_keys=True)}"


class Watcher(Callback):
    """Watches the running trials at every turn of the control loop and kills the hung ones; keeps every failed
    attempt. It is also the tune stage's own sign of life for the scheduler: the search counts as progressing
    while a trial runs (each under its own watch), none waits to start, or one has waited for its process for
    less than the allowance of a new actor; after that the stage's beats stop, and the scheduler's hang check
    takes over (a trial whose process never comes up is not under the trials' watch)."""

    def __init__(self, watch: TrialWatch):
        self.watch, self.waiting_since = watch, None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.watch.started(trial.trial_id)

    def on_step_end(self, iteration, trials, **info):
        running = {t.trial_id: t for t in trials if t.status == Trial.RUNNING}
        for trial_id, why in self.watch.hung(list(running)).items():
            actor = running[trial_id].temporary_state.ray_actor
            if actor is not None:
                ray.kill(actor)  # Tune sees its actor die: the attempt errors and is retried
        now = self.watch.clock()
        if running or not any(t.status == Trial.PENDING for t in trials):
            self.waiting_since = None
        elif self.waiting_since is None:
            self.waiting_since = now
        if self.waiting_since is None or now - self.waiting_since < self.watch.start_s:
            liveness.beat()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        liveness.beat()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.watch.attempt_failed(trial.trial_id, label(trial), last_error(trial), retried=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.watch.attempt_failed(trial.trial_id, label(trial), last_error(trial), retried=False)


class FirstFailureStops(Stopper):
    """Ends the search once a trial has failed in all its attempts: the stage fails anyway, so the configurations
    still to run would be spent for nothing."""

    def __init__(self, watch: TrialWatch):
        self.watch = watch

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return bool(self.watch.failed)


class RecordingASHA(ASHAScheduler):
    """ASHA that keeps the ids of the trials it stopped: those are the only configurations allowed to end
    without a score."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return action


def last_error(trial) -> str:
    """One line: the exception a trial's last attempt raised, or how its actor died."""
    import ray.cloudpickle as pickle

    path = trial.pickled_error_file
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as f:
                err = pickle.load(f)
        except Exception as unreadable:  # noqa: BLE001 - say what could not be read rather than fail the search
            return f"(its error could not be read: {type(unreadable).__name__}: {unreadable})"
        if isinstance(err, RayTaskError) and err.cause is not None:
            err = err.cause
        first = (str(err).strip().splitlines() or [""])[0]
        return f"{type(err).__name__}: {first}"[:500]
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        return (lines[-1] if lines else "unknown error")[:500]
    return "unknown error"
