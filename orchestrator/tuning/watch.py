"""A tune stage's watch over its trials: each trial proves it is alive as a sweep stage does, and a trial that
hangs is killed so that Ray Tune retries it.

Every trial sends a beat each second (and at once after its slowest epoch so far) from a thread of its own
(`TrialBeats`, in the trial's process): how long its stage code has been silent (`workers.liveness`, which the
training loop, the searches and the scorers beat) and its slowest epoch so far. The tune actor keeps them
(`TrialWatch`) and checks its running trials at every turn of Tune's control loop (`tune_hooks.Watcher`): a trial
silent for longer than the sweep's hang limit (`HangPolicy`: max(hang_floor_s, hang_factor × the slowest epoch of
this search), or the start-up limit before any, plus the scheduler's allowance for a new actor until the trial's
first beat) — whether it stopped beating (a stopped or wedged process) or beats without progress (a live-lock) —
has its actor killed. Tune then records the trial as errored and, under
`FailureConfig(max_failures=max_retries)`, runs it again from scratch (the same configuration; its seeds come
from the plan, so the same numbers). A trial that fails more often than that ends the search
(`tune_hooks.FirstFailureStops`): the stage cannot complete without it."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from workers import liveness

BEAT_S = 1.0  # how often a trial beats (the scheduler pings its stages as often)


class TrialBeats:
    """In a trial's process: a daemon thread that sends `monitor.trial_beat(trial_id, silent_s, slowest_epoch_s)`
    every BEAT_S until `stop()`, and at once when an epoch is the slowest so far: a trial whose epochs all end
    within a second would otherwise never tell the watch their length, which keeps the whole search on the
    start-up limit (several floors) where max(floor, factor x the slowest epoch) was meant. A stopped process
    sends nothing, which is how the watch sees it."""

    def __init__(self, monitor, trial_id: str, clock=time.monotonic):
        self.monitor, self.trial_id, self.clock = monitor, trial_id, clock
        self.slowest_epoch_s, self._epoch_at = 0.0, clock()
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trial-beats", daemon=True)

    def start(self) -> "TrialBeats":
        liveness.beat()  # a reused trial process carries the previous trial's last beat
        self._thread.start()
        return self

    def epoch(self) -> None:
        """An epoch (or an evaluation) ended: its length scales the hang limit, as a stage's does."""
        t = self.clock()
        if t - self._epoch_at > self.slowest_epoch_s:
            self.slowest_epoch_s = t - self._epoch_at
            self._wake.set()
        self._epoch_at = t

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            try:
                self.monitor.trial_beat.remote(self.trial_id, liveness.silent_for(), self.slowest_epoch_s)
            except Exception:  # noqa: BLE001 - one beat not sent is one missed; the thread must go on beating
                pass
            self._wake.wait(BEAT_S)
            self._wake.clear()
            if self._stop.is_set():
                return


@dataclass
class _Heard:
    heard_at: float            # the watch's clock: the trial's start, or its last beat
    silent_s: float = 0.0      # what the trial last reported
    slowest_epoch_s: float = 0.0
    beaten: bool = False       # a beat has come since the trial (this attempt) started


@dataclass
class TrialWatch:
    """The beats of a search's trials and the faults seen so far; thread-safe (beats arrive on the tune actor's
    second thread, the checks run in Tune's control loop)."""
    policy: object             # orchestrator.run.scheduler.HangPolicy
    max_retries: int
    # Added to the limit until a trial's first beat, as the scheduler adds it until a new actor first answers: a
    # trial's process fetches its inputs (importing torch) before it can beat.
    start_s: float = 0.0
    clock: object = time.monotonic
    heard: dict[str, _Heard] = field(default_factory=dict)
    slowest_epoch_s: float = 0.0                                  # of any trial of this search
    killed: dict[str, str] = field(default_factory=dict)          # trial id -> why its actor was killed
    faults: dict[str, list[str]] = field(default_factory=dict)    # trial id -> one message per failed attempt
    failed: dict[str, str] = field(default_factory=dict)          # trial id -> its last error, retries used up
    events: list[str] = field(default_factory=list)               # lines for the stage's log
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __getstate__(self) -> dict:
        # Tune pickles its run configuration (and so this, through the callback) into its experiment folder.
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def started(self, trial_id: str) -> None:
        with self._lock:
            self.heard[trial_id] = _Heard(self.clock())

    def beat(self, trial_id: str, silent_s: float, slowest_epoch_s: float) -> None:
        with self._lock:
            heard = self.heard.get(trial_id)
            if heard is None:  # a late beat of an attempt already ended
                return
            heard.heard_at, heard.silent_s, heard.beaten = self.clock(), float(silent_s), True
            heard.slowest_epoch_s = max(heard.slowest_epoch_s, float(slowest_epoch_s))
            self.slowest_epoch_s = max(self.slowest_epoch_s, heard.slowest_epoch_s)

    def limit(self, trial_id: str) -> float:
        heard = self.heard.get(trial_id)
        return self.policy.limit(max(heard.slowest_epoch_s if heard else 0.0, self.slowest_epoch_s))

    def hung(self, running: list[str]) -> dict[str, str]:
        """The running trials silent for longer than their limit, each with why. The caller kills them; they are
        not watched again until they start again."""
        out = {}
        with self._lock:
            t = self.clock()
            for trial_id in running:
                heard = self.heard.setdefault(trial_id, _Heard(t))
                unanswered = t - heard.heard_at
                silent = heard.silent_s + unanswered
                limit = self.limit(trial_id) + (0.0 if heard.beaten else self.start_s)
                if silent <= limit:
                    continue
                why = ("it has sent no beat since it started" if not heard.beaten
                       else f"it has sent no beat for {unanswered:.0f} s" if unanswered > silent - unanswered
                       else "it beats but makes no progress")
                out[trial_id] = f"hung: no sign of life for {silent:.0f} s (limit {limit:.0f} s: {why})"
                self.killed[trial_id] = out[trial_id] + "; its process was killed"
                del self.heard[trial_id]
        return out

    def attempt_failed(self, trial_id: str, label: str, error: str, retried: bool) -> None:
        """A trial's attempt ended in an error (its actor killed by the watch, dead, or an exception)."""
        with self._lock:
            self.heard.pop(trial_id, None)
            message = self.killed.pop(trial_id, None) or error
            faults = self.faults.setdefault(trial_id, [])
            faults.append(message)
            attempts = f"attempt {len(faults)} of {self.max_retries + 1}"
            if retried:
                self.events.append(f"trial {label} failed ({attempts}), running it again: {message}")
            else:
                self.failed[trial_id] = message
                self.events.append(f"trial {label} failed ({attempts}), no retry left: {message}")
