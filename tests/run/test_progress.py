"""The progress reporter with a fake clock: stage lines, periodic lines, and an ETA priced per stage kind."""
import heapq
import io
import random

import pytest

from orchestrator.run.progress import Progress, StageRates, duration


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reporter(stages=(("a", 25.0),) * 4, every_s=30.0, **kw):
    clock, lines = FakeClock(), []
    p = Progress("quick", list(stages), tty=kw.pop("tty", False), echo=lines.append, every_s=every_s,
                 clock=clock, **kw)
    return p, clock, lines


def test_duration_formats():
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3600 + 7 * 60 + 20)] == [
        "0 s", "59 s", "1 min 01 s", "59 min 59 s", "1 h 07 min"]


def test_one_line_per_finished_stage_with_status_seconds_and_accuracy():
    p, clock, lines = reporter(every_s=1e9)
    clock.now += 5
    p.stage_done("dense s=0", "a", "ok", 4.96, 0.9123, work=10)
    p.stage_done("snip s=0 sp=0.9000", "a", "failed", 0.4, None, work=10)
    assert lines == ["[1/4] dense s=0  ok  5.0 s  acc 91.2%",
                     "[2/4] snip s=0 sp=0.9000  failed  0.4 s"]


def test_eta_prices_each_kind_at_its_own_rate_and_unseen_kinds_at_the_pooled_rate():
    p, clock, _ = reporter([("train", 10), ("train", 10), ("search", 20), ("search", 20)])
    assert p.eta() is None  # nothing measured yet
    clock.now += 20
    p.stage_done("t1", "train", "ok", 20.0, None, work=10)
    # train: 2 s per epoch, 10 epochs left; search unseen: the pooled 2 s/epoch for its 40 epochs;
    # 20 busy seconds in 20 s of wall-clock: one stage at a time.
    assert p.eta() == pytest.approx(10 * 2 + 40 * 2)
    clock.now += 10
    p.stage_done("s1", "search", "ok", 10.0, None, work=20)
    # search has its own rate now, 0.5 s/epoch; 30 busy seconds in 30 s.
    assert p.eta() == pytest.approx(10 * 2 + 20 * 0.5)


def test_a_global_rate_would_be_fooled_where_per_kind_rates_are_not():
    # 3 cheap-per-epoch stages of kind "cts" (100 epochs, 10 s) and 3 expensive ones of kind "warmup"
    # (1 epoch, 5 s): after the warm-ups, a single rate (15 s / 3 epochs = 5 s/epoch) would say 1500 s.
    stages = [("warmup", 1.0)] * 3 + [("cts", 100.0)] * 3
    p, clock, _ = reporter(stages)
    for i in range(3):
        clock.now += 5
        p.stage_done(f"w{i}", "warmup", "ok", 5.0, None, work=1.0)
    clock.now += 10
    p.stage_done("c0", "cts", "ok", 10.0, None, work=100.0)
    assert p.eta() == pytest.approx(2 * 10.0)


def test_measured_parallelism_divides_the_stage_seconds_bounded_by_actors_and_stages_left():
    stages = [("a", 10.0)] * 6
    p, clock, _ = reporter(stages, parallel=2)
    clock.now += 10
    p.stage_done("a1", "a", "ok", 10.0, None, work=10)
    p.stage_done("a2", "a", "ok", 10.0, None, work=10)
    assert p.parallelism() == pytest.approx(2.0)       # 20 busy seconds in 10 s
    assert p.eta() == pytest.approx(4 * 10.0 / 2)
    # Three ran at once (say an actor more than the bound): the bound holds.
    clock.now += 10
    for i in range(3):
        p.stage_done(f"b{i}", "a", "ok", 10.0, None, work=10)
    assert p.parallelism() == pytest.approx(2.0)       # 50/20 = 2.5, bounded by 2 actors
    assert p.eta() == pytest.approx(10.0)              # one stage left runs alone, however many actors


def test_idle_time_between_stages_slows_the_estimate_but_start_up_does_not():
    p, clock, _ = reporter([("a", 10.0)] * 3, parallel=2)
    clock.now += 40  # starting the trial actors and loading data: once, before the first stage ran
    p.stage_done("a1", "a", "ok", 10.0, None, work=10)
    assert p.parallelism() == pytest.approx(1.0)
    assert p.eta() == pytest.approx(2 * 10.0)
    clock.now += 30  # 20 s idle (the driver, a slow store), then a 10 s stage: 20 busy seconds in 40 s
    p.stage_done("a2", "a", "ok", 10.0, None, work=10)
    assert p.parallelism() == pytest.approx(0.5)
    assert p.eta() == pytest.approx(10.0 / 0.5)


def test_skipped_stages_shrink_what_is_left_without_teaching_a_rate_or_adding_busy_time():
    p, clock, _ = reporter([("a", 25.0)] * 4)
    clock.now += 50
    p.stage_done("a", "a", "ok", 50.0, None, work=25)        # 2 s per epoch
    p.stage_done("b", "a", "skipped", 0.0, None, work=25)    # no longer ahead of us, but cost no time
    assert p.eta() == pytest.approx(50 * 2.0)


def test_failed_stages_count_as_busy_time_but_teach_no_rate():
    p, clock, _ = reporter([("a", 10.0)] * 3)
    clock.now += 30
    p.stage_done("bad", "a", "failed", 2.0, None, work=10)    # stopped early: 0.2 s/epoch would lie
    assert p.eta() is None
    p.stage_done("good", "a", "ok", 28.0, None, work=10)
    assert p.eta() == pytest.approx(10 * 2.8)                # 30 busy seconds in 30 s: one at a time


def test_zero_work_kinds_are_priced_per_stage():
    rates = StageRates([("init", 0.0)] * 3 + [("dense", 40.0)])
    rates.finished("init", "ok", 0.5, 0.0)
    assert rates.stage_seconds_left() is None      # the dense stage cannot be priced yet
    rates.finished("dense", "ok", 20.0, 40.0)      # (the plan: the dense stage after the inits)
    assert rates.stage_seconds_left() == pytest.approx(2 * 0.5)
    assert rates.pooled_rate() == pytest.approx(0.5)


def test_periodic_line_at_most_every_every_s_with_eta():
    p, clock, lines = reporter([("a", 10.0)] * 5, every_s=30.0)
    clock.now += 10
    p.stage_done("a", "a", "ok", 10.0, None, work=10)
    assert len(lines) == 1  # only 10 s since the start: no periodic line yet
    clock.now += 20         # 30 s: due
    p.stage_done("b", "a", "ok", 20.0, None, work=10)
    # 1.5 s/epoch, 30 epochs left, 30 busy seconds in 30 s
    assert lines[-1] == "sweep quick: 2/5 stages, 20.0/50.0 epochs of work, 30 s elapsed, ETA 45 s"
    clock.now += 29
    p.stage_done("c", "a", "ok", 1.0, None, work=10)
    assert lines[-1].startswith("[3/5] c")   # 29 s after the last periodic line: not yet
    clock.now += 1
    p.tick()                                  # while nothing finishes, the driver can still ask
    # 31 s for 30 epochs, 20 left: 20.67 s of stage time at 31 busy s / 60 s
    assert lines[-1].startswith("sweep quick: 3/5 stages") and lines[-1].endswith("ETA 40 s")
    n = len(lines)
    p.tick()
    assert len(lines) == n


def test_no_periodic_line_once_everything_finished():
    p, clock, lines = reporter([("a", 1.0)], every_s=0.0)
    clock.now += 3
    p.stage_done("only", "a", "ok", 3.0, 0.5, work=1)
    assert lines == ["[1/1] only  ok  3.0 s  acc 50.0%"]
    assert p.eta() == 0.0


def test_no_progress_on_a_terminal_still_gives_lines():
    p, clock, lines = reporter(tty=True, bar=False)
    p.stage_done("a", "a", "ok", 1.0, None, work=1)
    assert lines == ["[1/4] a  ok  1.0 s"]


def test_terminal_bar_shows_the_eta_and_no_stage_lines(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    p, clock, lines = reporter([("a", 10.0)] * 4, tty=True)
    clock.now += 20
    p.stage_done("dense s=0", "a", "ok", 20.0, 0.9, work=10)
    p.close()
    assert lines == []
    text = err.getvalue()
    assert "1/4" in text and "ETA 1 min 00 s" in text and "dense s=0" in text
    assert "<" not in text  # tqdm's stage-rate remaining time ("00:20<01:00") is left off


# --------------------------------------------------------------------------- a replayed sweep

# The quickstart (specs/quickstart.yaml: 3 seeds; LTR to 99 % in 26 levels, CTS and two one-shot methods at
# 6 sparsities; 141 stages), with the plan's work estimates and the stage run times recorded on a 2-core
# machine: init ~0 s, warm-up (1 epoch plus the data loading every stage pays) 0.3 s, dense and IMP levels
# ~1.2 s, CTS (search + retraining, estimated as 99 epoch-equivalents) ~3.7 s, one-shot ~1.2 s.
QUICKSTART_KINDS = {"init": (0.0, 0.05), "warmup": (1.0, 0.3), "dense": (39.0, 1.2), "imp_level": (39.0, 1.2),
                    "cts": (99.0, 3.7), "oneshot": (39.05, 1.2)}
ACTORS, STARTUP_S, DISPATCH_S = 2, 3.0, 0.15


def quickstart_stages():
    """key -> (kind, work, parents)."""
    stages = {}

    def add(key, kind, parents):
        stages[key] = (kind, QUICKSTART_KINDS[kind][0], parents)
        return key

    for s in range(3):
        init = add(f"init{s}", "init", [])
        warm = add(f"warm{s}", "warmup", [init])
        dense = add(f"dense{s}", "dense", [warm])
        prev = dense
        for level in range(26):
            prev = add(f"imp{s}.{level}", "imp_level", [prev, warm, dense])
        for i in range(6):
            add(f"cts{s}.{i}", "cts", [warm, dense])
        for i in range(12):
            add(f"oneshot{s}.{i}", "oneshot", [warm, dense])
    return stages


def replay_schedule(stages, rng):
    """Finish times of a 2-actor run that hands out ready stages longest path first, as the scheduler
    does: [(finish time, key, seconds)] in finishing order. Run times scatter ±20 % around the recorded
    ones; actors start 3 s in and each hand-out costs the driver 0.15 s."""
    children = {k: [] for k in stages}
    for key, (_, _, parents) in stages.items():
        for parent in set(parents):
            children[parent].append(key)
    path: dict[str, float] = {}
    for key in reversed(list(stages)):  # children come after parents in the listing
        path[key] = stages[key][1] + max((path[c] for c in children[key]), default=0.0)
    seconds = {k: QUICKSTART_KINDS[kind][1] * rng.uniform(0.8, 1.2) for k, (kind, _, _) in stages.items()}
    waiting = {k: len(set(p)) for k, (_, _, p) in stages.items()}
    ready = [(-path[k], k) for k, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    free_at = [STARTUP_S] * ACTORS
    running: list[tuple[float, str]] = []
    finished, now = [], 0.0
    while ready or running:
        while ready and (not running or min(free_at) <= running[0][0]):
            _, key = heapq.heappop(ready)
            actor = min(range(ACTORS), key=free_at.__getitem__)
            end = max(free_at[actor], now) + DISPATCH_S + seconds[key]
            free_at[actor] = end
            heapq.heappush(running, (end, key))
        now, key = heapq.heappop(running)
        finished.append((now, key, seconds[key]))
        for child in children[key]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (-path[child], child))
    return finished


def global_rate_eta(total_work, work_done, elapsed):
    """The estimator this replaced: remaining work at the wall-clock seconds per unit of work so far."""
    return (total_work - work_done) * elapsed / work_done if work_done > 0 else None


def replay_errors(seed: int) -> tuple[list[float], list[float]]:
    """|predicted finish - true finish| / true finish after each stage, for Progress and the global rate."""
    stages = quickstart_stages()
    finished = replay_schedule(stages, random.Random(seed))
    true_end = finished[-1][0]
    clock = FakeClock()
    clock.now = 0.0
    p = Progress("quickstart", [(kind, work) for kind, work, _ in stages.values()], tty=False,
                 echo=lambda _: None, every_s=1e9, clock=clock, parallel=ACTORS)
    total_work, work_done = sum(w for _, w, _ in stages.values()), 0.0
    new_err, old_err = [], []
    for end, key, seconds in finished:
        kind, work, _ = stages[key]
        clock.now = end
        p.stage_done(key, kind, "ok", seconds, None, work)
        work_done += work
        for errors, eta in ((new_err, p.eta()), (old_err, global_rate_eta(total_work, work_done, end))):
            errors.append(abs(end + eta - true_end) / true_end if eta is not None else float("inf"))
    return new_err, old_err


def test_the_replay_is_the_quickstart():
    stages = quickstart_stages()
    assert len(stages) == 141
    finished = replay_schedule(stages, random.Random(7))
    assert sorted(k for _, k, _ in finished) == sorted(stages)
    order = {k: i for i, (_, k, _) in enumerate(finished)}
    assert all(order[p] < order[k] for k, (_, _, parents) in stages.items() for p in parents)
    # two actors, never more than two stages running at once
    spans = sorted((end - s, end) for end, _, s in finished)
    assert all(sum(1 for a, b in spans if a <= t < b) <= ACTORS for t, _ in spans)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@pytest.mark.parametrize("seed", range(5))
def test_replayed_quickstart_eta_converges_and_beats_a_global_rate(seed):
    new_err, old_err = replay_errors(seed)
    n = len(new_err)
    fifth = n // 5
    assert max(new_err[fifth:]) <= 0.25, [round(e, 3) for e in new_err[fifth:]]   # from 20 % of the stages on
    assert mean(new_err[n // 20:fifth]) > mean(new_err[fifth:])                     # the error shrinks
    assert max(new_err[-n // 10:]) <= 0.05                                           # and is small at the end
    assert mean(new_err[fifth:]) < mean(old_err[fifth:])                             # better than one rate
    assert new_err[fifth] < old_err[fifth]


def test_the_running_line_names_each_stage_and_its_epoch_oldest_first_cut_to_the_width():
    from orchestrator.run.progress import RunningStage, running_line

    stages = [RunningStage("snip s=1 sp=0.9000", "oneshot", "snip", started=2.0),
              RunningStage("ltr s=0 L=3", "imp_level", "ltr", started=1.0, epoch=("train", 4.0)),
              RunningStage("cts s=0 sp=0.9900", "cts", "cts", started=3.0, epoch=("search", 12.0))]
    assert running_line(stages, 200) == ("running: ltr s=0 L=3 epoch 4, snip s=1 sp=0.9000 starting, "
                                         "cts s=0 sp=0.9900 search epoch 12")
    assert running_line(stages, 60) == "running: ltr s=0 L=3 epoch 4 (+2 more)"
    line = running_line(stages, 25)
    assert len(line) == 25 and line.startswith("running: ltr") and line.endswith("… (+3 more)")
    assert running_line([], 80) == "running: nothing"


def test_on_a_terminal_the_running_stages_and_their_epoch_are_redrawn_between_completions(monkeypatch):
    import io
    import sys

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    p, clock, lines = reporter([("imp_level", 10.0)] * 2, tty=True, width=lambda: 120)
    p.stage_started("k1", "ltr s=0 L=1", "imp_level", "ltr")
    p.stage_epoch("k1", "train", 3.0)
    clock.now += 1
    p.tick()
    assert "running: ltr s=0 L=1 epoch 3" in err.getvalue()
    p.stage_epoch("k1", "train", 7.0)
    clock.now += 1
    p.tick()
    assert "running: ltr s=0 L=1 epoch 7" in err.getvalue()  # no stage has finished: the tick redrew it
    assert p.epochs == 7.0
    p.stage_done("ltr s=0 L=1", "imp_level", "ok", 2.0, 0.9, work=10.0, key="k1")
    assert p.epochs == 10.0 and not p.running  # the epochs the pings did not see, from the plan
    assert lines == []  # a terminal gets the bar, not the per-stage lines
    p.close()


def test_off_a_terminal_running_stages_print_nothing_and_the_line_format_stays():
    p, clock, lines = reporter(every_s=1e9)
    p.stage_started("k", "dense s=0", "a")
    p.stage_epoch("k", "train", 2.0)
    p.tick()
    p.stage_done("dense s=0", "a", "ok", 4.96, 0.9123, work=10, key="k")
    assert lines == ["[1/4] dense s=0  ok  5.0 s  acc 91.2%"]


def test_the_epoch_count_follows_phases_and_ignores_repeated_reports():
    p, _, _ = reporter()
    p.stage_started("k", "cts s=0 sp=0.9000", "a")
    for phase, epoch in (("search", 1), ("search", 3), ("search", 3), ("train", 2), ("train", 2)):
        p.stage_epoch("k", phase, float(epoch))
    assert p.epochs == 5.0
    p.stage_stopped("k")  # a lost attempt: nothing more is counted for it
    p.stage_epoch("k", "train", 9.0)
    assert p.epochs == 5.0 and not p.running
