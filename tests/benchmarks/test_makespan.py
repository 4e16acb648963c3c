"""The floors benchmarks/overhead.py measures the orchestrator against (orchestrator/run/makespan.py), on DAGs
whose optimum is known by hand."""
import itertools
import random

import pytest

from orchestrator.run.makespan import heads_and_tails, list_schedule, lower_bounds, topological


def by_name(key):
    return key


def test_a_chain_runs_one_stage_at_a_time_however_many_slots():
    durations, parents = {"a": 3.0, "b": 2.0, "c": 1.0}, {"b": ["a"], "c": ["b"]}
    bounds = lower_bounds(durations, parents, 2)
    assert bounds.work == 3.0 and bounds.chain == 6.0 and bounds.lower == 6.0  # not the side-by-side 3
    assert list_schedule(durations, parents, 2, by_name) == 6.0


def test_two_independent_stages_run_side_by_side_the_longer_decides():
    durations = {"a": 3.0, "b": 2.0}
    bounds = lower_bounds(durations, {}, 2)
    assert (bounds.work, bounds.chain, bounds.lower) == (2.5, 3.0, 3.0)
    assert list_schedule(durations, {}, 2, by_name) == 3.0
    assert list_schedule(durations, {}, 1, by_name) == lower_bounds(durations, {}, 1).lower == 5.0


def test_a_fork_of_three_after_one_the_window_bound_counts_the_start():
    # a (1) then b, c, d (2 each) on 2 slots: nothing of b, c, d starts before 1, and their 6 s need 3 s on
    # 2 slots: at least 4 (work alone says 3.5, the chain 3). Three 2 s stages on 2 slots take 4: optimum 5.
    durations = {"a": 1.0, "b": 2.0, "c": 2.0, "d": 2.0}
    parents = {"b": ["a"], "c": ["a"], "d": ["a"]}
    bounds = lower_bounds(durations, parents, 2)
    assert (bounds.work, bounds.chain, bounds.window, bounds.lower) == (3.5, 3.0, 4.0, 4.0)
    assert list_schedule(durations, parents, 2, by_name) == 5.0


def test_the_window_bound_counts_the_end_where_one_chain_is_left():
    # x (4) and y (4) side by side, then z (4) after both: z runs alone; work 6, chain 8.
    durations, parents = {"x": 4.0, "y": 4.0, "z": 4.0}, {"z": ["x", "y"]}
    assert lower_bounds(durations, parents, 2).lower == 8.0 == list_schedule(durations, parents, 2, by_name)
    # The fork's mirror, a join: b, c, d (2 each) then a (1) after all three; each of b, c, d ends 1 before.
    durations, parents = {"b": 2.0, "c": 2.0, "d": 2.0, "a": 1.0}, {"a": ["b", "c", "d"]}
    bounds = lower_bounds(durations, parents, 2)
    assert (bounds.work, bounds.chain, bounds.window) == (3.5, 3.0, 4.0)
    assert list_schedule(durations, parents, 2, by_name) == 5.0


def test_the_list_schedule_follows_its_rank_critical_path_first_wins():
    # a, b, c (2 each) ready at once, d (4) after c: starting c first gives 6, leaving it for last gives 8.
    durations, parents = {"a": 2.0, "b": 2.0, "c": 2.0, "d": 4.0}, {"d": ["c"]}
    head, tail = heads_and_tails(durations, parents)
    assert tail == {"a": 0.0, "b": 0.0, "c": 4.0, "d": 0.0} and head["d"] == 2.0
    assert list_schedule(durations, parents, 2, lambda k: -(durations[k] + tail[k])) == 6.0
    assert list_schedule(durations, parents, 2, by_name) == 8.0
    assert lower_bounds(durations, parents, 2).lower == 6.0


def test_the_bound_never_exceeds_any_list_schedule_of_random_small_dags():
    """lower <= OPT <= every achievable schedule: the bound is checked against every priority order."""
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randint(1, 6)
        keys = [f"s{i}" for i in range(n)]
        durations = {k: float(rng.randint(1, 5)) for k in keys}
        parents = {k: [p for p in keys[:i] if rng.random() < 0.35] for i, k in enumerate(keys)}
        for slots in (1, 2, 3):
            best = min(list_schedule(durations, parents, slots, {k: i for i, k in enumerate(order)}.__getitem__)
                       for order in itertools.permutations(keys))
            bounds = lower_bounds(durations, parents, slots)
            assert bounds.lower <= best + 1e-9, (durations, parents, slots, bounds, best)
            if slots == 1:
                assert bounds.lower == best == sum(durations.values())


def test_cycles_and_unknown_parents_are_refused():
    with pytest.raises(ValueError, match="cycle"):
        topological({"a": 1.0, "b": 1.0}, {"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="'z' is not a stage"):
        lower_bounds({"a": 1.0}, {"a": ["z"]}, 2)
    with pytest.raises(ValueError, match="slots"):
        list_schedule({"a": 1.0}, {}, 0, by_name)
