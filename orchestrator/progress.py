"""Progress of a running sweep: a bar on a terminal, else one line per finished stage plus periodic summaries.

The ETA is the plan's remaining work estimate (training epochs) times the wall-clock seconds per unit of work
measured so far, so it does not jump when a run of cheap stages finishes (tqdm's own rate counts stages, whose
costs differ by orders of magnitude; its estimate is left off the bar). Wall-clock over work done already
accounts for however many stages run at once.
"""
from __future__ import annotations

import sys
import time
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


class Progress:
    """Reports finished stages. `work` of a stage is the plan's estimate in training epochs.

    Skipped stages (a parent failed) take their work off what is left without counting as measured work:
    they cost no time, and counting them would make the rate look faster than training is.
    """

    def __init__(self, sweep: str, total_stages: int, total_work: float, tty: bool,
                 echo: Callable[[str], None], bar: bool = True, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.sweep, self.total, self.total_work = sweep, total_stages, float(total_work)
        self.echo, self.every_s, self.clock = echo, every_s, clock
        self.done = 0
        self.work_accounted = 0.0  # finished or skipped: no longer ahead of us
        self.work_measured = 0.0   # finished by running: what the elapsed time was spent on
        self.t0 = self.last_line = clock()
        self.bar = None
        if tty and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_stages, desc=f"sweep {sweep}", unit="stage", file=sys.stderr,
                            dynamic_ncols=True, bar_format=_BAR_FORMAT)

    def eta(self) -> float | None:
        """Seconds left: remaining estimated work at the measured seconds per unit of work (None before any)."""
        elapsed = self.clock() - self.t0
        if self.work_measured <= 0 or elapsed <= 0:
            return None
        return max(0.0, self.total_work - self.work_accounted) * elapsed / self.work_measured

    def _eta_text(self) -> str:
        if self.done >= self.total:
            return "0 s"
        eta = self.eta()
        return "unknown" if eta is None else duration(eta)

    def stage_done(self, label: str, status: str, seconds: float, accuracy: float | None, work: float) -> None:
        self.done += 1
        self.work_accounted += work
        if status != "skipped":
            self.work_measured += work
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
