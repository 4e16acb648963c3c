"""How fast a DAG of stages of known durations can run on a number of slots: lower bounds no scheduler can beat,
and the makespan of a zero-overhead list schedule (an order a scheduler could follow).

benchmarks/overhead.py measures the orchestrator against these, from the seconds each stage took in the same
run. The stages of a plan depend on each other (a seed's init, warm-up and dense training come one after
another, LTR's levels are a chain), so at times fewer stages can run than there are slots whatever the scheduler
does: that idle time is the plan's. For the optimum makespan OPT of the DAG on `slots` identical slots (no stage
split or preempted): `lower_bound(...) <= OPT <= list_schedule(...)` for any priority.
"""
from __future__ import annotations

import graphlib
import heapq
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Mapping


@dataclass(frozen=True)
class Bounds:
    work: float     # all the work spread evenly over the slots: sum / slots
    chain: float    # the longest dependency path
    window: float   # the best of the window bounds (see lower_bounds); at least `work`
    lower: float    # the largest of them: no schedule on `slots` slots finishes sooner


def topological(durations: Mapping[Hashable, float], parents: Mapping[Hashable, Iterable]) -> list:
    """The stages in an order where every parent comes before its children (ValueError on a cycle or on a
    parent that is not a stage)."""
    graph = {k: set(parents.get(k, ())) for k in durations}
    for k, ps in graph.items():
        for p in ps - durations.keys():
            raise ValueError(f"stage {k!r}: parent {p!r} is not a stage")
    return list(graphlib.TopologicalSorter(graph).static_order())  # CycleError, a ValueError, names the cycle


def heads_and_tails(durations: Mapping[Hashable, float], parents: Mapping[Hashable, Iterable]) -> tuple[dict, dict]:
    """head[k]: the longest path of work before k can start (its earliest start); tail[k]: the longest path of
    work that must follow k (its children's, not its own)."""
    order = topological(durations, parents)
    head: dict = {}
    for k in order:
        head[k] = max((head[p] + durations[p] for p in set(parents.get(k, ()))), default=0.0)
    tail = {k: 0.0 for k in durations}
    for k in reversed(order):
        for p in set(parents.get(k, ())):
            tail[p] = max(tail[p], durations[k] + tail[k])
    return head, tail


def lower_bounds(durations: Mapping[Hashable, float], parents: Mapping[Hashable, Iterable], slots: int) -> Bounds:
    """Lower bounds on the makespan of any schedule of the DAG on `slots` slots.

    work: sum / slots. chain: max over stages of head + own + tail. window: for every set S of the stages whose
    head is at least h and whose tail is at least t, none of S can start before h and each must end t before the
    makespan, so all of S's work fits in a window of makespan - h - t on `slots` slots:
    makespan >= h + t + sum(S) / slots. h = t = 0 is the work bound; h > 0 counts the start, where the first
    stages of every chain hold the slots back, t > 0 the end, where only the longest chains are left.
    """
    if slots < 1:
        raise ValueError(f"slots must be at least 1, not {slots}")
    head, tail = heads_and_tails(durations, parents)
    total = float(sum(durations.values()))
    chain = max((head[k] + durations[k] + tail[k] for k in durations), default=0.0)
    window = total / slots
    for h in set(head.values()):
        # The stages starting no earlier than h, by tail, longest first: each prefix is the set for t = its last.
        later = sorted((k for k in durations if head[k] >= h), key=lambda k: -tail[k])
        work = 0.0
        for k in later:
            work += durations[k]
            window = max(window, h + tail[k] + work / slots)
    return Bounds(work=total / slots, chain=chain, window=window, lower=max(chain, window))


def list_schedule(durations: Mapping[Hashable, float], parents: Mapping[Hashable, Iterable], slots: int,
                  rank: Callable[[Hashable], object]) -> float:
    """The makespan of a greedy list schedule with no overhead: whenever a slot is free, the ready stage of
    lowest `rank` starts on it. Achievable, so at least the optimum; which stages it prefers is what it tests."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, not {slots}")
    order = topological(durations, parents)
    waiting = {k: len(set(parents.get(k, ()))) for k in order}
    children: dict = {k: [] for k in order}
    for k in order:
        for p in set(parents.get(k, ())):
            children[p].append(k)
    ready = [(rank(k), i, k) for i, k in enumerate(order) if waiting[k] == 0]
    heapq.heapify(ready)
    running: list = []  # (finish time, order index, key)
    index = {k: i for i, k in enumerate(order)}
    now = 0.0
    while ready or running:
        while ready and len(running) < slots:
            _, i, k = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[k], i, k))
        now = running[0][0]
        while running and running[0][0] == now:  # every stage ending now frees its slot before any starts
            _, _, k = heapq.heappop(running)
            for c in children[k]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, (rank(c), index[c], c))
    return now
