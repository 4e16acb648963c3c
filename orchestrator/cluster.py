"""Connecting to Ray: a private local cluster by default, a named one only when asked, never a stranger's.

Calling `ray.init` without an address joins whatever cluster Ray's `ray_current_cluster` file names:
another user's sweep on a shared machine, or a dead cluster (then it retries for minutes). So without an address we start a fresh
local cluster (`address="local"`) bound to the loopback interface, and with one we check that it answers
within a bounded time before handing it to Ray.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import ray

CONNECT_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 5.0


class ClusterError(RuntimeError):
    """A cluster that cannot be reached or used; the message is one line naming the address or field."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resolve(address: str) -> str:
    """'auto' means the cluster named in Ray's current-cluster file: read it ourselves, to probe it first."""
    if address != "auto":
        return address
    tmp = os.environ.get("RAY_TMPDIR") or "/tmp/ray"
    path = Path(tmp) / "ray_current_cluster"
    try:
        return path.read_text().strip()
    except OSError:
        raise ClusterError(f"--address auto: no running cluster is recorded in {path}") from None


def _probe(address: str) -> None:
    target = address if "://" in address else f"tcp://{address}"
    parsed = urlparse(target)
    if not parsed.hostname or not parsed.port:
        return  # not host:port (e.g. a Ray client alias): Ray checks it, under our connect timeout
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        raise ClusterError(f"--address {address}: cannot reach {parsed.hostname}:{parsed.port} ({err})") from None


def connect(address: str | None, dashboard: bool = True, num_cpus: int | None = None) -> tuple[str | None, bool]:
    """(dashboard URL, whether we started the cluster). Joins `address`/$RAY_ADDRESS, else starts a private one."""
    if ray.is_initialized():
        return None, False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        resolved = _resolve(address)
        _probe(resolved)
        ctx = _init_with_timeout(address, dict(address=resolved, log_to_driver=False))
        return _dashboard_url(ctx), False
    kwargs = dict(address="local", include_dashboard=dashboard, log_to_driver=False, num_cpus=num_cpus,
                  _node_ip_address="127.0.0.1")
    if dashboard:
        # No fixed port: another Ray on this machine may hold 8265.
        kwargs.update(dashboard_host="127.0.0.1", dashboard_port=_free_port())
    ctx = ray.init(address=kwargs.pop("address"), **kwargs)
    return _dashboard_url(ctx), True


def _init_with_timeout(address: str, kwargs: dict):
    box: dict = {}

    def init():
        try:
            box["ctx"] = ray.init(address=kwargs.pop("address"), **kwargs)
        except Exception as err:  # noqa: BLE001 - reported on the caller's thread
            box["err"] = err

    thread = threading.Thread(target=init, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S)
    if thread.is_alive():
        raise ClusterError(f"--address {address}: no answer from the cluster within {CONNECT_TIMEOUT_S:.0f} s")
    if "err" in box:
        first = (str(box["err"]).strip().splitlines() or [type(box["err"]).__name__])[0]
        raise ClusterError(f"--address {address}: cannot connect ({first})")
    return box["ctx"]


def _dashboard_url(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    if url and not url.startswith("http"):
        url = "http://" + url
    return url


def _local_gpus() -> int:
    """Ray's own count (NVML and CUDA_VISIBLE_DEVICES), without importing torch into the driver."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource
    except ImportError:  # a Ray without this private module: ask torch, at ~180 MB of driver RSS
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    return int(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())


def local_resources() -> dict:
    """What a private cluster on this machine will have (Ray counts the same CPUs and CUDA devices)."""
    import psutil

    return {"CPU": os.cpu_count() or 1, "GPU": _local_gpus(), "memory": psutil.virtual_memory().available}


def check_resources(shapes: dict[str, tuple[float, float, float | None]], available: dict) -> None:
    """Fail fast instead of waiting forever for an actor no node can host. shapes: where -> (cpus, gpus, memory)."""
    for where, (cpus, gpus, memory) in shapes.items():
        for need, kind, field in ((cpus, "CPU", "cpus_per_trial"), (gpus, "GPU", "gpus_per_trial"),
                                  (memory, "memory", "memory_per_trial_gb")):
            have = available.get(kind, 0)
            if need and need > have:
                unit = " GiB" if kind == "memory" else ""
                scale = 2 ** 30 if kind == "memory" else 1
                raise ClusterError(f"{where}.{field}: a trial needs {need / scale:g}{unit} {kind}, "
                                   f"the cluster has {have / scale:g}{unit}")
