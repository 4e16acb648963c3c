"""The tune stage: a seeded random search with ASHA over one method's search space, run by Ray Tune.

`TuneActorBody` is the actor the scheduler hands a tune stage to (it asks for no CPU: the trials do the work,
each with the method's trial resources). The search always tries the method's untuned configuration first (so
the gap between the best and the default is measured), then `configurations - 1` random draws seeded by
`tuning.search_seed`. ASHA stops weak configurations at rungs of grace_period × reduction_factor^k training
epochs; the choice is the completed configuration with the highest score (mean validation accuracy over the
tuning seeds and sparsities), ties to the earliest. Every configuration, its validation accuracy per report,
its epochs and seconds come back as records for the store's `tuning` view.

The stage's work (the store's work columns) is the sum over its configurations of what each one's last report
says it ran (`trial.py`): completed, diverged and stopped by ASHA alike; a retried configuration counts its
last attempt, as a sweep stage counts its ok attempt.

A trial that errors, dies or hangs (`watch.py`) runs again from scratch, up to `max_retries` times; the search
gives a choice only if every configuration completed, diverged or was stopped by ASHA, since a configuration
missing for any other reason would change the choice without saying so. Otherwise the stage fails naming it.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time

from orchestrator.run.recorder import now
from orchestrator.run.trial_actor import TrialActorBody
from orchestrator.store.schemas import WORK_COLUMNS, WORK_FRACTIONAL, total_work
from workers.methods.base import TRAINING_PREFIX, knob_value


def search_space(space: dict):
    """The Tune search space of a spec's `tune` mapping ({knob: {loguniform|uniform|choice: ...}})."""
    from ray import tune

    out = {}
    for knob, dimension in space.items():
        (kind, value), = dimension.items()
        out[knob] = {"loguniform": lambda v: tune.loguniform(*v), "uniform": lambda v: tune.uniform(*v),
                     "choice": lambda v: tune.choice(list(v))}[kind](value)
    return out


def default_values(space: dict, settings: dict, training: dict) -> dict:
    """The untuned configuration's value of every knob of the space (run-dependent defaults resolved)."""
    from workers.methods import config_from

    untuned = config_from(settings).resolved(training)
    return {k: training[k[len(TRAINING_PREFIX):]] if k.startswith(TRAINING_PREFIX) else knob_value(untuned, k)
            for k in space}


def choose(records: list[dict]) -> dict | None:
    """The completed record with the highest score (earliest on ties); None if none completed."""
    done = [r for r in records if r["completed"] and not math.isnan(r["score"])]
    return max(done, key=lambda r: (r["score"], -r["trial"])) if done else None


class TuningFailed(RuntimeError):
    """The search cannot give a choice: a configuration failed in every attempt, or ended unaccounted for."""


class TuneActorBody(TrialActorBody):
    """Runs tune stages. Each trial beats from its own process to `trial_beat` (on the actor's second thread),
    and a trial that hangs is killed and retried by Tune, as a sweep stage is by the scheduler (`watch.py`)."""

    def __init__(self, num_cpus: float, gpu_fraction: float, store_location: str, spec: dict,
                 trial_resources: tuple[float, float]):
        super().__init__(num_cpus, gpu_fraction, store_location)
        self.spec, self.trial_resources = spec, trial_resources
        self.watch = None

    def trial_beat(self, trial_id: str, silent_s: float, slowest_epoch_s: float) -> None:
        """A running trial's sign of life (see `watch.TrialBeats`)."""
        if self.watch is not None:
            self.watch.beat(trial_id, silent_s, slowest_epoch_s)

    def execute(self, payload: dict, inputs: dict):
        import ray
        from ray import tune
        from ray.tune.search import BasicVariantGenerator

        from orchestrator.run.scheduler import ACTOR_START_S, HangPolicy
        from orchestrator.tuning.trial import method_plan, run_trial
        from orchestrator.tuning.tune_hooks import FirstFailureStops, RecordingASHA, Watcher
        from orchestrator.tuning.watch import TrialWatch

        from workers.plugins import ensure

        ensure(payload["config"].get("plugins"))  # the method's kind or criterion may be a plugin's
        p = payload["params"]
        budget, space = p["budget"], p["space"]
        seeds = [str(s) for s in budget["seeds"]]
        shared = {seed: {role: inputs[f"{role}{i}"] for role in ("init", "warmup", "dense")}
                  for i, seed in enumerate(seeds)}
        defaults = default_values(space, p["settings"], payload["config"]["training"])
        base = method_plan(self.spec, p["settings"], defaults)
        max_t = max(1, sum(round(s.work) for s in base.stages.values() if s.kind not in ("init", "warmup", "dense")))
        cpus, gpus = self.trial_resources

        resources = self.spec["resources"]
        watch = self.watch = TrialWatch(HangPolicy(resources["hang_floor_s"], resources["hang_factor"]),
                                        resources["max_retries"], start_s=ACTOR_START_S)
        asha = RecordingASHA(time_attr="epochs", max_t=max_t, grace_period=budget["grace_period"],
                             reduction_factor=budget["reduction_factor"], stop_last_trials=False)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, context={"spec": self.spec, "settings": p["settings"], "shared": shared,
                                                     "threads": cpus, "gpus": gpus,
                                                     "monitor": ray.get_runtime_context().current_actor}),
            {"cpu": cpus, "gpu": gpus})
        tuner = tune.Tuner(
            trainable, param_space=search_space(space),
            tune_config=tune.TuneConfig(
                metric="val_accuracy", mode="max", num_samples=budget["configurations"],
                # The generator has a concurrency limit of its own (0: none), which max_concurrent_trials leaves alone.
                search_alg=BasicVariantGenerator(random_state=budget["search_seed"], points_to_evaluate=[defaults],
                                                 max_concurrent=self.spec["tuning"]["max_concurrent"]),
                scheduler=asha, max_concurrent_trials=self.spec["tuning"]["max_concurrent"], reuse_actors=True),
            run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="ticketsweep-tune-"), verbose=0,
                                      callbacks=[Watcher(watch)], stop=FirstFailureStops(watch),
                                      # A failed attempt runs again from scratch, as a sweep stage does.
                                      failure_config=tune.FailureConfig(max_failures=watch.max_retries)))
        t0 = time.perf_counter()
        grid = tuner.fit()
        records = _records(grid, space, max_t, watch.faults)
        _check_complete(payload["label"], budget["configurations"], records, watch, asha.stopped)
        chosen = choose(records)
        if chosen is None:
            raise TuningFailed(f"{payload['label']}: no configuration completed (ASHA stopped or every configuration "
                               f"diverged)")
        for r in records:
            r["chosen"] = r["trial"] == chosen["trial"]
            del r["trial_id"]
        values = json.loads(chosen["config"])
        return {"values": values}, records, time.perf_counter() - t0

    def run(self, payload: dict, roles: list[str], *parent_outputs):
        """Like a trial actor's run, for a tune stage: (meta, outputs)."""
        import io
        import traceback

        from orchestrator.store import artifacts
        from orchestrator.run.trial_actor import ARTIFACT, classify
        from workers import liveness, machine

        liveness.beat()
        self._running = True
        # The machine the search ran from (on a one-node cluster, its trials' too), with the thread count its
        # trials ran with.
        meta = {"host": self.host, "device": self.device, "started_at": now(), **machine.describe(self.device),
                "torch_threads": max(1, int(self.trial_resources[0])), "load_start": machine.load()}
        log, outputs = io.StringIO(), None
        try:
            inputs = {role: artifacts.load(self.store_location, out[len(ARTIFACT):])
                      if isinstance(out, str) and out.startswith(ARTIFACT) else out
                      for role, out in zip(roles, parent_outputs)}
            try:
                outputs, records, seconds = self.execute(payload, inputs)
            finally:
                for line in self.watch.events if self.watch is not None else ():
                    print(line, file=log)
            artifacts.save(self.store_location, payload["key"], outputs)
            chosen = next(r for r in records if r["chosen"])
            print(f"tuned {payload['label']}: {len(records)} configurations, "
                  f"{sum(r['epochs'] for r in records):g} epochs run, chose {chosen['config']} "
                  f"(score {chosen['score']:.4f})", file=log)
            meta.update(status="ok", seconds=seconds, trials=records, point=None, curve=[], work=total_work(records))
        except Exception as err:  # noqa: BLE001 - any failure of the search becomes a failure row
            status, error_type = classify(err)
            traceback.print_exc(file=log)
            meta.update(status=status, error_type=error_type, error=f"{type(err).__name__}: {err}"[:2000],
                        seconds=(now() - meta["started_at"]).total_seconds())
        self._running = False
        meta.update(finished_at=now(), load_end=machine.load(), log=log.getvalue(), slowest_epoch_s=0.0)
        return meta, outputs


def _records(grid, space: dict, max_t: int, faults: dict[str, list[str]]) -> list[dict]:
    """One record per configuration, in the order the search drew them. `faults`: the failed attempts of each
    trial (by trial id); a configuration that completed after a retry keeps them in `error`."""
    from orchestrator.tuning.tune_hooks import trial_number

    out = []
    for result in sorted(grid, key=lambda r: trial_number(_trial_id(r))):
        trial_id = _trial_id(result)
        reports = _last_attempt(result.metrics_dataframe)
        metrics = result.metrics or {}
        completed = "score" in metrics and not metrics.get("diverged", False)
        failed = faults.get(trial_id, [])
        out.append({
            "trial": trial_number(trial_id), "trial_id": trial_id,
            "config": json.dumps({k: result.config[k] for k in space}, sort_keys=True),
            "reports": json.dumps([[float(r["epochs"]), float(r["val_accuracy"])] for r in reports]),
            "epochs": float(metrics.get("epochs", 0) or 0), "max_epochs": float(max_t),
            "seconds": float(metrics.get("time_total_s", 0.0) or 0.0),
            "work_seconds": float(metrics.get("work_s", 0.0) or 0.0),
            "score": float(metrics["score"]) if completed else math.nan, "completed": completed,
            "diverged": bool(metrics.get("diverged", False)),
            # What it ran, as its last report counted it (a trial that never reported: unknown).
            **{c: (float if c in WORK_FRACTIONAL else int)(metrics[c]) if metrics.get(c) is not None else None
               for c in WORK_COLUMNS},
            "error": "; ".join(f"attempt {i + 1}: {m}" for i, m in enumerate(failed))[:2000] if failed
            else (str(result.error)[:500] if result.error else None),
        })
    # The budget in ASHA's own unit, measured: max_t is a work estimate (a CTS search counts in it, not on the
    # clock), so a stopped configuration is charged what the longest completed one ran.
    full = max((r["epochs"] for r in out if r["completed"]), default=float(max_t))
    for r in out:
        r["max_epochs"] = r["epochs"] if r["completed"] else max(full, r["epochs"])
    return out


def _trial_id(result) -> str:
    """Tune's id of a result's trial: in its metrics, or (a trial that never reported) in its folder's name."""
    trial_id = (result.metrics or {}).get("trial_id")
    found = re.search(r"_([0-9a-f]+_\d{5,})_\d+_", os.path.basename(result.path or ""))
    if trial_id is None and found is None:
        raise TuningFailed(f"a trial's result names no trial (folder {result.path})")
    return trial_id or found.group(1)


def _last_attempt(frame) -> list[dict]:
    """The reports of a trial's last attempt: a retried trial starts again from its first epoch (Tune's
    `training_iteration` restarts at 1), and its file of results keeps the failed attempts' reports above."""
    if frame is None or frame.empty:
        return []
    starts = frame.index[frame["training_iteration"] == 1] if "training_iteration" in frame else []
    if len(starts):
        frame = frame.loc[starts[-1]:]
    return frame[["epochs", "val_accuracy"]].dropna().to_dict("records")


def _check_complete(label: str, configurations: int, records: list[dict], watch, stopped: set[str]) -> None:
    """Every configuration drawn either completed (or diverged), or was stopped by ASHA; anything else is a fault
    that would change the choice, so the stage fails naming it."""
    problems = [f"configuration {r['trial']} {r['config']} failed in all {len(watch.faults[r['trial_id']])} "
                f"attempts; the last: {watch.failed[r['trial_id']]}" for r in records if r["trial_id"] in watch.failed]
    if not problems:
        problems = [f"configuration {r['trial']} {r['config']} ended without a score and was not stopped by ASHA"
                    + (f" ({r['error']})" if r["error"] else "")
                    for r in records if not r["completed"] and not r["diverged"] and r["trial_id"] not in stopped]
        if len(records) != configurations:
            problems.append(f"the search ran {len(records)} of its {configurations} configurations")
    if problems:
        raise TuningFailed(f"{label}: " + "; ".join(problems))
