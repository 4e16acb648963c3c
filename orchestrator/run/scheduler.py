"""The scheduling loop: a ready queue, trial actors pooled per resource shape, retries, hang detection, freeing
outputs.

Stages become ready when all their parents are done and run longest-remaining-path first, among the seeds
already open (at most 2 x max_concurrent seeds at once unless an actor would otherwise idle). Actors are
long-lived (torch stays imported, datasets stay on the device) and pooled by (CPUs, GPU share, memory); at most
`max_concurrent` are alive, and an idle actor of another shape is retired to make room. A stage's output
reference is dropped as soon as every dependant has been handed it (Ray then keeps it alive only while those
tasks need it); a later retry reads the stored artifact instead. With the seed window this keeps the object
store bounded by the work in flight, however many seeds a sweep has.
A trial actor keeps the outputs that more of its stages take and is sent a marker for them instead, and
returns an output through Ray only when a stage of the run takes it (`_transport`, trial_actor.py).

Every running stage is pinged (a trial actor answers from a second thread while it runs a stage): a stage
silent for longer than its hang limit, or an actor that stops answering, is declared `hung`, its actor killed
and replaced, and the stage retried within the same bound as a lost one. The pings are actor calls like any
other, but Ray records no task events for them: they would otherwise be most of the job's tasks in the
dashboard (one per running stage per second). The answer also carries the stage's last epoch, for the
progress display and the sweep's metrics.
"""
from __future__ import annotations

import heapq
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

import ray
from ray.exceptions import ActorDiedError, RayActorError

from orchestrator.store.lease import StopRequested
from orchestrator.spec.plan import Plan
from orchestrator.run.commit_thread import CommitThread
from orchestrator.run.recorder import Recorder, now
from orchestrator.run.trial_actor import ARTIFACT, HELD

Shape = tuple[float, float, float | None]
TICK_S = 1.0                 # how often running stages are pinged and progress may print
STARTUP_FACTOR = 5.0         # before anything is known of a kind's epochs, the limit is this many floors
ACTOR_START_S = 120.0        # extra allowance until an actor first answers (a new one imports torch first)


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


@dataclass(frozen=True)
class HangPolicy:
    """A stage is hung once silent for max(floor, factor × the slowest epoch seen of its kind or of itself)."""
    floor_s: float = 120.0
    factor: float = 10.0

    def limit(self, slowest_epoch_s: float) -> float:
        if slowest_epoch_s <= 0:
            return STARTUP_FACTOR * self.floor_s  # nothing measured yet: setup and a first epoch to allow for
        return max(self.floor_s, self.factor * slowest_epoch_s)


@dataclass
class KeptActors:
    """Trial actors kept between the runs of one driver (the looks of `submit --until-decided`): a run hands back
    its idle actors when it ends normally, and the next starts with them instead of new processes, which would
    import torch and load the datasets again."""
    idle: dict = field(default_factory=dict)  # shape -> idle actors
    made: int = 0                             # actors made so far: their names stay unique

    def take(self, timeout_s: float) -> dict:
        """The kept actors, by shape, that answer a ping within `timeout_s`; the others are killed. An actor that
        died or stopped while kept would otherwise fail the next stage handed to it as lost, costing that stage
        a retry for a fault that was not its own."""
        kept, self.idle = self.idle, {}
        # As the scheduler's own pings: kept out of the dashboard's task history.
        pings = {actor.heartbeat.options(enable_task_events=False).remote(): actor
                 for actors in kept.values() for actor in actors}
        ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=timeout_s) if pings else ([], [])
        alive = set()
        for ref in ready:
            try:
                ray.get(ref)
                alive.add(pings[ref])
            except ray.exceptions.RayError:
                pass
        answering: dict = {}
        for shape, actors in kept.items():
            for actor in actors:
                if actor in alive:
                    answering.setdefault(shape, []).append(actor)
                else:
                    ray.kill(actor)
        return answering

    def close(self) -> None:
        for actors in self.idle.values():
            for actor in actors:
                ray.kill(actor)
        self.idle = {}


@dataclass
class Running:
    """A stage in flight, and what the driver has heard from its actor."""
    key: str
    actor: object
    out_ref: object
    heard_at: float                 # driver clock: dispatch, or the last answered ping
    silent_s: float = 0.0           # the actor's report: seconds since the stage's last sign of life
    slowest_epoch_s: float = 0.0
    ping: object = None
    answered: bool = False          # the actor has answered a ping since the stage was handed to it


class Scheduler:
    def __init__(self, plan: Plan, todo: list[str], done: set[str], shapes: dict[str, Shape], actor_class,
                 store_location: str, recorder: Recorder, max_concurrent: int, max_retries: int,
                 progress, lease=None, hang: HangPolicy = HangPolicy(), clock=time.monotonic, tune_actor=None,
                 runtime_env: dict | None = None, kept: KeptActors | None = None):
        self.plan, self.todo, self.done = plan, todo, set(done)
        self.shapes, self.actor_class, self.store_location = shapes, actor_class, store_location
        self.recorder, self.max_concurrent, self.max_retries = recorder, max_concurrent, max_retries
        self.progress, self.lease, self.hang, self.clock = progress, lease, hang, clock
        self.idle: dict[Shape, list] = {}
        self.alive: dict = {}  # actor -> shape
        self.made = 0
        # The loop's state.
        self.children = plan.children()
        self.priority = plan.remaining_path()
        self.pending = set(todo)                    # the stages this run is to run
        self.waiting = {k: sum(1 for p in set(plan.stages[k].parents.values()) if p not in self.done) for k in todo}
        # Outputs of stages finished in earlier runs come from the store; this run's travel as object refs.
        self.outputs: dict[str, object] = {k: ARTIFACT + k for k in self.done}
        self.handed = {k: sum(1 for c in self.children[k] if c in self.pending) for k in set(self.done) | self.pending}
        self.given: set[str] = set()
        self.ready: list = []
        self.tune_ready: list[str] = []  # tune stages wait apart: each runs alone (see dispatch)
        for i, k in enumerate(todo):
            if self.waiting[k] == 0:
                self._make_ready(k, i)
        self.inflight: dict[object, Running] = {}
        self.retries: dict[str, int] = {}
        self.dead: set[str] = set()
        self.multi_shape = len({shapes[k] for k in todo}) > 1
        self.seed_left = Counter(plan.stages[k].seed for k in todo)
        self.open_seeds: set[int] = set()
        self.window = 2 * max_concurrent
        self.slowest_epoch: dict[str, float] = {}   # stage kind -> slowest epoch seen in this run
        self.answering: set = set()                  # actors that have answered a ping: started, torch imported
        self.held: dict = {}                         # actor -> the outputs it said it holds (trial_actor.py)
        # A tune stage runs alone: its trials need the cluster's CPUs, so no trial actor may hold them meanwhile.
        self.tune_actor, self.exclusive = tune_actor, None
        self.runtime_env = runtime_env  # ships a spec's plugin code (its `code:` paths) to every node
        self.commits: CommitThread | None = None  # the store's writes, off the loop's thread (see run)
        self.kept = kept
        if kept is not None:
            self.made = kept.made
            for shape, actors in kept.take(hang.floor_s).items():
                self.idle[shape] = actors
                self.alive.update((actor, shape) for actor in actors)

    # ------------------------------------------------------------ actors
    def _new_actor(self, shape: Shape):
        cpus, gpus, memory = shape
        self.made += 1
        # Two threads: one runs stages, the other answers the driver's liveness pings meanwhile.
        options = dict(name=f"trial-{self.made}-{os.getpid()}", max_restarts=0, num_cpus=cpus, num_gpus=gpus,
                       max_concurrency=2)
        if memory:
            options["memory"] = memory
        if self.runtime_env:
            options["runtime_env"] = self.runtime_env
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
        self.answering.discard(actor)
        self.held.pop(actor, None)
        ray.kill(actor)

    def _retire_unneeded(self) -> None:
        """With several shapes, an idle actor whose shape no waiting or running stage needs may hold the
        resources a pending actor of another shape waits for: retire it (a new one costs a torch import)."""
        wanted = {self.shapes[k] for _, _, k in self.ready} | {self.alive.get(r.actor) for r in self.inflight.values()}
        for shape, actors in self.idle.items():
            if shape not in wanted and wanted - {shape}:
                while actors:
                    self._retire(actors.pop())

    def _release(self, actor) -> None:
        if actor in self.alive:
            self.idle.setdefault(self.alive[actor], []).append(actor)

    # ------------------------------------------------------------ handing out work
    def _hand_over(self, key: str) -> None:
        """`key` has its inputs: its parents' references may be dropped once all their dependants do."""
        if key in self.given:
            return
        self.given.add(key)
        for p in set(self.plan.stages[key].parents.values()):
            self.handed[p] -= 1
            if self.handed[p] == 0 and p in self.outputs:
                self.outputs[p] = ARTIFACT + p

    def dispatch(self) -> None:
        # Two passes: first only stages of seeds already open (while `window` seeds are open), then, if an actor
        # would otherwise idle, a new seed. Longest-path-first alone would run every seed's shared stages first
        # and keep all their outputs alive at once.
        if self.exclusive is not None:
            return
        if self.tune_ready:  # it starts once what runs has finished; nothing new starts meanwhile
            if not self.inflight:
                self._start_tune(self.tune_ready.pop(0))
            return
        for respect_window in (True, False):
            held = []
            while self.ready:
                item = heapq.heappop(self.ready)
                key = item[2]
                seed = self.plan.stages[key].seed
                if respect_window and seed not in self.open_seeds and len(self.open_seeds) >= self.window:
                    held.append(item)
                    continue
                actor = self._actor_for(self.shapes[key])
                if actor is None:  # every actor is busy
                    held.append(item)
                    break
                self.open_seeds.add(seed)
                self._start(key, actor)
            for item in held:
                heapq.heappush(self.ready, item)
            if len(self.alive) >= self.max_concurrent and not any(self.idle.values()):
                break
        if self.multi_shape:
            self._retire_unneeded()

    def _start(self, key: str, actor) -> None:
        stage = self.plan.stages[key]
        parents = [self.outputs[stage.parents[r]] for r in stage.inputs]
        payload = stage.payload(self.plan.config)
        self._hand_over(key)
        if key != self.exclusive:  # a tune actor serves one stage: it holds nothing and takes every input as sent
            parents = self._transport(key, actor, payload, parents)
        meta_ref, out_ref = actor.run.options(num_returns=2, name=task_name(stage.label)).remote(
            payload, list(stage.inputs), *parents)
        self.inflight[meta_ref] = Running(key, actor, out_ref, heard_at=self.clock())
        self.progress.stage_started(key, stage.label, stage.kind, stage.meta.get("method"))

    def _transport(self, key: str, actor, payload: dict, parents: list) -> list:
        """What travels with the stage (trial_actor.py says why): a parent output the actor holds, or one this
        call sends already under another role, goes as a `HELD` marker; the actor is told to keep what more
        stages of this run will take (its parents and its own output), and whether to return its output."""
        held = self.held.get(actor, set())
        sent, out = set(), []
        for role, ref in zip(self.plan.stages[key].inputs, parents):
            parent = self.plan.stages[key].parents[role]
            out.append(HELD + parent if parent in held or parent in sent else ref)
            sent.add(parent)
        ship = self.handed.get(key, 0) > 0  # a dependant not handed out yet takes it from Ray (set by _hand_over)
        hold = sorted(k for k in held | sent | {key} if self.handed.get(k, 0) > 0)
        payload["transport"] = {"hold": hold, "ship": ship}
        return out

    def _start_tune(self, key: str) -> None:
        for actors in self.idle.values():
            while actors:
                self._retire(actors.pop())
        self.exclusive = key
        self._start(key, self.tune_actor(self.plan.stages[key], self.shapes[key]))

    def _make_ready(self, key: str, tiebreak: int = 0) -> None:
        if self.plan.stages[key].kind == "tune":
            self.tune_ready.append(key)
        else:
            heapq.heappush(self.ready, (-self.priority[key], tiebreak, key))

    def _requeue(self, key: str) -> None:
        self._make_ready(key, -self.retries[key])

    # ------------------------------------------------------------ the loop
    def run(self, summary: RunSummary) -> RunSummary:
        # Commits are written on their own thread, so the loop hands out work while the store is written; a
        # stage is counted finished only once its commit has returned (CommitThread.completed).
        self.commits = CommitThread()
        lost = False
        try:
            while self.ready or self.tune_ready or self.inflight:
                self._check_stop()
                self.dispatch()
                ref = self._next_finished(summary)
                if ref is not None:
                    self._finished(ref, summary)
                self.commits.completed()
            self.commits.flush()
            if self.kept is not None:  # every actor is idle now: the next run starts with them, not retired below
                self.kept.idle = {shape: list(actors) for shape, actors in self.idle.items() if actors}
                self.kept.made = self.made
                for actors in self.kept.idle.values():
                    for actor in actors:
                        self.alive.pop(actor, None)
        except LeaseLost:
            lost = True  # the sweep is another driver's now: what this one has not written yet, it never writes
            raise
        finally:
            # Also on Ctrl-C: free the cluster's CPUs/GPUs now, not when the handles are collected.
            for actor in list(self.alive):
                self._retire(actor)
            # Stages that finished before a stop are still committed, as when commits were written in the loop.
            self.commits.close(write_pending=not lost)
        return summary

    def _check_stop(self) -> None:
        if self.lease is None:
            return
        if self.lease.lost.is_set():
            raise LeaseLost(f"sweep {self.plan.sweep}: another driver took over the lease; stopping")
        if self.lease.stop_requested():
            raise StopRequested(f"sweep {self.plan.sweep}: stopped by `orchestrate cancel`")

    def _next_finished(self, summary: RunSummary):
        """The next finished stage's reference; None when a hung stage was handled instead (work changed)."""
        while True:
            done_refs, _ = ray.wait(list(self.inflight), num_returns=1, timeout=TICK_S)
            self.commits.completed()
            self.progress.tick()
            if done_refs:
                return done_refs[0]
            self._check_stop()  # also while a long stage runs, not only between stages
            if self._check_liveness(summary):
                return None

    def _check_liveness(self, summary: RunSummary) -> bool:
        """Ping every running stage; declare the silent ones hung. True if any was."""
        pings = {r.ping: r for r in self.inflight.values() if r.ping is not None}
        answered, _ = ray.wait(list(pings), num_returns=len(pings), timeout=0) if pings else ([], [])
        t = self.clock()
        for ref in answered:
            running = pings[ref]
            running.ping = None
            try:
                beat = ray.get(ref)
            except (RayActorError, ActorDiedError):
                continue  # the actor died: its stage's own reference reports it
            running.heard_at, running.silent_s, running.answered = t, float(beat["silent_s"]), True
            if beat.get("epoch") is not None:
                self.progress.stage_epoch(running.key, *beat["epoch"])
            self.answering.add(running.actor)
            running.slowest_epoch_s = max(running.slowest_epoch_s, float(beat["slowest_epoch_s"]))
        hung = []
        for meta_ref, running in self.inflight.items():
            if running.ping is None:
                running.ping = running.actor.heartbeat.options(enable_task_events=False).remote()
            # Silent as last reported, plus however long the actor has not answered since.
            silent = max(running.silent_s, 0.0) + (t - running.heard_at)
            started = running.answered or running.actor in self.answering
            if silent > self._hang_limit(running) + (0.0 if started else ACTOR_START_S):
                hung.append((meta_ref, running, silent, t - running.heard_at))
        for meta_ref, running, silent, unanswered in hung:
            self._hung(meta_ref, running, silent, unanswered, summary)
        return bool(hung)

    def _hang_limit(self, running: Running) -> float:
        kind = self.plan.stages[running.key].kind
        return self.hang.limit(max(running.slowest_epoch_s, self.slowest_epoch.get(kind, 0.0)))

    def _hung(self, meta_ref, running: Running, silent: float, unanswered: float, summary: RunSummary) -> None:
        limit = self._hang_limit(running)
        del self.inflight[meta_ref]
        self._retire(running.actor)
        self._end_exclusive(running.key)
        # Silence is what the actor last reported plus the time since it last answered: say which dominates.
        why = (f"its actor has not answered for {unanswered:.0f} s" if unanswered > silent - unanswered
               else "its actor answers but the stage makes no progress")
        self._failed_attempt(running.key, "hung", f"no sign of life for {silent:.0f} s (limit {limit:.0f} s: {why}); "
                                                  f"its trial actor was killed", summary)

    def _failed_attempt(self, key: str, error_type: str, message: str, summary: RunSummary) -> None:
        """A lost or hung attempt is a row of its own; the stage runs again until the retry bound."""
        self.retries[key] = self.retries.get(key, 0) + 1
        self.progress.stage_stopped(key)
        t = now()
        meta = {"status": "failed", "error_type": error_type, "started_at": t, "finished_at": t,
                "error": f"{message} (attempt {self.retries[key]} of {self.max_retries + 1})"}
        if self.retries[key] <= self.max_retries:
            self._requeue(key)
            self.dispatch()
            self.commits.submit(partial(self.recorder.record, key, meta))
            return
        self._conclude(key, meta, None, summary)

    def _end_exclusive(self, key: str) -> None:
        if self.exclusive == key:
            self.exclusive = None

    def _finished(self, meta_ref, summary: RunSummary) -> None:
        running = self.inflight.pop(meta_ref)
        if self.exclusive == running.key:
            self._end_exclusive(running.key)
            ray.kill(running.actor)  # a tune actor serves one stage; its trials' resources are free again
        try:
            meta = ray.get(meta_ref)
        except (RayActorError, ActorDiedError) as err:
            self.alive.pop(running.actor, None)
            self.held.pop(running.actor, None)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            self._failed_attempt(running.key, "lost", f"trial actor died: {first}", summary)
            return
        self._release(running.actor)
        if running.actor in self.alive:
            self.held[running.actor] = set(meta.get("held") or ())
        kind = self.plan.stages[running.key].kind
        self.slowest_epoch[kind] = max(self.slowest_epoch.get(kind, 0.0), float(meta.get("slowest_epoch_s") or 0.0))
        self._conclude(running.key, meta, running.out_ref, summary)

    def _conclude(self, key: str, meta: dict, out_ref, summary: RunSummary) -> None:
        """Record a stage's final attempt, release its dependants (or skip them if it failed)."""
        status = meta["status"]
        if status == "ok":
            self.done.add(key)
            self.outputs[key] = out_ref if self.handed.get(key, 0) > 0 else ARTIFACT + key
            for child in self.children[key]:
                if child in self.waiting and child not in self.dead:
                    self.waiting[child] -= 1
                    if self.waiting[child] == 0:
                        self._make_ready(child)
        self._close(key)
        # Hand out new work before writing the store, so trial actors never wait on the driver's I/O.
        self.dispatch()
        self.commits.submit(partial(self.recorder.record, key, meta), partial(self._counted, key, meta, summary))
        if status != "ok":
            self._skip_dependants(key, status, summary)

    def _counted(self, key: str, meta: dict, summary: RunSummary) -> None:
        """Count a stage's final attempt, once its commit is in the store."""
        status, stage = meta["status"], self.plan.stages[key]
        self.progress.stage_done(stage.label, stage.kind, status, float(meta.get("seconds") or 0.0),
                                 (meta.get("point") or {}).get("test_accuracy"), stage.work, key=key,
                                 method=stage.meta.get("method"))
        if status == "ok":
            summary.ran += 1
            return
        if status == "diverged":
            summary.diverged += 1
        else:
            summary.failed += 1
        summary.failures.append(f"{stage.label}: {status} ({meta.get('error_type')}): {meta.get('error')}")

    def _skip_dependants(self, key: str, status: str, summary: RunSummary) -> None:
        for d in descendants(key, self.children):
            if d not in self.dead and d not in self.done and d in self.pending:
                self.dead.add(d)
                self._hand_over(d)
                self._close(d)
                self.commits.submit(partial(self.recorder.skipped, d, key, "diverged" if status == "diverged"
                                            else "failed"), partial(self._skip_counted, d, summary))

    def _skip_counted(self, key: str, summary: RunSummary) -> None:
        summary.skipped_after_failure += 1
        skipped = self.plan.stages[key]
        self.progress.stage_done(skipped.label, skipped.kind, "skipped", 0.0, None, skipped.work, key=key,
                                 method=skipped.meta.get("method"))

    def _close(self, key: str) -> None:
        """`key` will not run again in this run: its seed may leave the window once all its stages have."""
        seed = self.plan.stages[key].seed
        self.seed_left[seed] -= 1
        if self.seed_left[seed] == 0:
            self.open_seeds.discard(seed)


def task_name(label: str) -> str:
    """The stage's label without its seed ("ltr L=7", "snip sp=0.9500"), as the dashboard's task name.

    Ray keeps per-task-name bookkeeping in the driver for the whole run, growing with every distinct name, so
    names must not multiply with seeds; method, level and sparsity still say what a task is doing.
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
