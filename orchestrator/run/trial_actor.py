"""The trial actor: a long-lived process that runs stages, keeping torch imported and datasets on its device.

A stage's exception never kills the actor: it becomes a failure meta with an `error_type` class. What the
stage printed (and its traceback) comes back in the meta, so the driver can keep it in the store.

What travels through Ray per stage is kept to what the actor does not have already. The driver's `transport`
entry of the payload says (1) which parent outputs to keep ("hold") after the stage, because more of its
dependants may come to this actor: a later stage is then handed `HELD + key` instead of a reference, and
the actor neither fetches nor deserializes that output again (every one-shot stage of a seed starts from the
same warm-up weights); a parent used in several roles of one stage travels once; (2) whether the stage's
own output is to be returned through Ray at all ("ship"): it is not when no stage of this run waits for it
(it is in the store's artifacts either way, written before the stage's meta returns). The actor says in
each meta which outputs it holds ("held"), so the driver knows exactly what it may refer to; what the actor
holds is bounded (`HOLD_BYTES`, the oldest dropped first), and a stage is handed copies of what the actor holds
(and of an output serving two of its roles), so a stage that changes its inputs in place changes no other.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import socket
import sys
import threading
import time
import traceback
from datetime import datetime, timezone

from orchestrator.store import artifacts

ARTIFACT = "artifact:"  # marks an input that the actor loads from the store instead of the object store
HELD = "held:"          # marks an input the actor holds already (an earlier stage's, or this call's other role)
HOLD_BYTES = 512 * 2 ** 20  # at most this much of held outputs per actor: a miss costs one fetch, never a result
LOG_LIMIT = 200_000     # characters of a stage's output kept in its log


def _now() -> datetime:
    return datetime.now(timezone.utc)


def classify(err: BaseException) -> tuple[str, str]:
    """(status, error_type) of a stage exception.

    diverged: the training loss became non-finite (not retried: the same inputs diverge again);
    oom: out of memory; data: an unusable dataset; artifact: a parent's stored output is missing;
    error: any other exception in the code.
    """
    from workers.data.files import DataError
    from workers.training.loop import Diverged

    if isinstance(err, Diverged):
        return "diverged", "diverged"
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return "failed", "oom"
    if isinstance(err, DataError):
        return "failed", "data"
    if isinstance(err, artifacts.ArtifactMissing):
        return "failed", "artifact"
    return "failed", "error"


def _print_epoch(row: dict) -> None:
    """One line per epoch in the stage's log: what a user looks for when a stage misbehaves."""
    fields = [f"{row.get('phase', 'train')} epoch {row.get('epoch', 0):g}"]
    for name in ("train_loss", "objective", "expected_kept_fraction", "val_accuracy", "val_loss", "test_accuracy",
                 "test_loss", "lr"):
        if row.get(name) is not None:
            fields.append(f"{name} {row[name]:.4g}")
    print("  ".join(fields))


def _outcome(point: dict) -> str:
    """The stage's result as its row records it: the evaluation chosen by validation accuracy, and the last."""
    def number(name: str) -> str:
        value = point.get(name)
        return "—" if value is None or value != value else f"{value:.4f}"

    chosen = point.get("selected_epoch")
    where = f" at epoch {chosen:g}" if chosen is not None and chosen == chosen else ""
    return (f", best validation accuracy {number('val_accuracy')}{where} (test accuracy there "
            f"{number('selected_test_accuracy')}), final test accuracy {number('test_accuracy')}")


class _Tee(io.TextIOBase):
    """Writes to the actor's own stream (Ray's worker log) and to the stage's captured log."""

    def __init__(self, stream, sink: io.StringIO):
        self.stream, self.sink = stream, sink

    def write(self, text: str) -> int:
        self.sink.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class _PeakRSS:
    """Samples this process's resident memory while a stage runs (the OS keeps only a lifetime peak). One
    sampling thread for the actor's life, idle between stages: a thread per stage cost every stage its start."""

    def __init__(self, every_s: float = 0.05):
        import psutil

        self.process, self.every_s, self.peak = psutil.Process(), every_s, 0
        self._on = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name="peak-rss", daemon=True).start()

    def _sample(self) -> None:
        self.peak = max(self.peak, self.process.memory_info().rss)

    def _loop(self) -> None:
        while True:
            self._on.wait()
            with self._lock:
                if self._on.is_set():  # not a sample of the time after the stage ended
                    self._sample()
            time.sleep(self.every_s)

    def __enter__(self) -> "_PeakRSS":
        with self._lock:
            self.peak = 0
            self._sample()
            self._on.set()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._on.clear()
            self._sample()


class TrialActorBody:
    def __init__(self, num_cpus: float, gpu_fraction: float, store_location: str):
        import torch

        torch.set_num_threads(max(1, int(num_cpus)))
        self.device = "cpu"
        if gpu_fraction > 0 and torch.cuda.is_available():
            self.device = "cuda"
            # Fractional GPUs pack several trials on one card: keep each within its share.
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_fraction))
        self.store_location = store_location
        self.datasets: dict[str, object] = {}
        self.host = socket.gethostname()
        self._epoch_at = 0.0
        self._slowest_epoch = 0.0
        self._running = False
        self._epoch: tuple[str, float] | None = None  # (phase, epoch) of the running stage's last epoch
        self._rss = _PeakRSS()
        self._held: dict[str, object] = {}  # stage key -> its outputs, oldest first (see the module's docstring)
        from workers import machine

        # The same for every stage this process runs: read once, not from /proc on every stage.
        self._machine = machine.describe(self.device)

    def heartbeat(self) -> dict:
        """Answered from the actor's second thread while a stage runs: how long the stage has been silent, its
        slowest epoch so far (the scale of its hang limit), and the last epoch it finished (what the terminal
        and the sweep's metrics show of a running stage)."""
        from workers import liveness

        # Between stages nothing is expected of it: an idle actor is never silent.
        silent = liveness.silent_for() if self._running else 0.0
        return {"silent_s": silent, "slowest_epoch_s": self._slowest_epoch, "epoch": self._epoch}

    def _on_epoch(self, row: dict) -> None:
        t = time.monotonic()
        self._slowest_epoch = max(self._slowest_epoch, t - self._epoch_at)
        self._epoch_at = t
        self._epoch = (str(row.get("phase", "train")), float(row.get("epoch", 0)))
        _print_epoch(row)

    def _dataset(self, cfg: dict):
        from workers.data.dataset import dataset_from_config

        name = json.dumps(cfg, sort_keys=True)
        if name not in self.datasets:
            self.datasets[name] = dataset_from_config(cfg).to(self.device)
        return self.datasets[name]

    def _inputs(self, payload: dict, roles: list[str], parent_outputs: tuple) -> dict:
        """The stage's inputs by role, from what came with the call, what the actor holds, or the store; keeps
        the outputs the driver asks it to hold. A stage gets copies of what is held or used twice."""
        wanted = set((payload.get("transport") or {}).get("hold", ()))
        came: dict[str, object] = {}
        for role, out in zip(roles, parent_outputs):
            if isinstance(out, str) and out.startswith(HELD):
                continue
            if isinstance(out, str) and out.startswith(ARTIFACT):
                out = artifacts.load(self.store_location, out[len(ARTIFACT):])
            came[payload["inputs"][role]] = out
        by_key = {}
        for role in roles:
            key = payload["inputs"][role]
            if key not in by_key:
                by_key[key] = came[key] if key in came else self._held[key] if key in self._held \
                    else artifacts.load(self.store_location, key)
        self._held = {k: v for k, v in self._held.items() if k in wanted}
        for key, out in by_key.items():
            if key in wanted:
                self._hold(key, out)
        inputs, given = {}, set()
        for role in roles:
            key = payload["inputs"][role]
            out = by_key[key]
            inputs[role] = copy.deepcopy(out) if key in given or key in self._held else out
            given.add(key)
        return inputs

    def _hold(self, key: str, outputs) -> None:
        """Keep `outputs` for later stages of this actor, the oldest dropped beyond HOLD_BYTES."""
        self._held.pop(key, None)
        self._held[key] = outputs
        while self._held and sum(map(_nbytes, self._held.values())) > HOLD_BYTES:
            del self._held[next(iter(self._held))]

    def run(self, payload: dict, roles: list[str], *parent_outputs):
        """Returns (meta, outputs); a stage exception becomes a failure meta, so the actor lives on. The
        outputs are None where the driver said no stage of this run takes them through Ray."""
        import torch

        from workers.stages.dispatch import run_stage

        from workers import liveness, machine

        started = _now()
        liveness.beat()
        self._epoch_at, self._slowest_epoch, self._running, self._epoch = time.monotonic(), 0.0, True, None
        meta = {"host": self.host, "device": self.device, "started_at": started, **self._machine,
                "load_start": machine.load()}
        transport = payload.get("transport") or {}
        log = io.StringIO()
        cuda = self.device == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        outputs = None
        with self._rss as rss, contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
                contextlib.redirect_stderr(_Tee(sys.stderr, log)):
            try:
                inputs = self._inputs(payload, roles, parent_outputs)
                from workers.plugins import ensure

                ensure(payload["config"].get("plugins"))  # a plugin dataset's loader comes with them
                data = self._dataset(payload["config"]["dataset"])
                print(f"stage {payload['label']} ({payload['kind']}, key {payload['key']}) on {self.host} {self.device}")
                stage = {k: v for k, v in payload.items() if k != "transport"}  # the stage as plain data alone
                result = run_stage(stage, inputs, data, on_epoch=self._on_epoch)
                print(f"finished in {result.seconds:.1f} s" + (_outcome(result.point) if result.point else ""))
                artifacts.save(self.store_location, payload["key"], result.outputs)
                outputs = result.outputs
                if payload["key"] in transport.get("hold", ()):
                    self._hold(payload["key"], outputs)
                meta.update(status="ok", seconds=result.seconds, point=result.point, curve=result.curve,
                            work=result.work)
            except Exception as err:  # noqa: BLE001 - any stage error becomes a failure row
                status, error_type = classify(err)
                traceback.print_exc()
                meta.update(status=status, error_type=error_type, error=f"{type(err).__name__}: {err}"[:2000],
                            seconds=(_now() - started).total_seconds())
        self._running = False
        meta.update(finished_at=_now(), load_end=machine.load(), peak_rss_mb=rss.peak / 2 ** 20,
                    slowest_epoch_s=self._slowest_epoch,
                    cuda_peak_mb=torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
                    log=log.getvalue()[-LOG_LIMIT:], held=list(self._held))
        return meta, outputs if transport.get("ship", True) else None


def _nbytes(outputs) -> int:
    """Bytes of the tensors in a stage's outputs (nested dicts of tensors and plain values)."""
    if isinstance(outputs, dict):
        return sum(_nbytes(v) for v in outputs.values())
    return int(getattr(outputs, "nbytes", 0) or 0)
