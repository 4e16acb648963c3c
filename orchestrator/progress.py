"""Progress of a running sweep: a bar on a terminal, else one line per finished stage plus periodic summaries.

The ETA prices each remaining stage at what its own kind of stage has cost so far: seconds per unit of
work (the plan's estimate, in epoch-equivalents) learnt per stage kind, because one global rate is wrong
by a factor of several whenever the kinds finished so far are not the mix still ahead (a warm-up epoch
costs ten times a training epoch in overhead; a CTS stage's estimate mixes search and training epochs).
The sum of those stage-seconds becomes wall-clock time through the parallelism measured so far: busy
stage-seconds finished per second of wall-clock, at most the number of trial actors, and never more than
the number of stages left. tqdm's own rate counts stages, whose costs differ by orders of magnitude; its
estimate is left off the bar.

On a terminal the bar has a second line naming the stages that run now and their last epoch (the trial
actors report it with their liveness answers); both lines refresh every tick, not only when a stage finishes.
Elsewhere (a log file, a CI job) the output is one line per finished stage plus the periodic summary.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclass
class _Tally:
    count: int = 0
    work: float = 0.0
    seconds: float = 0.0


@dataclass
class RunningStage:
    label: str
    kind: str
    method: str | None
    started: float
    epoch: tuple[str, float] | None = None   # (phase, epoch) of the last epoch it finished
    epochs_seen: float = 0.0                 # epochs counted into the sweep's epoch count so far
    phase_high: float = 0.0                  # the highest epoch seen of the current phase


def _terminal_width() -> int:
    """Columns of the terminal the bar is drawn on (stderr, where stdout may be redirected)."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 100
    except (OSError, ValueError, AttributeError):
        return 100


def running_line(running: list[RunningStage], width: int) -> str:
    """'running: ltr L=3 s=0 epoch 4, snip s=1 sp=0.9000 starting', cut to `width` characters with the number
    of stages that did not fit. Oldest first: the stages most likely to finish next."""
    if not running:
        return "running: nothing"
    parts = []
    for stage in sorted(running, key=lambda r: r.started):
        if stage.epoch is None:
            parts.append(f"{stage.label} starting")
        else:
            phase, epoch = stage.epoch
            parts.append(f"{stage.label} {'' if phase == 'train' else phase + ' '}epoch {epoch:g}")
    shown: list[str] = []
    for part in parts:
        rest = len(parts) - len(shown) - 1
        if len("running: " + ", ".join(shown + [part]) + (f" (+{rest} more)" if rest else "")) > width:
            break
        shown.append(part)
    hidden = len(parts) - len(shown)
    more = f" (+{hidden} more)" if hidden else ""
    if not shown:  # not even the oldest fits whole: cut it
        return ("running: " + parts[0])[:max(0, width - len(more) - 1)] + "…" + more
    return "running: " + ", ".join(shown) + more


class StageRates:
    """Seconds of stage run time per unit of work, per stage kind, and what the stages left will take.

    Only stages that ran to the end ("ok") teach a rate: a failed or diverged stage stopped early, and a
    skipped one never ran. Every finished stage, whatever its status, is no longer ahead of us.
    """

    def __init__(self, stages: list[tuple[str, float]]):
        self.left: dict[str, _Tally] = {}
        for kind, work in stages:
            tally = self.left.setdefault(kind, _Tally())
            tally.count += 1
            tally.work += work
        self.learnt: dict[str, _Tally] = {}

    def finished(self, kind: str, status: str, seconds: float, work: float) -> None:
        tally = self.left.get(kind)
        if tally is not None and tally.count > 0:
            tally.count -= 1
            tally.work = max(0.0, tally.work - work) if tally.count else 0.0
        if status == "ok":
            learnt = self.learnt.setdefault(kind, _Tally())
            learnt.count += 1
            learnt.work += work
            learnt.seconds += seconds

    def stages_left(self) -> int:
        return sum(t.count for t in self.left.values())

    def pooled_rate(self) -> float | None:
        """Seconds per unit of work over every kind learnt so far: the price of a kind not seen yet."""
        work = sum(t.work for t in self.learnt.values())
        return sum(t.seconds for t in self.learnt.values() if t.work > 0) / work if work > 0 else None

    def stage_seconds_left(self) -> float | None:
        """Σ over the stages left of work × their kind's rate; None while some of it cannot be priced yet."""
        pooled, total = self.pooled_rate(), 0.0
        for kind, left in self.left.items():
            if left.count == 0:
                continue
            learnt = self.learnt.get(kind)
            if learnt is not None and learnt.work > 0:
                total += left.work * learnt.seconds / learnt.work
            elif learnt is not None and left.work == 0:
                total += left.count * learnt.seconds / learnt.count  # zero-work kinds (init): per stage
            elif left.work == 0:
                continue  # nothing learnt, and the plan expects them to cost nothing
            elif pooled is not None:
                total += left.work * pooled
            else:
                return None
        return total


class Progress:
    """Reports finished stages. `stages`: (kind, work) of every stage this run will finish or skip."""

    def __init__(self, sweep: str, stages: list[tuple[str, float]], tty: bool, echo: Callable[[str], None],
                 bar: bool = True, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 parallel: int = 1, metrics=None, width: Callable[[], int] | None = None):
        self.sweep, self.total = sweep, len(stages)
        self.total_work = float(sum(work for _, work in stages))
        self.echo, self.every_s, self.clock, self.parallel = echo, every_s, clock, max(1, parallel)
        self.rates = StageRates(stages)
        self.done = 0
        self.work_accounted = 0.0  # finished or skipped: no longer ahead of us
        self.busy_s = 0.0          # stage run time of every stage that ran, whatever its outcome
        self.first_start: float | None = None  # when the earliest stage that finished began running
        self.t0 = self.last_line = clock()
        self.running: dict[str, RunningStage] = {}
        self.epochs = 0.0          # epochs the trial actors reported, or finished stages' planned epochs
        self.metrics = metrics     # SweepMetrics, or None
        self.width = width or _terminal_width
        self.bar = self.status = None
        self.last: str | None = None   # the bar's note on the stage that finished last
        if tty and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=f"sweep {sweep}", unit="stage", file=sys.stderr,
                            dynamic_ncols=True, bar_format=_BAR_FORMAT)
            self.status = tqdm(total=0, position=1, bar_format="{desc}", file=sys.stderr, leave=False)
        if self.metrics is not None:
            self.metrics.update(self)

    def parallelism(self) -> float | None:
        """Busy stage-seconds finished per wall-clock second since the first stage began, at most the number
        of trial actors. Counted from the first stage, not from our start: starting the trial actors (and
        loading data) happens once, and would otherwise be spread over the whole remaining estimate."""
        if self.first_start is None:
            return None
        elapsed = self.clock() - self.first_start
        if self.busy_s <= 0 or elapsed <= 0:
            return None
        return min(float(self.parallel), self.busy_s / elapsed)

    def eta(self) -> float | None:
        """Wall-clock seconds left (None until something has been measured that prices the rest)."""
        left = self.rates.stages_left()
        if left == 0:
            return 0.0
        seconds, parallel = self.rates.stage_seconds_left(), self.parallelism()
        if seconds is None or parallel is None:
            return None
        return seconds / min(parallel, float(left))

    def _eta_text(self) -> str:
        if self.done >= self.total:
            return "0 s"
        eta = self.eta()
        return "unknown" if eta is None else duration(eta)

    def epochs_per_second(self) -> float | None:
        """Epochs finished per wall-clock second since the first stage began (None before that)."""
        start = self.first_start if self.first_start is not None else min(
            (r.started for r in self.running.values()), default=None)
        if start is None or self.clock() <= start:
            return None
        return self.epochs / (self.clock() - start)

    def stage_started(self, key: str, label: str, kind: str, method: str | None = None) -> None:
        self.running[key] = RunningStage(label, kind, method, self.clock())
        self._refresh()

    def stage_epoch(self, key: str, phase: str, epoch: float) -> None:
        """The running stage `key` has finished epoch `epoch` of its `phase` ('train', 'search', ...)."""
        stage = self.running.get(key)
        if stage is None:
            return
        if stage.epoch is None or stage.epoch[0] != phase:
            stage.phase_high = 0.0
        stage.epoch = (phase, epoch)
        new = max(0.0, epoch - stage.phase_high)
        stage.phase_high = max(stage.phase_high, epoch)
        stage.epochs_seen += new
        self.epochs += new

    def stage_stopped(self, key: str) -> None:
        """The stage's attempt ended without a result (lost or hung: it may run again)."""
        self.running.pop(key, None)
        self._refresh()

    def stage_done(self, label: str, kind: str, status: str, seconds: float, accuracy: float | None,
                   work: float, key: str | None = None, method: str | None = None) -> None:
        """`seconds`: the stage's own run time (0 for a skipped stage)."""
        stage = self.running.pop(key, None) if key is not None else None
        if status == "ok":  # epochs the pings did not see (the last ones, or a stage faster than a tick)
            self.epochs += max(0.0, work - (stage.epochs_seen if stage else 0.0))
        if self.metrics is not None:
            self.metrics.finished(kind, method, status)
        self.done += 1
        self.work_accounted += work
        if status != "skipped":
            self.busy_s += seconds
            start = self.clock() - seconds
            self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.rates.finished(kind, status, seconds, work)
        if self.bar is not None:
            self.last = f"last: {label} {status}"
            self.bar.update(1)
            self._refresh()
            return
        acc = "" if accuracy is None else f"  acc {100 * accuracy:.1f}%"
        self.echo(f"[{self.done}/{self.total}] {label}  {status}  {seconds:.1f} s{acc}")
        self.tick()

    def _refresh(self) -> None:
        """Redraw the terminal's two lines: the bar with its ETA, and the stages running now."""
        if self.metrics is not None:
            self.metrics.update(self)
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"ETA {self._eta_text()}" + (f", {self.last}" if self.last else ""),
                                 refresh=False)
        self.bar.refresh()
        self.status.set_description_str(running_line(list(self.running.values()), max(20, self.width() - 1)),
                                        refresh=True)

    def tick(self) -> None:
        """The periodic line, if `every_s` has passed since the last one (also callable while nothing finishes);
        on a terminal, a redraw of the bar and of the running stages."""
        if self.bar is not None:
            self._refresh()
            return
        if self.metrics is not None:
            self.metrics.update(self)
        if self.done >= self.total:
            return
        now = self.clock()
        if now - self.last_line < self.every_s:
            return
        self.last_line = now
        self.echo(f"sweep {self.sweep}: {self.done}/{self.total} stages, "
                  f"{self.work_accounted:.1f}/{self.total_work:.1f} epochs of work, "
                  f"{duration(now - self.t0)} elapsed, ETA {self._eta_text()}")

    def close(self) -> None:
        if self.bar is not None:
            self.status.close()
            self.bar.close()
