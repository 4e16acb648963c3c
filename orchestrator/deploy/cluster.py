"""Connecting to Ray: a private local cluster by default, a named one only when asked, never a stranger's.

Calling `ray.init` without an address joins whatever cluster Ray's `ray_current_cluster` file names:
another user's sweep on a shared machine, or a dead cluster (then it retries for minutes). So without an address we start a fresh
local cluster (`address="local"`) with every port on the loopback interface, and with one we check that
a Ray cluster answers there (cluster_address) before handing it to Ray.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import tempfile
import threading
import time
import uuid
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import ray

from orchestrator.deploy import cluster_address

CONNECT_TIMEOUT_S = 60.0
LOOPBACK = "127.0.0.1"
# Ray raises its workers' niceness by 15 by default, which keeps a shared cluster's raylet responsive but
# leaves a private sweep's trial actors a few percent of a core (the kernel's share for niceness 15 beside
# niceness 0) next to any other busy process on the machine, so a sweep on a shared machine crawls. A private
# cluster's workers run at the priority of the user who started it, who can lower the whole sweep with
# `nice orchestrate submit`.
WORKER_NICENESS = 0
# The Prometheus servers of the dashboard and of the autoscaler monitor (plain prometheus_client servers, no
# token check, and no switch to turn them off in Ray 2.60) take their ports from these variables. A port no
# socket can bind makes each fail to start, which Ray catches and logs, running on without it.
_METRICS_PORT_VARS = ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")
_UNBINDABLE_PORT = "-1"
# Ray 2.60 waits for a new node to register with its GCS in a fixed 30 s loop (ray/_private/node.py) around a
# call that itself waits up to RAY_raylet_start_wait_time_s (a RayConfig setting each Ray process reads from its
# environment): the allowance is the longer of the two. A busy machine can take longer to start the node's
# agents, and then Ray gives up with "The current node timed out during startup".
NODE_WAIT_VAR = "RAY_raylet_start_wait_time_s"
RAY_NODE_WAIT_S = 30
RETRY_NODE_WAIT_FACTOR = 4  # the one retry allows this many times the first attempt's setting


class ClusterError(RuntimeError):
    """A cluster that cannot be reached or used; the message is one line naming the address or field."""


class ClusterStartError(RuntimeError):
    """A private cluster that did not start, even on a retry with a longer allowance; the message is one line."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _resolve(address: str, label: str) -> tuple[str, str]:
    """'auto' means the cluster named in Ray's current-cluster file: read it ourselves, to check it first."""
    if address != "auto":
        return address, label
    tmp = os.environ.get("RAY_TMPDIR") or "/tmp/ray"
    path = Path(tmp) / "ray_current_cluster"
    try:
        recorded = path.read_text().strip()
    except OSError:
        raise ClusterError(f"{label}: no running cluster is recorded in {path}") from None
    return recorded, f"{label} ({recorded}, from {path})"


def connect(address: str | None, dashboard: bool = True, num_cpus: int | None = None,
            metrics: bool = False) -> tuple[str | None, bool]:
    """(dashboard URL, whether we started the cluster). Joins `address`/$RAY_ADDRESS, else starts a private one.

    `metrics`: a private cluster collects metrics and its node's exporter serves them on loopback (see
    metrics_url); a joined cluster exports metrics as it was started."""
    if ray.is_initialized():
        return None, False
    label = f"--address {address}" if address else f"RAY_ADDRESS {os.environ.get('RAY_ADDRESS')}"
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        return _join(*_resolve(address, label)), False
    # Ray serves metrics without its token to any local user: unless asked for (`metrics`), the dashboard
    # agent's exporter is off with metrics collection; the other two servers (the dashboard's and the
    # autoscaler's own) are always off, by their ports. Asked for, the agent's exporter binds the node's
    # address, which is loopback here: readable by local users, never from the network.
    # Ray's INFO lines (its retries while the node registers, "Started a local Ray instance") stay out of
    # the terminal: submit prints the dashboard's address itself, and a start that fails is one line.
    kwargs = dict(include_dashboard=dashboard, log_to_driver=False, num_cpus=num_cpus,
                  logging_level=logging.WARNING, _node_ip_address=LOOPBACK,
                  _system_config={"worker_niceness": WORKER_NICENESS, "enable_metrics_collection": metrics})
    if metrics:
        kwargs["_metrics_export_port"] = _free_port()
    if dashboard:
        # No fixed port: another Ray on this machine may hold 8265.
        kwargs.update(dashboard_host=LOOPBACK, dashboard_port=_free_port())
    ensure_private_token()
    with _node_ip_stays_loopback(), _metrics_servers_off():
        ctx = _start_private(kwargs)
    node_ip = ctx.address_info.get("node_ip_address")
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise ClusterError(f"private cluster: Ray put its node on {node_ip}, not on {LOOPBACK}, so its ports "
                           f"would be open to the network; stopped it (give --address to use a cluster "
                           f"you run yourself)")
    return _dashboard_url(ctx), True


@contextmanager
def _node_ip_stays_loopback():
    """Ray turns a loopback `_node_ip_address` into the machine's network address (its "remotely reachable"
    IP), and every Ray server (GCS, raylet, object manager, workers, agents, metrics) binds to all
    interfaces unless the node IP is 127.0.0.1. Ray keeps loopback only in its single-machine mode (the
    default on macOS and Windows, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), which it reads once at import into
    this flag; so we hold it off while the private cluster starts. Ray passes the node IP to every process
    it starts on their command line, and after start-up it reports the running node's IP, so the flag is
    needed only here, and to join such a cluster at its loopback address (_loopback_only). Joining any other
    cluster leaves it alone: there the driver must report the address its node has on that cluster."""
    from ray._private import ray_constants

    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if saved is None:  # a Ray without the flag: the node-IP check after start-up says what happened
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextmanager
def _environment(values: dict[str, str]):
    """Variables that the processes ray.init starts read at start-up: set only while it runs."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _metrics_servers_off():
    return _environment({name: _UNBINDABLE_PORT for name in _METRICS_PORT_VARS})


def _start_private(kwargs: dict):
    """ray.init of a private cluster; a start that fails is retried once, its node allowed longer to register.

    What a failed start left running (GCS, raylet, agents, dashboard: processes this one started) is ended
    first, so the retry does not compete with it for the busy machine."""
    setting = _node_wait_setting()
    try:
        return _init_private(kwargs)
    except Exception as err:  # noqa: BLE001 - any failed start gets the one retry
        first = _first_line(err)
    wait = RETRY_NODE_WAIT_FACTOR * (setting or RAY_NODE_WAIT_S)
    try:
        with _environment({NODE_WAIT_VAR: str(wait)}):
            _reread_ray_config()  # the wait is the driver's: it must see the setting too
            return _init_private(kwargs)
    except Exception as err:  # noqa: BLE001 - reported on one line
        again = _first_line(err)
    logs = os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray", "session_*", "logs")
    first, again = first.rstrip("."), again.rstrip(".")
    why = first if first == again else f"{first}; then: {again}"
    raise ClusterStartError(
        f"private Ray cluster: did not start, twice (the retry allowed its node {wait} s to register): {why}. "
        f"The machine may be too busy: submit again when it is less loaded, or with --no-dashboard, or allow "
        f"longer with {NODE_WAIT_VAR}=<seconds> (the retry allows {RETRY_NODE_WAIT_FACTOR} times that); "
        f"Ray's logs: {logs}")


def _init_private(kwargs: dict):
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    since = time.time()
    # A copy each time: ray.init adds its own entries to the system config it is given.
    kwargs = {**kwargs, "_system_config": dict(kwargs["_system_config"])}
    try:
        return ray.init(address="local", **kwargs)
    except BaseException:
        started = [p for p in me.children(recursive=True) if p.pid not in before] + _session_processes(since)
        ray.shutdown()
        for p in started:
            try:
                p.kill()  # SIGKILL ends a stopped process too
            except psutil.Error:
                pass
        raise


def _session_processes(since: float) -> list:
    """The processes of a Ray session this process started at or after `since`, found by their command line,
    which names the session's directory (session_<date>_<time>_<micros>_<this pid>): those the raylet started
    are no longer below this process once the raylet has died, as it does when its agents are too slow."""
    import psutil

    named = re.compile(rf"/session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{os.getpid()}(/|\b)")
    found = []
    for p in psutil.process_iter(["cmdline", "create_time", "uids"]):
        try:
            if p.info["create_time"] >= since - 1 and p.info["uids"].real == os.getuid() \
                    and named.search(" ".join(p.info["cmdline"] or ())):
                found.append(p)
        except (psutil.Error, TypeError, AttributeError):
            pass
    return found


def _node_wait_setting() -> int | None:
    try:
        return int(os.environ[NODE_WAIT_VAR])
    except (KeyError, ValueError):
        return None


def _reread_ray_config() -> None:
    """Ray's C++ settings in this process are read from the environment once; ray.init reads them again only
    when it turns token authentication on by itself (RAY_AUTH_MODE unset). Read them again here, before a
    start only: once connected, the driver holds the cluster's settings, which this would reset."""
    try:
        from ray._raylet import Config
    except ImportError:  # a Ray without it: the started processes still read the variable
        return
    Config.initialize("")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def ensure_private_token() -> None:
    """Ray 2.60 turns token authentication on for a private cluster and, when no token exists, writes a new one
    to ~/.ray/auth_token with the process umask (0644: any local user could read it and use the cluster).
    Where Ray would write it, write it first: mode 0600 from its creation, in one step (a temporary file
    linked into place, so a reader never sees it half-written and an existing token is never replaced)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode is not None and mode.lower() != "token") or os.environ.get("RAY_AUTH_TOKEN") \
            or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path = Path.home() / ".ray" / "auth_token"
    if path.exists():
        return
    tmp = path.parent / f".auth_token.{uuid.uuid4().hex}.tmp"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))  # 256 random bits, as Ray 2.60 makes its tokens
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made one meanwhile: that one stands
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        raise ClusterError(f"private cluster: cannot write Ray's auth token {path} ({err.strerror or err})") from None


def _join(address: str, label: str):
    try:
        target = cluster_address.parse(address, label)
        cluster_address.probe(target)
    except cluster_address.AddressError as err:
        raise ClusterError(str(err)) from None
    with _node_ip_stays_loopback() if _loopback_only(target) else nullcontext():
        return _dashboard_url(_init_with_timeout(target, label))


def _loopback_only(target: cluster_address.Address) -> bool:
    """Whether a GCS given as 127.0.0.1 (or localhost) answers on loopback only, as a private cluster does.
    Ray joins such an address through this machine's network address, where nothing answers then (it would
    wait a minute and fail); the driver must then join as a loopback node itself, which finds the cluster's
    raylet at 127.0.0.1."""
    if target.scheme or not cluster_address.is_loopback(target.host):
        return False
    try:
        from ray._private.services import resolve_ip_for_localhost
    except ImportError:
        return False
    seen_by_ray = resolve_ip_for_localhost(target.host)
    if seen_by_ray == target.host:
        return False
    try:
        with socket.create_connection((seen_by_ray, target.port), timeout=cluster_address.PROBE_TIMEOUT_S):
            return False
    except OSError:
        return True


def _init_with_timeout(target: cluster_address.Address, label: str):
    """ray.init on a thread, so that a GCS that answered the probe but then hangs cannot hold us forever;
    Ray's own log lines and warnings for this call stay out of the user's terminal (errors come back here)."""
    box: dict = {}

    def init():
        try:
            box["ctx"] = ray.init(address=target.for_ray, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as err:  # noqa: BLE001 - reported on the caller's thread
            box["err"] = err

    with _quiet_ray():
        thread = threading.Thread(target=init, daemon=True)
        thread.start()
        thread.join(CONNECT_TIMEOUT_S)
    if thread.is_alive():
        raise ClusterError(f"{label}: no answer from the cluster within {CONNECT_TIMEOUT_S:.0f} s")
    if "err" in box:
        first = (str(box["err"]).strip().splitlines() or [type(box["err"]).__name__])[0]
        raise ClusterError(f"{label}: cannot connect ({first})")
    return box["ctx"]


@contextmanager
def _quiet_ray():
    """Ray's 'Connecting to existing Ray cluster...', 'SIGTERM handler is not set' (we connect on a thread)
    and Ray Client's timeout warnings: noise on our one-line outcome. ray.init sets its logger's level from
    `logging_level` (ERROR, for the call); afterwards the sweep gets Ray's usual warnings again."""
    logger = logging.getLogger("ray")
    level = logger.level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def metrics_url() -> str | None:
    """The Prometheus endpoint of the node this driver runs on, as Ray registered it (connected only)."""
    here = ray.util.get_node_ip_address()
    for node in ray.nodes():
        if node.get("Alive") and node.get("NodeManagerAddress") == here and node.get("MetricsExportPort"):
            return f"http://{here}:{node['MetricsExportPort']}/metrics"
    return None


def _dashboard_url(ctx) -> str | None:
    url = getattr(ctx, "dashboard_url", None) if ctx is not None else None
    if url and not url.startswith("http"):
        url = "http://" + url
    return url


def _local_gpus() -> int:
    """Ray's own count (NVML and CUDA_VISIBLE_DEVICES), without importing torch into the driver."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource
    except ImportError:  # a Ray without this private module: ask torch, though it loads torch into the driver
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
