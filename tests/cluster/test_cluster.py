"""Connecting to Ray on real processes: a private cluster keeps every port on loopback, and a bad or silent
`--address` fails in one line, fast, with exit code 2 and nothing written.

Only loopback addresses are ever probed here.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from orchestrator.deploy.cluster import RETRY_NODE_WAIT_FACTOR
from orchestrator.deploy.cluster_address import AddressError, parse
from tests.helpers.ray_node_wait import driver_command
from tests.helpers.store_cli import orchestrate, write_spec

ORCHESTRATE = [sys.executable, "-m", "orchestrator.cli"]
SPEC = {
    "name": "addr",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "methods": [{"kind": "oneshot", "criterion": "random"}],
    "sparsities": [0.5],
    "seeds": [0],
}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra)
    return env


# --------------------------------------------------------------------------- a private cluster: loopback only

PRIVATE_CLUSTER = textwrap.dedent('''
    import json, os, sys
    import ray
    from orchestrator.deploy import cluster

    url, started = cluster.connect(None, dashboard=True, num_cpus=1)

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self):
            return os.getpid()

    @ray.remote(num_cpus=0)
    def pid():
        return os.getpid()

    actor = Probe.remote()
    workers = [ray.get(actor.pid.remote()), ray.get(pid.remote())]
    print(json.dumps({"url": url, "started": started, "workers": workers,
                      "gcs_address": ray.get_runtime_context().gcs_address}), flush=True)
    sys.stdin.readline()  # hold the cluster until the test has looked at it
    ray.shutdown()
''')


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # '::ffff:127.0.0.1': an IPv6 socket that takes IPv4 loopback only
    return addr.is_loopback


def test_is_loopback():
    assert [_is_loopback(ip) for ip in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1")] == [True] * 4
    assert [_is_loopback(ip) for ip in ("0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "fe80::1%eth0")] \
        == [False] * 5


def _cluster_processes(driver: psutil.Process, ray_tmp: str) -> list[psutil.Process]:
    """The driver, everything it started (GCS, raylet, dashboard, monitor; the raylet's agents and workers),
    and anything else naming this cluster's temp dir on its command line."""
    found = {driver.pid: driver}
    found.update((p.pid, p) for p in driver.children(recursive=True))
    for p in psutil.process_iter():
        try:
            if ray_tmp in " ".join(p.cmdline()):
                found[p.pid] = p
        except psutil.Error:
            pass
    return list(found.values())


def _role(p: psutil.Process) -> str:
    name, cmd = p.name(), " ".join(p.cmdline())
    if name in ("gcs_server", "raylet"):
        return name
    for marker, role in (("dashboard/dashboard.py", "dashboard"), ("monitor.py", "monitor"),
                         ("ray::DashboardAgent", "dashboard agent"), ("ray::RuntimeEnvAgent", "runtime env agent")):
        if marker in cmd or marker == name:
            return role
    return "worker" if name.startswith("ray::") or cmd.startswith("ray::") else name


def _listening(processes) -> list[tuple[str, int, str, str, int]]:
    """(role, pid, tcp|udp, ip, port) of every listening TCP socket and every bound UDP socket."""
    out = []
    for p in processes:
        try:
            role = _role(p)
            for c in p.net_connections(kind="inet"):
                udp = c.type == socket.SOCK_DGRAM
                if c.laddr and (udp or c.status == psutil.CONN_LISTEN):
                    out.append((role, p.pid, "udp" if udp else "tcp", c.laddr.ip, c.laddr.port))
        except psutil.NoSuchProcess:
            pass  # a worker that exited between the listing and the look
    return out


@pytest.fixture(scope="module")
def private_cluster():
    """A private cluster started by `cluster.connect` in a subprocess of its own (its own RAY_TMPDIR and
    auth token, so it meets neither the session's `ray_cluster` nor the user's ~/.ray), held until the
    module's tests are done: (the driver, what it printed, the temp dir, the token)."""
    ray_tmp = tempfile.mkdtemp(prefix="tsloop-", dir="/tmp")  # short: Ray's socket paths must fit
    token = secrets.token_hex(32)
    proc = subprocess.Popen([sys.executable, "-c", PRIVATE_CLUSTER],
                            env=_env(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen: list[psutil.Process] = []
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-3000:]
        seen.extend(_cluster_processes(psutil.Process(proc.pid), ray_tmp))
        yield proc, json.loads(line), ray_tmp, seen
    finally:
        try:
            proc.stdin.write("\n")
            proc.stdin.close()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _end(proc, seen)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_private_cluster_listens_on_loopback_only(private_cluster):
    proc, info, ray_tmp, seen = private_cluster
    assert info["started"] and info["url"].startswith("http://127.0.0.1:")
    dashboard_port = int(info["url"].rsplit(":", 1)[1].strip("/"))
    # Agents and metrics servers come up on their own time after ray.init returns: wait (bounded) until
    # every component has opened its ports, so none is missed.
    # (The autoscaler monitor listens nowhere: its only port was its metrics server, off on a private cluster.)
    wanted = {"gcs_server", "raylet", "dashboard", "dashboard agent", "runtime env agent"}
    deadline = time.monotonic() + 120
    while True:
        processes = _cluster_processes(psutil.Process(proc.pid), ray_tmp)
        seen.extend(processes)  # for the fixture to end, should any outlive the driver
        sockets = _listening(processes)
        roles = {role for role, *_ in sockets}
        worker_pids = {pid for role, pid, *_ in sockets if role == "worker"}
        if (wanted <= roles and set(info["workers"]) <= worker_pids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert wanted <= roles, f"components with no listening socket: {wanted - roles}; seen: {sockets}"
    assert set(info["workers"]) <= worker_pids, sockets          # the actor's and the task's worker
    assert proc.pid in {pid for _, pid, *_ in sockets}           # the driver's own core-worker server
    assert dashboard_port in {port for *_, port in sockets}
    exposed = [s for s in sockets if not _is_loopback(s[3])]
    assert exposed == [], f"bound off loopback (role, pid, proto, ip, port): {exposed}"


@pytest.mark.slow
def test_a_private_clusters_workers_run_at_the_drivers_priority(private_cluster):
    """Ray nices its workers by 15 by default; beside any busy process a private sweep's actors then starve."""
    proc, info, _, _ = private_cluster
    actor = info["workers"][0]  # lives as long as the driver (the task's worker may be reaped when idle)
    assert psutil.Process(actor).nice() == psutil.Process(proc.pid).nice()


@pytest.mark.parametrize("auth, why", [
    ({}, "the cluster requires Ray's auth token: set RAY_AUTH_MODE=token"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, "the cluster rejected the auth token"),
])
@pytest.mark.slow
def test_joining_without_the_right_token_is_one_line(tmp_path, private_cluster, auth, why):
    address = private_cluster[1]["gcs_address"]
    out, _ = _submit(tmp_path, address, extra_env=auth)
    line = _assert_one_line_exit_2(out, tmp_path, f"--address {address}")
    assert why in line


def _end(proc: subprocess.Popen, started: list[psutil.Process]) -> None:
    """Whatever of this test's cluster is still running, by process id: the driver's session, then any
    process seen in the cluster that outlived it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    me = os.getpid()
    for p in {p.pid: p for p in started if p.pid != me}.values():
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait(timeout=30)


# --------------------------------------------------------------------------- addresses: syntax

@pytest.mark.parametrize("address, why", [
    ("not-a-host:xyz", "port 'xyz' is not a number"),
    ("host:", "no port after the colon"),
    (":123", "no host before the port"),
    ("http://", "an http address is the dashboard's job API"),
    ("https://head:8265", "an http address is the dashboard's job API"),
    ("ray://x:notaport", "port 'notaport' is not a number"),
    ("127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
    ("127.0.0.1:0", "port 0 is out of range"),
    ("localhost", "no port: expected host:port"),
    ("::1:6379", "an IPv6 address needs brackets"),
    ("[::1:6379", "expected [IPv6 address]:port"),
    ("[nope]:6379", "'nope' is not an IPv6 address"),
    ("ftp://h:1", "unknown scheme 'ftp'"),
    ("ray://h:1/x", "no path, user or spaces"),
    ("a b:1", "no path, user or spaces"),
    ("-bad-:1", "'-bad-' is not a host name or IP address"),
    ("local", "'local' starts a new cluster"),
])
def test_malformed_addresses_say_what_is_wrong(address, why):
    with pytest.raises(AddressError) as err:
        parse(address, f"--address {address}")
    message = str(err.value)
    assert message.startswith(f"--address {address}: ") and why in message and "\n" not in message


def test_well_formed_addresses_parse():
    gcs, client, v6 = (parse(a, "x") for a in ("head-1.example:6379", "ray://10.0.0.5:10001", "[::1]:6379"))
    assert (gcs.scheme, gcs.host, gcs.port, gcs.for_ray) == ("", "head-1.example", 6379, "head-1.example:6379")
    assert (client.scheme, client.host, client.port, client.for_ray) == ("ray", "10.0.0.5", 10001,
                                                                          "ray://10.0.0.5:10001")
    assert (v6.host, v6.port, v6.hostport) == ("::1", 6379, "[::1]:6379")


# --------------------------------------------------------------------------- addresses: real `submit` processes

def _submit(tmp_path: Path, address: str | None, env_address: str | None = None,
            extra_env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    args = ORCHESTRATE + ["submit", str(spec), "--store", str(tmp_path / "store"), "--no-progress"]
    if address is not None:
        args += ["--address", address]
    env = {k: v for k, v in _env(RAY_TMPDIR=str(tmp_path / "ray")).items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(extra_env or {})
    if env_address is not None:
        env["RAY_ADDRESS"] = env_address
    t0 = time.monotonic()
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    return out, time.monotonic() - t0


def _assert_one_line_exit_2(out: subprocess.CompletedProcess, tmp_path: Path, naming: str) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and naming in lines[0], out.stderr[-3000:]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*")), \
        sorted((tmp_path / "store").rglob("*"))
    return lines[0]


@pytest.mark.parametrize("address, why", [
    ("not-a-host:xyz", "not a number"), ("host:", "no port"), (":123", "no host"), ("http://", "http address"),
    ("ray://x:notaport", "not a number"), ("127.0.0.1:70000", "out of range"),
])
@pytest.mark.slow
def test_submit_with_a_malformed_address_is_one_line_and_exit_2(tmp_path, address, why):
    out, _ = _submit(tmp_path, address)
    line = _assert_one_line_exit_2(out, tmp_path, f"--address {address}")
    assert why in line


@pytest.mark.slow
def test_a_malformed_ray_address_variable_is_named_as_such(tmp_path):
    out, _ = _submit(tmp_path, None, env_address="not-a-host:xyz")
    line = _assert_one_line_exit_2(out, tmp_path, "RAY_ADDRESS not-a-host:xyz")
    assert "not a number" in line


def _closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _LoopbackServer:
    """A TCP server on a free loopback port that accepts every connection and then either says `reply`
    and hangs up, or (reply None) holds it open and never says anything."""

    def __init__(self, reply: bytes | None):
        self.reply, self.held = reply, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.reply is None:
                self.held.append(conn)
            else:
                conn.sendall(self.reply)
                conn.close()

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["closed", "silent", "http", "silent-ray-client"])
def test_submit_to_an_address_where_no_ray_answers_fails_fast_in_one_line(tmp_path, kind, startup_seconds):
    server = None
    if kind == "closed":
        address, why = f"127.0.0.1:{_closed_loopback_port()}", "Connection refused"
    elif kind == "http":
        server = _LoopbackServer(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nhi\n")
        address, why = f"127.0.0.1:{server.port}", "not like a Ray GCS"
    else:
        server = _LoopbackServer(None)
        scheme = "ray://" if kind == "silent-ray-client" else ""
        address = f"{scheme}127.0.0.1:{server.port}"
        why = "accepts connections but does not answer like a Ray " + ("Client server" if scheme else "GCS")
    try:
        out, seconds = _submit(tmp_path, address)
    finally:
        if server is not None:
            server.close()
    line = _assert_one_line_exit_2(out, tmp_path, f"--address {address}")
    assert why in line
    # A bound on hanging (Ray's own retries take ~24 s and more), counted beyond what a `submit` that exits
    # before connecting takes on this machine, so a loaded machine's slow start-up does not count.
    assert seconds - startup_seconds < 15, \
        f"took {seconds:.1f} s to give up on {address} ({startup_seconds:.1f} s to start up)"


@pytest.fixture(scope="module")
def startup_seconds(tmp_path_factory) -> float:
    """How long a `submit` that exits before connecting takes on this machine (measured once per module)."""
    out, seconds = _submit(tmp_path_factory.mktemp("startup"), "not-a-host:xyz")
    assert out.returncode == 2, out.stderr
    return seconds


# --------------------------------------------------------------------------- a loopback-only cluster

def _target(port: int):
    return parse(f"127.0.0.1:{port}", f"--address 127.0.0.1:{port}")


def test_a_loopback_only_cluster_is_told_apart_from_one_that_answers_where_ray_goes(monkeypatch):
    """Ray joins 127.0.0.1 through the machine's own address; stand that address in with 127.0.0.2 (loopback
    too): where nothing listens there the cluster is loopback-only, and the driver joins as a loopback node."""
    from orchestrator.deploy import cluster

    monkeypatch.setattr("ray._private.services.resolve_ip_for_localhost", lambda host: "127.0.0.2")
    assert cluster._loopback_only(_target(_closed_loopback_port()))
    with socket.socket() as server:
        server.bind(("127.0.0.2", 0))
        server.listen(4)
        assert not cluster._loopback_only(_target(server.getsockname()[1]))  # answers where Ray will connect
    monkeypatch.setattr("ray._private.services.resolve_ip_for_localhost", lambda host: host)
    assert not cluster._loopback_only(_target(_closed_loopback_port()))  # Ray keeps the address
    assert not cluster._loopback_only(parse("ray://127.0.0.1:1", "x"))   # Ray Client addresses are not rewritten
    assert not cluster._loopback_only(parse("10.1.2.3:1", "x"))          # nor other hosts (and are not probed)


@pytest.mark.slow
def test_a_driver_joins_a_loopback_only_cluster_at_its_loopback_address(ray_address, tmp_path):
    """The session's cluster is private (loopback only), as `submit` starts one: a second driver given its
    127.0.0.1 address runs its sweep there (Ray alone would look for it at the machine's address and fail)."""
    sessions = set(Path(os.environ["RAY_TMPDIR"], "ray").glob("session_2*"))
    out = orchestrate("submit", write_spec(tmp_path, SPEC), "--store", str(tmp_path / "store"), "--no-progress",
                      "--address", ray_address)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Ray dashboard" not in out.stdout
    assert set(Path(os.environ["RAY_TMPDIR"], "ray").glob("session_2*")) == sessions  # no cluster of its own


# --------------------------------------------------------------------------- a private cluster: nothing answers without the token

# What a port that does not speak HTTP/1 must be, by the role of the process holding it: a gRPC (HTTP/2-only)
# server, which answers an HTTP/1 request with an HTTP/2 SETTINGS frame. None of them is an endpoint a browser
# or a Prometheus scraper can read, and each checks Ray's token itself, in its gRPC metadata
# (test_joining_without_the_right_token_is_one_line meets that check at the GCS).
GRPC_PORTS = {
    "gcs_server": "the GCS's gRPC server",
    "raylet": "the raylet's node-manager and object-manager gRPC servers",
    "worker": "a worker's core-worker gRPC server (task and actor calls)",
    "python": "the driver's own core-worker gRPC server",
    "dashboard agent": "the agent's gRPC server (node stats for the dashboard; the workers' metrics port)",
}


def _get_without_token(port: int) -> tuple[str, bytes]:
    """('refused' | 'closed' | 'http' | 'http2', first bytes) of an HTTP/1 GET /metrics with no credentials."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except ConnectionRefusedError:
        return "refused", b""
    data = b""
    with sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            while len(data) < 64 and (chunk := sock.recv(64)):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    if not data:
        return "closed", data
    if data.startswith(b"HTTP/1."):
        return "http", data
    # An HTTP/2 frame header: 3 bytes of length, then the type, 4 = SETTINGS.
    return ("http2" if len(data) >= 9 and data[3] == 4 else "other"), data


@pytest.mark.slow
def test_no_port_of_a_private_cluster_answers_without_the_token(private_cluster):
    """Every listening TCP port of the private cluster's processes, asked for /metrics without the token:
    an HTTP server says 401 or 403, and a port that is not HTTP/1 is a gRPC port of a role in GRPC_PORTS.
    The Prometheus servers of the dashboard, the dashboard agent and the autoscaler monitor answered 200, with
    task and actor names, to any local user."""
    proc, info, ray_tmp, seen = private_cluster
    # Components open their ports on their own time after ray.init returns: wait (bounded) until each has
    # its main port open, then a while longer for servers they start after it.
    wanted = {"gcs_server", "raylet", "dashboard", "dashboard agent", "runtime env agent"}
    deadline = time.monotonic() + 120
    while True:
        processes = _cluster_processes(psutil.Process(proc.pid), ray_tmp)
        seen.extend(processes)
        if wanted <= {role for role, *_ in _listening(processes)} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(5)
    sockets = sorted({s for s in _listening(_cluster_processes(psutil.Process(proc.pid), ray_tmp)) if s[2] == "tcp"})
    assert wanted <= {role for role, *_ in sockets}, sockets
    answers = {(role, pid, port): _get_without_token(port) for role, pid, _, _, port in sockets}
    without_token = {where: data.split(b"\r\n", 1)[0].decode() for where, (kind, data) in answers.items()
                     if kind == "http" and data.split(b" ", 2)[1] not in (b"401", b"403")}
    assert without_token == {}, f"answered without the token ((role, pid, port): status line): {without_token}"
    unexplained = {where: data[:16] for where, (kind, data) in answers.items()
                   if kind in ("http2", "other") and not (kind == "http2" and where[0] in GRPC_PORTS)}
    assert unexplained == {}, f"not HTTP/1, and not a gRPC port of a known role: {unexplained}"
    # The token check was really met. (Not always at the dashboard agent's HTTP server: its port, 52365 unless
    # given, may be held by another Ray on this machine, and then the agent runs without it.)
    http = {role for (role, _, _), (kind, _) in answers.items() if kind == "http"}
    assert {"dashboard", "runtime env agent"} <= http, answers


# --------------------------------------------------------------------------- the auth token a private cluster makes

@pytest.mark.slow
def test_a_private_clusters_new_auth_token_is_private_to_its_user(tmp_path):
    """With no token anywhere, starting a private cluster makes ~/.ray/auth_token: readable by its user only,
    from its creation (the child runs with umask 0, under which Ray's own write made it 0666), and it is the
    token the cluster uses. HOME is a temp dir: the real ~/.ray is never touched."""
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="tstok-", dir="/tmp")
    script = textwrap.dedent('''
        import ray
        from ray._raylet import AuthenticationTokenLoader
        from orchestrator.deploy import cluster

        cluster.connect(None, dashboard=False, num_cpus=1)
        print(AuthenticationTokenLoader.instance().get_raw_token(ignore_auth_mode=True), flush=True)
        ray.shutdown()
    ''')
    env = {k: v for k, v in _env(RAY_TMPDIR=ray_tmp, HOME=str(home)).items() if not k.startswith("RAY_AUTH")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=lambda: os.umask(0))
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        _end(proc, [])
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, err[-3000:]
    token = home / ".ray" / "auth_token"
    assert oct(token.stat().st_mode & 0o777) == oct(0o600)
    assert oct((home / ".ray").stat().st_mode & 0o777) == oct(0o700)
    assert len(token.read_text()) == 64 and out.strip() == token.read_text()
    assert [p.name for p in (home / ".ray").iterdir()] == ["auth_token"]  # no temporary file left


def test_an_existing_auth_token_is_left_as_it_is(tmp_path, monkeypatch):
    from orchestrator.deploy import cluster

    (tmp_path / ".ray").mkdir(mode=0o755)
    (tmp_path / ".ray" / "auth_token").write_text("mine")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    cluster.ensure_private_token()
    assert (tmp_path / ".ray" / "auth_token").read_text() == "mine"
    (tmp_path / ".ray" / "auth_token").unlink()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token wanted: none made
    cluster.ensure_private_token()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from the environment")  # Ray uses this one: none made
    cluster.ensure_private_token()
    assert not (tmp_path / ".ray" / "auth_token").exists()


# --------------------------------------------------------------------------- a private cluster that does not start

STALLED_NODE_WAIT_S = 5  # the node wait these tests give Ray (the retry's is the product's factor times it)
RETRIED_NODE_WAIT_S = RETRY_NODE_WAIT_FACTOR * STALLED_NODE_WAIT_S


class _AgentStaller:
    """Stops (SIGSTOP) the dashboard agent of each of the first `count` node starts under `ray_tmp`, as a busy
    machine would by never giving it the CPU: the raylet waits for the agent's ports before it registers its
    node, so Ray's wait for the node runs out ("The current node timed out during startup"). Records what the
    node wait setting of each raylet was, and whether the agents it stopped were still alive when the next
    retry's first raylet appeared."""

    def __init__(self, ray_tmp: str, count: int):
        self.ray_tmp, self.count = ray_tmp, count
        self.stopped: list[psutil.Process] = []
        self.raylet_waits: dict[int, str | None] = {}  # in the order they appeared
        self.stopped_alive_at_retry: list[bool] | None = None  # when the first raylet of the retry appeared
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.done.is_set():
            for p in psutil.process_iter():
                try:
                    argv = p.cmdline()
                    if self.ray_tmp not in " ".join(argv):
                        continue
                    if p.name() == "raylet":  # (its command line names the agent's script too)
                        if p.pid not in self.raylet_waits:
                            wait = self.raylet_waits[p.pid] = p.environ().get("RAY_raylet_start_wait_time_s")
                            if wait != str(STALLED_NODE_WAIT_S) and self.stopped_alive_at_retry is None:
                                self.stopped_alive_at_retry = [_alive(s) for s in self.stopped]
                    elif any(a.endswith("dashboard/agent.py") for a in argv) and len(self.stopped) < self.count \
                            and p.pid not in {s.pid for s in self.stopped}:
                        p.suspend()
                        self.stopped.append(p)
                except psutil.Error:
                    pass
            time.sleep(0.05)

    def close(self):
        self.done.set()
        self.thread.join(timeout=10)
        for p in self.stopped:
            try:
                p.kill()
            except psutil.Error:
                pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _submit_stalled(tmp_path: Path, stalls: int) -> tuple[subprocess.CompletedProcess, _AgentStaller, str]:
    """`orchestrate submit` of a private cluster whose first `stalls` node starts are stalled; Ray's node wait
    set to STALLED_NODE_WAIT_S (the retry allows RETRY_NODE_WAIT_FACTOR times that). Ray's own fixed 30 s loop
    around that wait is cut to a second less in this driver, so a stalled first start lasts the setting, not 30 s."""
    ray_tmp = tempfile.mkdtemp(prefix="tsstart-", dir="/tmp")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    env = {k: v for k, v in _env(RAY_TMPDIR=ray_tmp, HOME=str(tmp_path),
                                 RAY_raylet_start_wait_time_s=str(STALLED_NODE_WAIT_S)).items()
           if not k.startswith("RAY_AUTH")}
    staller = _AgentStaller(ray_tmp, stalls)
    try:
        command = driver_command(STALLED_NODE_WAIT_S - 1) + ["submit", str(spec), "--store", str(tmp_path / "store"),
                                                             "--no-progress", "--no-dashboard"]
        out = subprocess.run(command,
                             env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    finally:
        staller.close()
    return out, staller, ray_tmp


def _left_running(ray_tmp: str) -> list[str]:
    left = []
    for p in psutil.process_iter():
        try:
            if ray_tmp in " ".join(p.cmdline()) and _alive(p):
                left.append(f"{p.pid} {p.name()}")
                p.kill()
        except psutil.Error:
            pass
    return left


def _assert_started_again_with_the_longer_wait_after_ending_the_first(staller: _AgentStaller) -> None:
    """The first start's node wait was Ray's setting, the retry's RETRY_NODE_WAIT_FACTOR times it; when the retry's
    raylet appeared, the agent stalled in the first start had been ended. (A start was once seen to show two raylets.)"""
    waits = list(staller.raylet_waits.values())
    assert waits and waits[0] == str(STALLED_NODE_WAIT_S) and waits[-1] == str(RETRIED_NODE_WAIT_S), waits
    assert waits == sorted(waits, key=int), waits
    assert staller.stopped_alive_at_retry == [False], staller.stopped_alive_at_retry


@pytest.mark.slow
def test_a_private_cluster_that_does_not_start_is_retried_once_then_one_line_exit_4(tmp_path):
    out, staller, ray_tmp = _submit_stalled(tmp_path, stalls=2)
    try:
        assert out.returncode == 4, (staller.raylet_waits, [p.pid for p in staller.stopped], out.stderr[-3000:])
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        ours = [line for line in out.stderr.splitlines() if line.startswith("private Ray cluster")]
        assert len(ours) == 1 and out.stderr.strip().endswith(ours[0]), out.stderr[-3000:]
        assert f"did not start, twice (the retry allowed its node {RETRIED_NODE_WAIT_S} s to register)" in ours[0]
        assert "The current node timed out during startup" in ours[0]
        assert "--no-dashboard" in ours[0] and "RAY_raylet_start_wait_time_s" in ours[0]
        _assert_started_again_with_the_longer_wait_after_ending_the_first(staller)
        assert not (tmp_path / "store").exists()  # nothing written by a submit whose cluster never started
    finally:
        left = _left_running(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert left == [], f"left running: {left}"


@pytest.mark.slow
def test_a_private_cluster_whose_first_start_fails_is_started_again_and_the_sweep_runs(tmp_path):
    out, staller, ray_tmp = _submit_stalled(tmp_path, stalls=1)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "Traceback" not in out.stderr and "0 failed" in out.stdout, out.stdout + out.stderr[-3000:]
        _assert_started_again_with_the_longer_wait_after_ending_the_first(staller)
        from orchestrator.spec.plan import build_plan
        from orchestrator.spec.sweep_spec import parse_spec
        from orchestrator.store.results_store import ResultsStore

        assert ResultsStore(str(tmp_path / "store")).done_keys("addr") == set(build_plan(parse_spec(SPEC)).stages)
    finally:
        left = _left_running(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert left == [], f"left running: {left}"
