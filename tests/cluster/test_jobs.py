"""Detached runs against a real local Ray head (dashboard on, token auth on): submit, status, logs, cancel.

One head serves the module (starting one costs ~15 s on 2 cores). It runs in its own process group with
its own RAY_TMPDIR, so nothing here joins or stops anybody else's Ray; it is killed by that group at the
end (never `ray stop`, which stops every Ray of this user on the machine).
The stage-log lookups at the end need no Ray.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner, Result

from orchestrator.deploy import detached
from orchestrator.store import stage_logs
from orchestrator.cli import main
from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import load_spec, parse_spec
from orchestrator.store.results_store import ResultsStore

VENV_BIN = Path(sys.executable).parent

QUICK = {
    "name": "jobquick",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "magnitude", "score_at": "trained"}],
    "sparsities": [0.5],
    "seeds": [0],
    "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
}
# Long by construction, so that a cancel lands mid-run however fast or loaded the machine: 5000 stages (200
# seeds of init, warm-up, dense and a 22-level LTR chain to 98 %), one at a time. Per-stage overhead, not
# training, sets their pace, and a loaded test process can take 13 s to deliver the stop: one run saw a
# 1000-stage version finish in that time. The test waits only for the first 3 stages.
LONG = {**QUICK, "name": "joblong", "training": {**QUICK["training"], "epochs": 3},
        "methods": [{"kind": "ltr"}], "sparsities": [0.5, 0.8, 0.9, 0.95, 0.98], "seeds": list(range(200))}


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after ')'
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def _kill_group(pgid: int) -> None:
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """(job API URL, token) of a fresh head on loopback with the dashboard and RAY_AUTH_MODE=token."""
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    # The client in this process reads its token with Ray's loader; give the head that same token. Only if
    # there is none do we make one (then no Ray in this process can be using a token we would disturb).
    token = loader.get_raw_token(ignore_auth_mode=True)
    generated = not token
    if generated:
        token = secrets.token_hex(32)
        os.environ["RAY_AUTH_TOKEN"] = token
        loader.reset_cache()
    tmp = tempfile.mkdtemp(prefix="tsjob-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           # the job's driver runs `orchestrate` from the head's PATH: this venv, where the package is installed
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--port=0", "--dashboard-port=0", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1",
         # Fixed by default (52365, 10001): another Ray on this machine may hold them. 0 = any free port; the
         # client server refuses 0, so it gets a port that was free a moment ago.
         "--dashboard-agent-listen-port=0", f"--ray-client-server-port={_free_port()}",
         f"--temp-dir={tmp}", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-3000:]
        match = re.search(r"RAY_API_SERVER_ADDRESS='(http://[^']+)'", out)
        assert match, out[-3000:]
        yield match.group(1), token
    finally:
        proc.kill() if proc.poll() is None else None
        _kill_group(proc.pid)  # every daemon `ray start` left behind shares its process group
        shutil.rmtree(tmp, ignore_errors=True)
        if generated:
            os.environ.pop("RAY_AUTH_TOKEN", None)
            loader.reset_cache()


def _spec_file(tmp_path: Path, spec: dict, store: Path) -> str:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump({**spec, "store": str(store)}))
    return str(path)


def _invoke(*args) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.slow
def test_the_job_api_requires_the_token(head):
    url, token = head
    assert _http_status(f"{url}/api/jobs/", None) == 401
    assert _http_status(f"{url}/api/jobs/", "not-" + token) == 403
    assert _http_status(f"{url}/api/jobs/", token) == 200


@pytest.mark.slow
def test_detached_submit_status_and_logs(head, tmp_path, monkeypatch):
    url, token = head
    store = tmp_path / "store"
    spec_path = _spec_file(tmp_path, QUICK, store)

    t0 = time.perf_counter()
    submitted = _invoke("submit", spec_path, "--address", url, "--detach")
    seconds = time.perf_counter() - t0
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.splitlines()[0]
    assert re.fullmatch(r"ticketsweep-jobquick-[0-9a-f]{8}", job_id), submitted.stdout
    record = json.loads((store / "jobs" / "jobquick.json").read_text())
    assert (record["job_id"], record["address"], record["store"]) == (job_id, url, str(store))
    # It returned at once: the job has not even finished its setup (a driver needs > 5 s to import torch).
    line = detached.job_line(str(store), "jobquick")
    assert line.startswith(f"job {job_id} at {url}") and line.endswith(("PENDING", "RUNNING")), line
    print(f"detached submit returned in {seconds:.2f} s; then: {line}")

    # A second detach of the same sweep while the first is active is refused (exit 3), and writes nothing.
    again = _invoke("submit", spec_path, "--address", url, "--detach")
    assert again.exit_code == 3 and "still" in again.stderr, again.output
    assert json.loads((store / "jobs" / "jobquick.json").read_text())["job_id"] == job_id

    t0 = time.perf_counter()
    followed = _invoke("logs", spec_path)
    print(f"logs followed the job to its end in {time.perf_counter() - t0:.1f} s")
    assert followed.exit_code == 0, followed.output
    plan = build_plan(parse_spec(QUICK))
    # The driver's own summary line, printed last, came through the log stream.
    assert f"{len(plan.stages)} stage(s) ran, 0 already stored, 0 failed" in followed.stdout, followed.stdout
    assert followed.stderr.strip().endswith(f"job {job_id}: SUCCEEDED")
    assert ResultsStore(str(store)).done_keys("jobquick") == set(plan.stages)

    status = _invoke("status", spec_path)
    assert status.exit_code == 0, status.output
    assert f"job {job_id} at {url}" in status.stdout and "SUCCEEDED" in status.stdout, status.stdout

    # The store holds a log only for a stage that printed something.
    dense = next(k for k, s in plan.stages.items() if s.kind == "dense")
    stage = _invoke("logs", spec_path, "--stage", dense[:10])
    if dense in stage_logs.attempts(str(store), "jobquick"):
        assert stage.exit_code == 0 and f"stage {dense} attempt 1" in stage.stderr, stage.output
    else:
        assert stage.exit_code == 2 and "has no log: it ran and printed nothing" in stage.stderr, stage.output

    # Another process, with only RAY_AUTH_TOKEN (no RAY_AUTH_MODE, no ~/.ray): the client sends the token.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(RAY_AUTH_TOKEN=token, HOME=str(tmp_path))
    out = subprocess.run([str(VENV_BIN / "orchestrate"), "status", spec_path], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and f"job {job_id} at {url} (submitted" in out.stdout and "SUCCEEDED" in out.stdout, \
        out.stdout + out.stderr

    # Without a token (nowhere Ray looks), or with a wrong one: a one-line error and exit 2.
    env.pop("RAY_AUTH_TOKEN")
    missing = subprocess.run([str(VENV_BIN / "orchestrate"), "cancel", spec_path], env=env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "requires Ray's auth token and none was found" in missing.stderr, \
        missing.stdout + missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    monkeypatch.setattr(detached, "auth_headers", lambda: {"authorization": "Bearer wrong"})
    wrong = _invoke("cancel", spec_path)
    assert wrong.exit_code == 2 and "rejected the auth token" in wrong.stderr, wrong.stderr


@pytest.mark.slow
def test_cancel_stops_the_job_and_keeps_finished_rows(head, tmp_path):
    url, _ = head
    store = tmp_path / "store"
    spec_path = _spec_file(tmp_path, LONG, store)
    planned = set(build_plan(parse_spec(LONG)).stages)
    submitted = _invoke("submit", spec_path, "--address", url, "--detach")
    assert submitted.exit_code == 0, submitted.output

    results = ResultsStore(str(store))
    deadline = time.monotonic() + 300  # a bound on hanging: the job's driver imports torch and starts Ray first
    while len(results.done_keys("joblong")) < 3:
        assert time.monotonic() < deadline, "the job committed fewer than 3 stages in 300 s"
        time.sleep(0.5)
    before = results.done_keys("joblong")

    t0 = time.perf_counter()
    cancelled = _invoke("cancel", spec_path)
    print(f"cancel took {time.perf_counter() - t0:.1f} s with {len(before)}/{len(planned)} stages done")
    assert cancelled.exit_code == 0, cancelled.output
    assert "CANCELLED; finished stages are stored" in cancelled.stdout, cancelled.stdout

    after = results.done_keys("joblong")
    assert before <= after < planned, "every finished row kept, and the job really stopped early"
    points = results.read("points", "joblong")
    assert set(points["stage_key"]) <= after and set(points["status"]) == {"ok"}
    # The driver took the Ctrl-C path (SIGINT), not a kill: it released the sweep's lease on its way out.
    assert not (store / "leases" / "joblong.json").exists()
    job_id = submitted.stdout.splitlines()[0]
    assert "interrupted: finished stages are stored" in detached.client(url).get_job_logs(job_id)
    _assert_reads_cancelled(spec_path, store, job_id)


def _assert_reads_cancelled(spec_path: str, store: Path, job_id: str) -> None:
    """status, logs and a second cancel all say CANCELLED, and exit 0."""
    assert detached.job_line(str(store), "joblong").endswith(": CANCELLED")
    status = _invoke("status", spec_path)
    assert status.exit_code == 0 and f"job {job_id} at" in status.stdout and ": CANCELLED" in status.stdout, \
        status.output
    followed = _invoke("logs", spec_path)
    assert followed.exit_code == 0 and followed.stderr.strip().endswith(f"job {job_id}: CANCELLED"), followed.output
    again = _invoke("cancel", spec_path)
    assert again.exit_code == 0 and again.stdout.strip() == f"job {job_id} had already ended: CANCELLED", \
        again.output


@pytest.mark.slow
def test_a_job_its_driver_ended_on_the_stores_stop_request_reads_cancelled(head, tmp_path):
    """The path that raced `cancel` into saying FAILED: the driver sees the stop request in the store before
    Ray's stop arrives and ends as on Ctrl-C (exit 130), which Ray calls FAILED. Here only the store's request
    is made, so the job ends that way for certain."""
    from orchestrator.store.lease import request_stop

    url, _ = head
    store = tmp_path / "store"
    spec_path = _spec_file(tmp_path, LONG, store)
    submitted = _invoke("submit", spec_path, "--address", url, "--detach")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.splitlines()[0]
    results = ResultsStore(str(store))
    deadline = time.monotonic() + 300  # a bound on hanging: the job's driver imports torch and starts Ray first
    while not results.done_keys("joblong"):
        assert time.monotonic() < deadline, "the job committed no stage in 300 s"
        time.sleep(0.5)
    assert request_stop(results, "joblong")
    api = detached.client(url)
    deadline = time.monotonic() + 120
    while (info := api.get_job_info(job_id)).status not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, f"still {info.status} 120 s after the stop request"
        time.sleep(0.5)
    assert (str(info.status), info.driver_exit_code) == ("FAILED", 130), info  # as Ray sees it
    _assert_reads_cancelled(spec_path, store, job_id)


def test_detach_rejects_bad_input_without_writing(tmp_path):
    store = tmp_path / "store"
    spec_path = _spec_file(tmp_path, QUICK, store)
    for args, expected in [
        ([], "--detach needs the dashboard's job API address"),
        (["--address", "127.0.0.1:6379"], "--detach needs the dashboard's job API address"),
        (["--address", "http://127.0.0.1:1"], "cannot reach 127.0.0.1:1"),
    ]:
        result = _invoke("submit", spec_path, "--detach", *args)
        assert result.exit_code == 2 and expected in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    relative = _spec_file(tmp_path, {**QUICK, "dataset": {**QUICK["dataset"], "root": "data"}}, store)
    result = _invoke("submit", relative, "--detach", "--address", "http://127.0.0.1:1")
    assert result.exit_code == 2 and "dataset.root" in result.stderr
    assert not store.exists()
    for verb in ("cancel", "logs"):
        result = _invoke(verb, spec_path)
        assert result.exit_code == 2 and "no detached job recorded for sweep jobquick" in result.stderr


# --- stage logs (no Ray) ------------------------------------------------------------------------------

def _write_logs(store: Path, sweep: str, names: dict[str, str]) -> None:
    directory = store / "logs" / f"sweep={sweep}"
    directory.mkdir(parents=True)
    for name, text in names.items():
        (directory / name).write_text(text)


def test_stage_log_lookup_by_prefix_and_attempt(tmp_path):
    store = tmp_path / "store"
    _write_logs(store, "s", {"abc111-1.log": "first\n", "abc111-2.log": "second\n", "abd222-1.log": "other\n",
                             ".abc111-3.log.x.tmp": "in progress", "notes.txt": "not a log"})
    latest = stage_logs.find(str(store), "s", "abc")
    assert (latest.stage_key, latest.attempt, latest.text) == ("abc111", 2, "second\n")
    assert stage_logs.find(str(store), "s", "abc1", attempt=1).text == "first\n"
    for prefix, attempt, expected in [("ab", None, "matches 2 stages (abc111, abd222)"),
                                      ("zz", None, "no stage log of sweep s starts with it"),
                                      ("abc", 3, "--attempt 3: stage abc111 has logs of attempt(s) 1, 2"),
                                      ("", None, "give the start of a stage key")]:
        with pytest.raises(stage_logs.LogNotFound, match=re.escape(expected)):
            stage_logs.find(str(store), "s", prefix, attempt)
    with pytest.raises(stage_logs.LogNotFound, match="no stage log"):
        stage_logs.find(str(store), "other-sweep", "abc")


def test_logs_stage_cli(tmp_path):
    store = tmp_path / "store"
    spec_path = _spec_file(tmp_path, QUICK, store)
    plan = build_plan(parse_spec(QUICK))
    init = next(k for k, s in plan.stages.items() if s.kind == "init")
    _write_logs(store, "jobquick", {f"{init}-1.log": "Traceback: boom\n"})
    ok = _invoke("logs", spec_path, "--stage", init[:8])
    assert ok.exit_code == 0 and ok.stdout == "Traceback: boom\n" and "attempt 1" in ok.stderr
    dense = next(k for k, s in plan.stages.items() if s.kind == "dense")
    for args, expected in [(["--stage", dense[:12]], "has no log: it has not run yet"),
                           (["--stage", "zzzz"], "no stage log of sweep jobquick"),
                           (["--stage", init[:8], "--attempt", "2"], "has logs of attempt(s) 1"),
                           (["--attempt", "1"], "--attempt: only with --stage")]:
        result = _invoke("logs", spec_path, *args)
        assert result.exit_code == 2 and expected in result.stderr, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1


PLUGIN = ("import torch\nfrom workers.plugins import register_criterion\n\n\n"
          "@register_criterion(description='θ²')\ndef square(s):\n    return {n: w ** 2 for n, w in s.weights.items()}\n")


@pytest.mark.slow
def test_a_detached_job_ships_the_plugin_code_beside_its_spec(head, tmp_path):
    url, _ = head
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "square.py").write_text(PLUGIN)
    spec = {**QUICK, "name": "jobplug", "code": ["plug/square.py"], "plugins": ["square"], "seeds": [0],
            "methods": [{"kind": "oneshot", "criterion": "square"}]}
    spec_path = _spec_file(tmp_path, spec, tmp_path / "store")
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(yaml.safe_dump({**spec, "code": [str(tmp_path / "plug" / "square.py")],
                                       "store": str(tmp_path / "store2")}))
    (tmp_path / "sub").mkdir()
    moved = tmp_path / "sub" / "spec.yaml"
    moved.write_text(outside.read_text())
    refused = _invoke("submit", str(moved), "--address", url, "--detach")
    assert refused.exit_code == 2 and "is outside the spec's folder" in refused.stderr, refused.output
    assert len(refused.stderr.strip().splitlines()) == 1

    submitted = _invoke("submit", spec_path, "--address", url, "--detach")
    assert submitted.exit_code == 0, submitted.output
    followed = _invoke("logs", spec_path)
    assert followed.stderr.strip().endswith("SUCCEEDED"), followed.output
    points = pd.read_parquet(tmp_path / "store" / "points")
    assert set(points["status"]) == {"ok"} and "square" in set(points["method"].astype(str))
    # The job planned the same keys as this machine does: the plugin's identity does not depend on where it lies.
    assert ResultsStore(str(tmp_path / "store")).done_keys("jobplug") == set(build_plan(load_spec(spec_path)).stages)
