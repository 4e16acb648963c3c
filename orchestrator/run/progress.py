"""Progress of a running sweep: a bar on a terminal, else one line per finished stage plus periodic summaries.

The ETA prices each remaining stage at what its own kind of stage has cost so far: seconds per unit of
work (the plan's estimate, in epoch-equivalents) learnt per stage kind, because one global rate is wrong
by a factor of several whenever the kinds finished so far are not the mix still ahead (a warm-up epoch
costs ten times a training epoch in overhead; a CTS stage's estimate mixes search and training epochs).
The sum of those stage-seconds becomes wall-clock time through the parallelism measured so far: busy
stage-seconds finished per second of wall-clock, at most the number of trial actors, and never more than
the number of stages left. tqdm's own rate counts stages, whose costs differ by orders of magnitude; its
estimate is left off the bar.
"""
from __future__ import annotations

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
                 parallel: int = 1):
        self.sweep, self.total = sweep, len(stages)
        self.total_work = float(sum(work for _, work in stages))
        self.echo, self.every_s, self.clock, self.parallel = echo, every_s, clock, max(1, parallel)
        self.rates = StageRates(stages)
        self.done = 0
        self.work_accounted = 0.0  # finished or skipped: no longer ahead of us
        self.busy_s = 0.0          # stage run time of every stage that ran, whatever its outcome
        self.first_start: float | None = None  # when the earliest stage that finished began running
        self.t0 = self.last_line = clock()
        self.bar = None
        if tty and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=f"sweep {sweep}", unit="stage", file=sys.stderr,
                            dynamic_ncols=True, bar_format=_BAR_FORMAT)

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

    def stage_done(self, label: str, kind: str, status: str, seconds: float, accuracy: float | None,
                   work: float) -> None:
        """`seconds`: the stage's own run time (0 for a skipped stage)."""
        self.done += 1
        self.work_accounted += work
        if status != "skipped":
            self.busy_s += seconds
            start = self.clock() - seconds
            self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.rates.finished(kind, status, seconds, work)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"ETA {self._eta_text()}, last: {label} {status}", refresh=True)
            return
        acc = "" if accuracy is None else f"  acc {100 * accuracy:.1f}%"
        self.echo(f"[{self.done}/{self.total}] {label}  {status}  {seconds:.1f} s{acc}")
        self.tick()

    def tick(self) -> None:
        """The periodic line, if `every_s` has passed since the last one (also callable while nothing finishes)."""
        if self.bar is not None or self.done >= self.total:
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
            self.bar.close()
