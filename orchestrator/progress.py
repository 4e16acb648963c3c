"""Progress of a running sweep: a bar on a terminal, else one line per finished stage plus periodic summaries.

The ETA divides the plan's remaining work estimate (training epochs) by the measured rate of work done per
second of wall-clock, so it does not jump when a run of cheap stages finishes.
"""
from __future__ import annotations

import sys
import time
from typing import Callable


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    def __init__(self, sweep: str, total_stages: int, total_work: float, tty: bool,
                 echo: Callable[[str], None], bar: bool = True, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.sweep, self.total, self.total_work = sweep, total_stages, total_work
        self.echo, self.every_s, self.clock = echo, every_s, clock
        self.done, self.work_done = 0, 0.0
        self.t0 = self.last_line = clock()
        self.bar = None
        if tty and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_stages, desc=f"sweep {sweep}", unit="stage", file=sys.stderr,
                            dynamic_ncols=True)

    def eta(self) -> float | None:
        """Seconds left: remaining estimated work at the rate measured so far (None before any work is done)."""
        elapsed = self.clock() - self.t0
        if self.work_done <= 0 or elapsed <= 0:
            return None
        return max(0.0, self.total_work - self.work_done) * elapsed / self.work_done

    def stage_done(self, label: str, status: str, seconds: float, accuracy: float | None, work: float) -> None:
        self.done += 1
        self.work_done += work
        eta = self.eta()
        eta_text = "—" if eta is None else _duration(eta)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{label}  ETA {eta_text}", refresh=False)
            return
        acc = "" if accuracy is None else f"  acc {100 * accuracy:.1f}%"
        self.echo(f"[{self.done}/{self.total}] {label}  {status}  {seconds:.1f} s{acc}")
        now = self.clock()
        if now - self.last_line >= self.every_s and self.done < self.total:
            self.last_line = now
            self.echo(f"sweep {self.sweep}: {self.done}/{self.total} stages, {_duration(now - self.t0)} elapsed, "
                      f"ETA {eta_text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
