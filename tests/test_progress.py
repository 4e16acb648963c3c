"""The progress reporter with a fake clock: stage lines, periodic lines, and an ETA from work, not stage counts."""
import io

import pytest

from orchestrator.progress import Progress, duration


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reporter(total_stages=4, total_work=100.0, every_s=30.0, **kw):
    clock, lines = FakeClock(), []
    p = Progress("quick", total_stages, total_work, tty=kw.pop("tty", False), echo=lines.append,
                 every_s=every_s, clock=clock, **kw)
    return p, clock, lines


def test_duration_formats():
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3600 + 7 * 60 + 20)] == [
        "0 s", "59 s", "1 min 01 s", "59 min 59 s", "1 h 07 min"]


def test_one_line_per_finished_stage_with_status_seconds_and_accuracy():
    p, clock, lines = reporter(every_s=1e9)
    clock.now += 5
    p.stage_done("dense s=0", "ok", 4.96, 0.9123, work=10)
    p.stage_done("snip s=0 sp=0.9000", "failed", 0.4, None, work=10)
    assert lines == ["[1/4] dense s=0  ok  5.0 s  acc 91.2%",
                     "[2/4] snip s=0 sp=0.9000  failed  0.4 s"]


def test_eta_is_remaining_work_times_measured_seconds_per_epoch():
    p, clock, _ = reporter(total_work=100.0)
    assert p.eta() is None  # nothing measured yet
    clock.now += 20
    p.stage_done("a", "ok", 20.0, None, work=10)   # 2 s of wall-clock per epoch so far
    assert p.eta() == pytest.approx(90 * 2.0)
    clock.now += 10
    # Many cheap stages finishing quickly must not swing the estimate the way a stage-count rate would:
    # 30 s for 40 epochs is 0.75 s/epoch; 60 epochs are left.
    p.stage_done("b", "ok", 10.0, None, work=30)
    assert p.eta() == pytest.approx(60 * 30 / 40)


def test_skipped_stages_shrink_the_remaining_work_without_speeding_up_the_rate():
    p, clock, _ = reporter(total_work=100.0)
    clock.now += 50
    p.stage_done("a", "ok", 50.0, None, work=25)        # 2 s per epoch
    p.stage_done("b", "skipped", 0.0, None, work=25)    # no longer ahead of us, but cost no time
    assert p.eta() == pytest.approx(50 * 2.0)


def test_periodic_line_at_most_every_every_s_with_eta():
    p, clock, lines = reporter(total_stages=5, total_work=50.0, every_s=30.0)
    clock.now += 10
    p.stage_done("a", "ok", 10.0, None, work=10)
    assert len(lines) == 1  # only 10 s since the start: no periodic line yet
    clock.now += 20         # 30 s: due
    p.stage_done("b", "ok", 20.0, None, work=5)
    assert lines[-1] == "sweep quick: 2/5 stages, 15.0/50.0 epochs of work, 30 s elapsed, ETA 1 min 10 s"
    clock.now += 29
    p.stage_done("c", "ok", 1.0, None, work=5)
    assert lines[-1].startswith("[3/5] c")   # 29 s after the last periodic line: not yet
    clock.now += 1
    p.tick()                                  # while nothing finishes, the driver can still ask
    # 60 s for 20 epochs, 30 epochs left
    assert lines[-1].startswith("sweep quick: 3/5 stages") and lines[-1].endswith("ETA 1 min 30 s")
    n = len(lines)
    p.tick()
    assert len(lines) == n


def test_no_periodic_line_once_everything_finished():
    p, clock, lines = reporter(total_stages=1, every_s=0.0)
    clock.now += 3
    p.stage_done("only", "ok", 3.0, 0.5, work=1)
    assert lines == ["[1/1] only  ok  3.0 s  acc 50.0%"]


def test_no_progress_on_a_terminal_still_gives_lines():
    p, clock, lines = reporter(tty=True, bar=False)
    p.stage_done("a", "ok", 1.0, None, work=1)
    assert lines == ["[1/4] a  ok  1.0 s"]


def test_terminal_bar_shows_the_work_based_eta_and_no_stage_lines(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    p, clock, lines = reporter(tty=True, total_work=100.0)
    clock.now += 20
    p.stage_done("dense s=0", "ok", 20.0, 0.9, work=10)
    p.close()
    assert lines == []
    text = err.getvalue()
    assert "1/4" in text and "ETA 3 min 00 s" in text and "dense s=0" in text
    assert "<" not in text  # tqdm's stage-rate remaining time ("00:20<01:00") is left off
