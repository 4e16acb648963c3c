"""The scheduling loop: a ready queue, trial actors pooled per resource shape, retries, freeing outputs.

Stages become ready when all their parents are done and run longest-remaining-path first, among the seeds
already open (at most 2 x max_concurrent seeds at once unless an actor would otherwise idle). Actors are
long-lived (torch stays imported, datasets stay on the device) and pooled by (CPUs, GPU share, memory);
at most `max_concurrent` are alive, and an idle actor of another shape is retired to make room.
A stage's output reference is dropped as soon as every dependant has been handed it (Ray then keeps it
alive only while those tasks need it); a later retry reads the stored artifact instead. With the seed
window this keeps the object store bounded by the work in flight, however many seeds a sweep has.
"""
from __future__ import annotations

import heapq
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import ray
from ray.exceptions import ActorDiedError, RayActorError

from orchestrator.plan import Plan
from orchestrator.recorder import Recorder, now
from orchestrator.trial_actor import ARTIFACT

Shape = tuple[float, float, float | None]
TICK_S = 5.0


class LeaseLost(RuntimeError):
    """Another driver took over this sweep's lease; this one stops handing out work."""


@dataclass
class RunSummary:
    planned: int
    skipped_done: int
    ran: int = 0
    failed: int = 0
    diverged: int = 0
    skipped_after_failure: int = 0
    not_retried: int = 0
    seconds: float = 0.0
    dashboard_url: str | None = None
    failures: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(self, plan: Plan, todo: list[str], done: set[str], shapes: dict[str, Shape], actor_class,
                 store_location: str, recorder: Recorder, max_concurrent: int, max_retries: int,
                 progress, lease=None):
        self.plan, self.todo, self.done = plan, todo, set(done)
        self.shapes, self.actor_class, self.store_location = shapes, actor_class, store_location
        self.recorder, self.max_concurrent, self.max_retries = recorder, max_concurrent, max_retries
        self.progress, self.lease = progress, lease
        self.idle: dict[Shape, list] = {}
        self.alive: dict = {}  # actor -> shape
        self.made = 0

    # ------------------------------------------------------------ actors
    def _new_actor(self, shape: Shape):
        cpus, gpus, memory = shape
        self.made += 1
        options = dict(name=f"trial-{self.made}-{os.getpid()}", max_restarts=0, num_cpus=cpus, num_gpus=gpus)
        if memory:
            options["memory"] = memory
        actor = self.actor_class.options(**options).remote(cpus, gpus, self.store_location)
        self.alive[actor] = shape
        return actor

    def _actor_for(self, shape: Shape):
        if self.idle.get(shape):
            return self.idle[shape].pop()
        if len(self.alive) >= self.max_concurrent:
            other = next((s for s, actors in self.idle.items() if actors), None)
            if other is None:
                return None
            self._retire(self.idle[other].pop())
        return self._new_actor(shape)

    def _retire(self, actor) -> None:
        self.alive.pop(actor, None)
        ray.kill(actor)

    def _retire_unneeded(self, wanted: set) -> None:
        """With several shapes, an idle actor whose shape no waiting or running stage needs may hold the
        resources a pending actor of another shape waits for: retire it (a new one costs a torch import)."""
        for shape, actors in self.idle.items():
            if shape not in wanted and wanted - {shape}:
                while actors:
                    self._retire(actors.pop())

    def _release(self, actor) -> None:
        if actor in self.alive:
            self.idle.setdefault(self.alive[actor], []).append(actor)

    # ------------------------------------------------------------ the loop
    def run(self, summary: RunSummary) -> RunSummary:
        plan = self.plan
        children = plan.children()
        priority = plan.remaining_path()
        todo = set(self.todo)
        waiting = {k: sum(1 for p in set(plan.stages[k].parents.values()) if p not in self.done) for k in self.todo}
        # Outputs of stages finished in earlier runs come from the store; this run's travel as object refs.
        outputs: dict[str, object] = {k: ARTIFACT + k for k in self.done}
        handed = {k: sum(1 for c in children[k] if c in todo) for k in set(self.done) | todo}
        given: set[str] = set()
        ready = [(-priority[k], i, k) for i, k in enumerate(self.todo) if waiting[k] == 0]
        heapq.heapify(ready)
        inflight: dict = {}
        retries: dict[str, int] = {}
        dead: set[str] = set()
        multi_shape = len({self.shapes[k] for k in self.todo}) > 1
        seed_left = Counter(plan.stages[k].seed for k in self.todo)
        open_seeds: set[int] = set()
        window = 2 * self.max_concurrent

        def hand_over(key: str) -> None:
            """`key` has its inputs: its parents' references may be dropped once all their dependants do."""
            if key in given:
                return
            given.add(key)
            for p in set(plan.stages[key].parents.values()):
                handed[p] -= 1
                if handed[p] == 0 and p in outputs:
                    outputs[p] = ARTIFACT + p

        def dispatch() -> None:
            # Two passes: first only stages of seeds already open (while `window` seeds are open), then, if an
            # actor would otherwise idle, a new seed. Longest-path-first alone would run every seed's shared
            # stages first and keep all their outputs alive at once.
            for respect_window in (True, False):
                held = []
                while ready:
                    item = heapq.heappop(ready)
                    key = item[2]
                    seed = plan.stages[key].seed
                    if respect_window and seed not in open_seeds and len(open_seeds) >= window:
                        held.append(item)
                        continue
                    actor = self._actor_for(self.shapes[key])
                    if actor is None:  # every actor is busy
                        held.append(item)
                        break
                    open_seeds.add(seed)
                    stage = plan.stages[key]
                    parents = [outputs[stage.parents[r]] for r in stage.inputs]
                    meta_ref, out_ref = actor.run.options(num_returns=2, name=task_name(stage.label)).remote(
                        stage.payload(plan.config), list(stage.inputs), *parents)
                    inflight[meta_ref] = (key, actor, out_ref)
                    hand_over(key)
                for item in held:
                    heapq.heappush(ready, item)
                if len(self.alive) >= self.max_concurrent and not any(self.idle.values()):
                    break
            if multi_shape:
                self._retire_unneeded({self.shapes[k] for _, _, k in ready} | {self.alive.get(a) for _, a, _ in inflight.values()})

        def finished(key: str) -> None:
            seed = plan.stages[key].seed
            seed_left[seed] -= 1
            if seed_left[seed] == 0:
                open_seeds.discard(seed)

        try:
            while ready or inflight:
                if self.lease is not None and self.lease.lost.is_set():
                    raise LeaseLost(f"sweep {plan.sweep}: another driver took over the lease; stopping")
                dispatch()
                done_refs: list = []
                while not done_refs:  # a periodic progress line also while long stages run
                    done_refs, _ = ray.wait(list(inflight), num_returns=1, timeout=TICK_S)
                    self.progress.tick()
                key, actor, out_ref = inflight.pop(done_refs[0])
                try:
                    meta = ray.get(done_refs[0])
                except (RayActorError, ActorDiedError) as err:
                    self.alive.pop(actor, None)
                    retries[key] = retries.get(key, 0) + 1
                    t = now()
                    lost = {"status": "failed", "error_type": "lost", "started_at": t, "finished_at": t,
                            "error": f"trial actor died (attempt {retries[key]} of {self.max_retries + 1}): "
                                     f"{(str(err).strip().splitlines() or [type(err).__name__])[0]}"}
                    if retries[key] <= self.max_retries:
                        heapq.heappush(ready, (-priority[key], -retries[key], key))
                        dispatch()
                        self.recorder.record(key, lost)  # the lost attempt is a row of its own
                        continue
                    meta = lost
                else:
                    self._release(actor)
                status = meta["status"]
                if status == "ok":
                    summary.ran += 1
                    self.done.add(key)
                    outputs[key] = out_ref if handed.get(key, 0) > 0 else ARTIFACT + key
                    for child in children[key]:
                        if child in waiting and child not in dead:
                            waiting[child] -= 1
                            if waiting[child] == 0:
                                heapq.heappush(ready, (-priority[child], 0, child))
                finished(key)
                # Hand out new work before writing the store, so trial actors never wait on the driver's I/O.
                dispatch()
                self.recorder.record(key, meta)
                stage = plan.stages[key]
                self.progress.stage_done(stage.label, status, float(meta.get("seconds") or 0.0),
                                         (meta.get("point") or {}).get("test_accuracy"), stage.work)
                if status == "ok":
                    continue
                if status == "diverged":
                    summary.diverged += 1
                else:
                    summary.failed += 1
                summary.failures.append(f"{stage.label}: {status} ({meta.get('error_type')}): {meta.get('error')}")
                for d in descendants(key, children):
                    if d not in dead and d not in self.done and d in todo:
                        dead.add(d)
                        hand_over(d)
                        finished(d)
                        self.recorder.skipped(d, key, "diverged" if status == "diverged" else "failed")
                        summary.skipped_after_failure += 1
                        self.progress.stage_done(plan.stages[d].label, "skipped", 0.0, None, plan.stages[d].work)
        finally:
            # Also on Ctrl-C: free the cluster's CPUs/GPUs now, not when the handles are collected.
            for actor in list(self.alive):
                self._retire(actor)
        return summary


def task_name(label: str) -> str:
    """The stage's label without its seed ("ltr L=7", "snip sp=0.9500"), as the dashboard's task name.

    Ray keeps per-task-name bookkeeping in the driver for the whole run (measured: about 22 KB per distinct
    name), so names must not multiply with seeds; method, level and sparsity still say what a task is doing.
    """
    return _SEED.sub("", label)


_SEED = re.compile(r" s=-?\d+")


def descendants(key: str, children: dict[str, list[str]]) -> set[str]:
    out, todo = set(), list(children[key])
    while todo:
        k = todo.pop()
        if k not in out:
            out.add(k)
            todo.extend(children[k])
    return out
