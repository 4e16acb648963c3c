"""The sweep's own metrics, recorded by the driver through `ray.util.metrics` for Ray's Prometheus exporter:
stages finished by kind, method and status (ok, failed, diverged, skipped), stages running by kind and
method, stages left, epochs done and their rate, and the ETA.

Ray exports them (prefixed `ray_`) only where the cluster collects metrics: a private cluster does so only
when `submit --metrics` asks (see orchestrator/cluster.py for why it is off by default); elsewhere recording
costs nothing and goes nowhere. The Grafana dashboard that shows them is `grafana_dashboard.json`, beside
this module. Tags hold the sweep, stage kind and method, never a stage's label or seed, so the number of
series stays that of the spec's methods, however many seeds a sweep has.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.progress import Progress

DASHBOARD_FILE = "grafana_dashboard.json"


class SweepMetrics:
    def __init__(self, sweep: str):
        from ray.util.metrics import Counter, Gauge

        self.sweep = sweep
        kind_method = ("sweep", "kind", "method")
        self._finished = Counter("ticketsweep_stages_finished", tag_keys=kind_method + ("status",),
                                 description="Stages finished in this run, by kind, method and status.")
        self._running = Gauge("ticketsweep_stages_running", tag_keys=kind_method,
                              description="Stages running now, by kind and method.")
        self._left = Gauge("ticketsweep_stages_left", tag_keys=("sweep",),
                           description="Stages of this run not finished yet.")
        self._epochs = Gauge("ticketsweep_epochs_done", tag_keys=("sweep",),
                             description="Epochs finished in this run (reported by running stages).")
        self._rate = Gauge("ticketsweep_epochs_per_second", tag_keys=("sweep",),
                           description="Epochs finished per second since the first stage began.")
        self._eta = Gauge("ticketsweep_eta_seconds", tag_keys=("sweep",),
                          description="Estimated seconds until the run ends (absent until it can be priced).")
        self._running_seen: set[tuple[str, str]] = set()

    def _tags(self, kind: str | None = None, method: str | None = None) -> dict:
        tags = {"sweep": self.sweep}
        if kind is not None:
            tags.update(kind=kind, method=method or kind)
        return tags

    def finished(self, kind: str, method: str | None, status: str) -> None:
        self._finished.inc(1.0, tags={**self._tags(kind, method), "status": status})

    def update(self, progress: "Progress") -> None:
        """Set the gauges from the progress reporter's state (called on every change and every tick)."""
        counts: dict[tuple[str, str], int] = {}
        for stage in progress.running.values():
            pair = (stage.kind, stage.method or stage.kind)
            counts[pair] = counts.get(pair, 0) + 1
        # A pair that ran before and runs no more reads 0, not its last count.
        self._running_seen |= set(counts)
        for kind, method in self._running_seen:
            self._running.set(float(counts.get((kind, method), 0)), tags=self._tags(kind, method))
        self._left.set(float(progress.total - progress.done), tags=self._tags())
        self._epochs.set(progress.epochs, tags=self._tags())
        rate = progress.epochs_per_second()
        if rate is not None:
            self._rate.set(rate, tags=self._tags())
        eta = progress.eta()
        if eta is not None:
            self._eta.set(eta, tags=self._tags())


def grafana_dashboard() -> dict:
    """The Grafana dashboard definition shipped with the package."""
    return json.loads(resources.files("orchestrator").joinpath(DASHBOARD_FILE).read_text())
