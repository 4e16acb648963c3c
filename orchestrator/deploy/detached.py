"""Detached runs: a sweep's driver as a Ray job, submitted through the cluster's job API (the dashboard).

`submit --detach` uploads only the spec (as the job's working directory), runs `orchestrate submit` on the
head against that cluster, and records the job in the store, `<store>/jobs/<sweep>.json`, so that `status`,
`cancel` and `logs` find it from any machine that sees the store.

Authentication: a Ray 2.60 cluster wants a token on every job-API request. Ray's own client attaches it
only when RAY_AUTH_MODE=token is set in the submitting process; we attach it whenever Ray's token loader
finds one ($RAY_AUTH_TOKEN, then $RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token), so a user needs only the
token itself, and a cluster without auth simply ignores the header.

Cancelling: `cancel` first leaves a stop request in the store (`leases/<sweep>.stop`, naming the driver's
lease token), which the driver looks for every second and handles like Ctrl-C: it keeps every committed row,
releases the sweep's lease and shuts down. Then it asks Ray to stop the job, with SIGINT rather than Ray's
default SIGTERM (RAY_JOB_STOP_SIGNAL, read by Ray's job supervisor from the job's runtime_env), which would
kill the driver where it stands; under load that SIGINT was seen to go unanswered until Ray's SIGKILL.
A job ended that way is reported CANCELLED, not as Ray names it (see `reported_state`).
"""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from orchestrator.cli.common import INTERRUPTED
from orchestrator.store.files import StoreError, open_store
from orchestrator.store.layout import layout_path
from orchestrator.store.results_store import ResultsStore

ACTIVE = ("PENDING", "RUNNING")
CANCELLED = "CANCELLED"
TERMINAL = ("SUCCEEDED", "FAILED", CANCELLED)  # as reported_state names them (Ray's STOPPED is CANCELLED)
# Time the driver gets after SIGINT to finish the commit in hand and release its lease before Ray kills it.
STOP_WAIT_S = 60
STOP_ENV = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S)}
PROBE_TIMEOUT_S = 5.0
AGENT_WAIT_S = 60.0
POLL_S = 0.5


class JobError(RuntimeError):
    """A job that cannot be submitted, found or reached; the message is one line naming the address or file."""


class JobBusy(JobError):
    """The sweep already has a detached job that is still pending or running."""


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    address: str
    sweep: str
    store: str
    spec: str
    submitted_at: str


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# ------------------------------------------------------------------ the record in the store

def record_path(root: str, sweep: str) -> str:
    return layout_path(root, "job", sweep=sweep)


def read_record(location: str, sweep: str) -> JobRecord | None:
    fs, root = open_store(location)
    path = record_path(root, sweep)
    try:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            return JobRecord(**json.loads(f.read()))
    except (OSError, ValueError, TypeError) as err:
        raise StoreError(f"store {location}: cannot read {path} ({_one_line(err)})") from None


def write_record(location: str, record: JobRecord) -> None:
    """Replace the sweep's record in one step (temporary name, then rename), so a reader never sees half of it."""
    store = ResultsStore(location)
    fs, path = store.fs, record_path(store.root, record.sweep)
    store.check_no_link(path)
    directory = path.rsplit("/", 1)[0]
    tmp = f"{directory}/.{record.sweep}.{uuid.uuid4().hex}.tmp"
    try:
        fs.create_dir(directory, recursive=True)
        with fs.open_output_stream(tmp) as f:
            f.write(json.dumps(asdict(record), indent=1).encode())
        fs.move(tmp, path)
    except OSError as err:
        raise StoreError(f"store {location}: cannot write {path} ({_one_line(err)})") from None


# ------------------------------------------------------------------ talking to the job API

def dashboard_address(address: str | None) -> str:
    """The job API's http(s)://host:port; anything else (a GCS address, 'auto') is a one-line error."""
    parsed = urlparse(address or "")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise JobError(f"--address {address or '(none)'}: --detach needs the dashboard's job API address, "
                       f"e.g. http://HEAD:8265")
    return address.rstrip("/")


def auth_headers() -> dict[str, str]:
    """Ray's token as an Authorization header, found the way Ray finds it; {} when there is none."""
    from ray._raylet import AuthenticationTokenLoader
    from ray.exceptions import AuthenticationError

    try:
        return dict(AuthenticationTokenLoader.instance().get_token_for_http_header(ignore_auth_mode=True))
    except AuthenticationError as err:
        raise JobError(f"Ray auth token: {_one_line(err)}") from None


def client(address: str, option: str = "--address"):
    """A JobSubmissionClient for `address`, with the token; unreachable or refusing clusters are one line.

    `option` names where the address came from in messages: the user's --address, or "" for a recorded job.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = dashboard_address(address)
    where = f"{option} {address}".strip()
    parsed = urlparse(address)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:  # a bounded probe first: Ray's client would wait on an unreachable host for minutes
        with socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        raise JobError(f"{where}: cannot reach {parsed.hostname}:{port} ({err})") from None
    headers = auth_headers()
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as err:
        if "required" in str(err) and not headers:
            raise JobError(f"{where}: the cluster requires Ray's auth token and none was found "
                           f"(set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or put it in ~/.ray/auth_token)") from None
        raise JobError(f"{where}: the cluster rejected the auth token (is it this cluster's? "
                       f"it comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)") from None
    except (ConnectionError, RuntimeError, OSError) as err:
        raise JobError(f"{where}: {_one_line(err)}") from None


def _call(address: str, what: str, fn, *args):
    from aiohttp import ClientError  # the log stream is a websocket (aiohttp); requests' errors are OSErrors

    try:
        return fn(*args)
    except (ConnectionError, RuntimeError, OSError, ClientError) as err:
        raise JobError(f"{address}: cannot {what} ({_one_line(err)})") from None


def reported_state(info) -> str:
    """Ray's state of a job, except that one stopped on request is CANCELLED. Ray names it STOPPED when its own
    stop ended the driver, and FAILED when the driver saw the stop request in the store first and ended as on
    Ctrl-C (exit code INTERRUPTED, which a detached driver, with no terminal, gets no other way)."""
    state = str(info.status)
    if state == "STOPPED" or (state == "FAILED" and info.driver_exit_code == INTERRUPTED):
        return CANCELLED
    return state


def info_of(api, record: JobRecord):
    return _call(record.address, f"get job {record.job_id}", api.get_job_info, record.job_id)


def status_of(api, record: JobRecord) -> str:
    return reported_state(info_of(api, record))


# ------------------------------------------------------------------ the verbs

def entrypoint(spec_name: str, store: str, extra: list[str]) -> str:
    argv = ["orchestrate", "submit", spec_name, "--address", "auto", "--store", store, "--no-progress", *extra]
    return " ".join(shlex.quote(a) for a in argv)


def plugin_code_layout(spec_path: str, code: list[str]) -> list[tuple[str, str]]:
    """(local path, path in the job's working directory) of each `code:` path: where it lies beside the spec,
    so that the job's driver finds it as the spec names it. JobError for a path outside the spec's folder."""
    folder = os.path.dirname(os.path.abspath(spec_path))
    out = []
    for path in code:
        rel = os.path.relpath(path, folder)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise JobError(f"{spec_path}: code: {path} is outside the spec's folder: a detached job ships the spec's "
                           f"folder layout, so keep plugin code beside the spec (or install it on the cluster as a "
                           f"distribution with a ticketsweep.plugins entry point)")
        out.append((path, rel))
    return out


def submit(api, spec_path: str, sweep: str, store: str, extra: list[str] = (), code: list[str] = ()) -> JobRecord:
    """Submit the driver of `sweep` through `api` (see `client`) and record it; JobBusy while an earlier job runs.

    `store` must already be what the head should use: an absolute path (on a filesystem the head sees) or a
    URI, because the job runs in a working directory of its own. The spec's plugin `code:` paths travel in
    that working directory beside it; the job's driver ships them on to the workers.
    """
    layout = plugin_code_layout(spec_path, list(code))
    address = api.get_address()
    earlier = read_record(store, sweep)
    if earlier is not None and earlier.address == address:
        try:
            state = status_of(api, earlier)
        except JobError:
            state = None  # unknown to this cluster (e.g. it was restarted): nothing is running
        if state in ACTIVE:
            raise JobBusy(f"sweep {sweep}: job {earlier.job_id} is still {state} at {address} "
                          f"(orchestrate logs / orchestrate cancel)")
    job_id = f"ticketsweep-{sweep}-{uuid.uuid4().hex[:8]}"
    spec_name = Path(spec_path).name
    workdir = tempfile.mkdtemp(prefix="ticketsweep-job-")
    try:
        # The spec and its plugins' code travel; ticketsweep itself is the cluster's own (its image or environment).
        shutil.copyfile(spec_path, Path(workdir) / spec_name)
        for path, rel in layout:
            target = Path(workdir) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.isdir(path):
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
            else:
                shutil.copyfile(path, target)
        runtime_env = {"working_dir": workdir, "env_vars": dict(STOP_ENV)}

        def send():
            return api.submit_job(entrypoint=entrypoint(spec_name, store, list(extra)), submission_id=job_id,
                                  runtime_env=runtime_env,
                                  metadata={"ticketsweep.sweep": sweep, "ticketsweep.store": store})

        # A head that has just started answers "No available agent" until its node agent has registered.
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                _call(address, "submit the job", send)
                break
            except JobError as err:
                if "No available agent" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    record = JobRecord(job_id=job_id, address=address, sweep=sweep, store=store, spec=spec_name,
                       submitted_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
    try:
        write_record(store, record)
    except StoreError:
        api.stop_job(job_id)  # a job nobody can find again is worse than none
        raise
    return record


def recorded(location: str, sweep: str) -> JobRecord:
    record = read_record(location, sweep)
    if record is None:
        raise JobError(f"store {location}: no detached job recorded for sweep {sweep} "
                       f"(orchestrate submit SPEC --address http://HEAD:8265 --detach)")
    return record


def job_line(store_location: str, sweep: str) -> str | None:
    """One line on the sweep's detached job for `status`, or None when it never had one. Never raises."""
    try:
        record = read_record(store_location, sweep)
    except StoreError as err:
        return f"job: {err}"
    if record is None:
        return None
    head = f"job {record.job_id} at {record.address} (submitted {record.submitted_at})"
    try:
        api = client(record.address, option="")
        info = info_of(api, record)
    except JobError as err:
        return f"{head}: state unknown ({err})"
    state = reported_state(info)
    if state == "FAILED" and info.message and info.message.strip():
        return f"{head}: {state} ({info.message.strip().splitlines()[0][:200]})"
    return f"{head}: {state}"


def _request_stop(record: JobRecord) -> None:
    from orchestrator.store.lease import request_stop

    try:
        request_stop(ResultsStore(record.store), record.sweep)
    except (OSError, StoreError):
        pass  # the store is out of reach from here: Ray's stop alone has to do


def cancel(record: JobRecord, wait_s: float = STOP_WAIT_S + 30) -> tuple[bool, str]:
    """Stop the job and wait until Ray reports it ended: a stop request in the store, which the driver looks
    for every second, then Ray's job stop (SIGINT, SIGKILL after STOP_WAIT_S). Either way the driver keeps
    every committed row and releases the sweep's lease.

    Returns whether it was still running (asked before the stop: the driver may end on the store's request
    before Ray's stop arrives), and its final state (or the last seen, after `wait_s`).
    """
    try:
        api = client(record.address, option="")
    except JobError:
        _request_stop(record)  # the job API is out of reach, the driver may still see the store's request
        raise
    state = status_of(api, record)
    if state in TERMINAL:
        return False, state
    _request_stop(record)
    _call(record.address, f"stop job {record.job_id}", api.stop_job, record.job_id)
    deadline = time.monotonic() + wait_s
    while True:
        state = status_of(api, record)
        if state in TERMINAL or time.monotonic() > deadline:
            return True, state
        time.sleep(POLL_S)


def follow(record: JobRecord, write) -> str:
    """Write the job's logs as they come until it ends (from the start, if it ended already); its final state."""
    api = client(record.address, option="")

    async def tail():
        async for chunk in api.tail_job_logs(record.job_id):
            write(chunk)

    _call(record.address, f"follow the logs of job {record.job_id}", asyncio.run, tail())
    deadline = time.monotonic() + 30  # the log stream closes a moment before the state is final
    while (state := status_of(api, record)) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return state
