"""What the Ray dashboard and the metrics endpoint show of a real sweep, read while it runs: the sweep's own
metrics (stages finished by kind, method and status; running; epochs; ETA) from the cluster's Prometheus
endpoint, the job's tasks without the liveness pings, each trial actor's running task named by its stage,
and in headless Chromium (skipped when no browser is installed) the actors page and the page of an actor running
a stage, which names it. After the sweep, a real Prometheus scrapes the cluster and answers every query of the
shipped Grafana dashboard (skipped when no `prometheus` binary is installed).

A subprocess: the sweep needs a cluster of its own with the dashboard and metrics on, while the rest of the
session shares one local Ray without them.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "screenshots"))
import chromium  # noqa: E402 - the browser driver of docs/screenshots/make.py
import prometheus  # noqa: E402 - the Prometheus server of docs/screenshots/make.py

pytestmark = pytest.mark.slow  # a real sweep with the dashboard, metrics and a browser
needs_chromium = pytest.mark.skipif(chromium.find() is None, reason=f"no headless Chromium: none of "
                                    f"{', '.join(chromium.BINARIES)} on PATH and ${chromium.ENV} unset")

SCRIPT = textwrap.dedent('''
    import json, re, sys, threading, time, urllib.request
    sys.path.insert(0, sys.argv[2])
    from pathlib import Path
    import ray
    from orchestrator.deploy import cluster
    from orchestrator.run import driver
    from orchestrator.run.driver import run_plan
    from orchestrator.spec.plan import build_plan
    from orchestrator.run.scheduler import task_name
    from orchestrator.spec.sweep_spec import parse_spec
    from orchestrator.store.results_store import ResultsStore

    def get(url, token=None):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.read().decode()

    def series(url):
        out = []
        for line in get(url).splitlines():
            m = re.match(r'^ray_(ticketsweep_\\w+)\\{(.*)\\} (\\S+)$', line)
            if m:
                out.append([m.group(1), dict(re.findall(r'(\\w+)="([^"]*)"', m.group(2))), float(m.group(3))])
        return out

    def finished(rows):
        return sum(v for name, _, v in rows if name == "ticketsweep_stages_finished_total")

    def tasks(dashboard, token):
        data = json.loads(get(f"{dashboard}/api/v0/tasks?detail=1&limit=10000", token))
        return [{k: t.get(k) for k in ("task_id", "name", "state", "func_or_class_name", "actor_id")}
                for t in data["data"]["result"]["result"]]

    dashboard, _ = cluster.connect(None, dashboard=True, metrics=True)
    metrics = cluster.metrics_url()
    import psutil
    port = int(metrics.rsplit(":", 1)[1].split("/")[0])
    out_bind = sorted({c.laddr.ip for c in psutil.net_connections("tcp")
                       if c.status == psutil.CONN_LISTEN and c.laddr.port == port})
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    spec = parse_spec({
        "name": "watched", "model": {"name": "mlp", "options": {"hidden": [32]}},
        "dataset": {"name": "synthetic", "options": {"n_train": 256, "n_test": 64}, "validation": 0.25},
        "training": {"epochs": 2, "batch_size": 32, "rewind": "1it"},
        "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "random"}], "sparsities": [0.5, 0.8],
        "seeds": [0, 1], "resources": {"max_concurrent": 2}})
    plan = build_plan(spec)
    out = {"labels": sorted({task_name(s.label) for s in plan.stages.values()}), "total": len(plan.stages),
           "metrics_url": metrics, "metrics_bind": out_bind}

    # Mid-run: the `random` stages wait at their first epoch (beating, so not hung) until the watcher has read
    # the metrics Ray exported by then, the tasks the dashboard lists and the actors page.
    gate = Path(sys.argv[1] + ".gate")

    class Gated(driver.TrialActorBody):
        def _on_epoch(self, row):
            super()._on_epoch(row)
            from workers import liveness
            deadline = time.monotonic() + 300
            while "random" in self._label and not gate.exists() and time.monotonic() < deadline:
                liveness.beat()
                time.sleep(0.2)

        def run(self, payload, roles, *parents):
            self._label = payload["label"]
            return super().run(payload, roles, *parents)

    driver.TrialActor = ray.remote(Gated)

    def watch():
        held = []
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                rows = series(metrics)
                running = sum(v for n, t, v in rows if n == "ticketsweep_stages_running" and t["method"] == "random")
                if finished(rows) >= 3 and running >= 1:
                    break
                time.sleep(0.5)
            out["mid"] = rows
            while time.monotonic() < deadline:
                out["mid_tasks"] = tasks(dashboard, token)
                held = [t for t in out["mid_tasks"] if t["state"] == "RUNNING"
                        and t["func_or_class_name"] == "Gated.run" and t["name"].startswith("random sp=")]
                if held:
                    break
                time.sleep(0.5)
            if held:  # what the actor page's Logs view shows: the actor's stdout, through the node's agent
                out["held_task"] = held[0]
                try:
                    out["held_log"] = get(f"{dashboard}/api/v0/logs/file?actor_id={held[0]['actor_id']}"
                                          f"&suffix=out&lines=1000", token)
                except Exception as err:
                    out["held_log_error"] = f"{type(err).__name__}: {err} {getattr(err, 'read', bytes)()[:300]!r}"
            import chromium
            browser = chromium.find()
            if browser:
                with chromium.Chromium(browser) as page:
                    page.log_in(dashboard, token)
                    page.open(f"{dashboard}/#/actors")
                    out["actors_page"] = page.wait_for("Gated", "ALIVE", timeout_s=120)
                    if not held:
                        return
                    # The page of the actor that runs a held stage: its task history (collapsed at first),
                    # filtered to the running tasks as a user does, names the stage.
                    out["held"] = held = held[0]
                    page.open(f"{dashboard}/#/actors/{held['actor_id']}")
                    page.wait_for(held["actor_id"], "Tasks History", timeout_s=120)
                    page.click("Tasks History")
                    page.choose("State", "RUNNING")
                    until = time.monotonic() + 120
                    while True:
                        header = page.rows("Function or class name")
                        shown = [dict(zip(header[0], row)) for row in page.rows(held["actor_id"])] if header else []
                        if shown and all(t["State"] == "RUNNING" for t in shown) or time.monotonic() > until:
                            break
                        time.sleep(0.5)
                    out["actor_running_tasks"] = shown
        except Exception as err:
            out["watch_error"] = f"{type(err).__name__}: {err}"
            raise
        finally:
            gate.touch()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    summary = run_plan(plan, spec, ResultsStore(sys.argv[1]), progress=False, echo=lambda *_: None)
    out.update(ran=summary.ran, failed=summary.failed)
    deadline = time.monotonic() + 180
    while finished(series(metrics)) < summary.ran and time.monotonic() < deadline:
        time.sleep(0.5)
    out["end"] = series(metrics)
    time.sleep(3)  # task events reach the state API every second
    out["end_tasks"] = tasks(dashboard, token)
    watcher.join()

    # A real Prometheus (when installed), started as docs/watching.md says with Ray's scrape configuration for
    # this session, asked every query of the shipped Grafana dashboard once it has scraped the sweep's end.
    if sys.argv[3]:
        import prometheus
        from orchestrator.run.sweep_metrics import grafana_dashboard
        try:  # a failure here fails that test alone, with the reason
            config = prometheus.ray_session_config(ray._private.worker._global_node.get_session_dir_path())
            with prometheus.Prometheus(sys.argv[3], config, sys.argv[1] + ".prometheus") as server:
                out["prometheus_bind"] = sorted({c.laddr.ip for c in psutil.net_connections("tcp")
                                                 if c.status == psutil.CONN_LISTEN and c.pid == server.process.pid})
                out["scraped"] = server.wait_for_scrape(metrics, 300)["scrapeUrl"]
                out["sweep_values"] = server.api("label/sweep/values", **{"match[]": "ray_ticketsweep_stages_left"})
                out["dashboard_queries"] = [
                    [title, expr, server.query(prometheus.substitute(expr, {"sweep": "watched"}))]
                    for title, expr in prometheus.dashboard_queries(grafana_dashboard())]
                # The selector's "All": its custom value, put in verbatim.
                every = next(v["allValue"] for v in grafana_dashboard()["templating"]["list"] if v["name"] == "sweep")
                out["dashboard_queries_all"] = [
                    [title, expr, server.query(prometheus.substitute(expr, {"sweep": every}, escape=False))]
                    for title, expr in prometheus.dashboard_queries(grafana_dashboard())]
        except Exception as err:
            out["prometheus_error"] = f"{type(err).__name__}: {err}"
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def watched(ray_cluster, tmp_path_factory):
    # The session's cluster runs beside the sweep's: a neighbour that would hold Ray's fixed dashboard-agent
    # port, had our clusters not let the system choose it (test_the_running_stage_is_named_in_its_actors_log).
    store = tmp_path_factory.mktemp("dashboard") / "store"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(store), str(ROOT / "docs" / "screenshots"),
                          prometheus.find() or ""],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _values(rows, name, **tags):
    return [v for n, t, v in rows if n == name and all(t.get(k) == w for k, w in tags.items())]


def test_the_sweeps_metrics_are_exported_while_it_runs(watched):
    mid, end = watched["mid"], watched["end"]
    assert watched["failed"] == 0 and watched["ran"] == watched["total"]
    # Read mid-run: some stages finished, not all; by kind and method; a random-pruning stage running.
    assert 3 <= sum(_values(mid, "ticketsweep_stages_finished_total")) < watched["total"]
    assert sum(_values(mid, "ticketsweep_stages_running", kind="oneshot", method="random")) >= 1
    assert _values(mid, "ticketsweep_stages_left", sweep="watched")
    assert sum(_values(end, "ticketsweep_stages_finished_total", status="ok")) == watched["ran"]
    # 2 seeds x (1 dense + LTR's levels) and 2 seeds x 2 sparsities of random pruning.
    assert sum(_values(end, "ticketsweep_stages_finished_total", kind="oneshot", method="random")) == 4
    assert sum(_values(end, "ticketsweep_stages_finished_total", method="ltr")) >= 2
    assert _values(end, "ticketsweep_stages_left", sweep="watched") == [0.0]
    assert sum(_values(end, "ticketsweep_stages_running")) == 0
    assert _values(end, "ticketsweep_epochs_done", sweep="watched")[0] > 0
    assert _values(end, "ticketsweep_epochs_per_second", sweep="watched")[0] > 0
    assert _values(end, "ticketsweep_eta_seconds", sweep="watched") == [0.0]


def test_the_metrics_endpoint_listens_on_loopback_only(watched):
    assert watched["metrics_url"].startswith("http://127.0.0.1:")
    assert watched["metrics_bind"] == ["127.0.0.1"]


def test_the_grafana_dashboard_reads_only_metrics_the_sweep_records():
    import re

    from orchestrator.run.sweep_metrics import grafana_dashboard

    dashboard = grafana_dashboard()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub("_total$", "", m) for e in exprs for m in re.findall(r"ray_(ticketsweep_\w+)", e)}
    recorded = set(re.findall(r'"(ticketsweep_\w+)"', (ROOT / "orchestrator" / "run" / "sweep_metrics.py").read_text()))
    assert used and used <= recorded
    assert recorded <= used | {m for v in dashboard["templating"]["list"]
                               for m in re.findall(r"ray_(ticketsweep_\w+)", json.dumps(v))}
    assert all('sweep=~"$sweep"' in e for e in exprs)


def test_the_jobs_tasks_are_its_stages_not_liveness_pings(watched):
    tasks = watched["end_tasks"]
    assert not [t for t in tasks if "heartbeat" in (t["func_or_class_name"] or "")]
    runs = [t for t in tasks if t["func_or_class_name"] == "Gated.run"]
    assert len(runs) == watched["ran"]
    assert {t["name"] for t in runs} <= set(watched["labels"])


def test_a_running_trial_actor_is_listed_with_the_stage_it_runs(watched):
    running = [t for t in watched["mid_tasks"] if t["state"] == "RUNNING"
               and t["func_or_class_name"] == "Gated.run"]
    assert running and all(t["actor_id"] and t["name"] in watched["labels"] for t in running)
    assert any(t["name"].startswith("random sp=") for t in running)  # held at its first epoch


def test_the_running_stage_is_named_in_its_actors_log_which_the_dashboard_serves(watched):
    """The actor page's Logs view: the dashboard reads an actor's log through its node's agent. With another
    Ray on the machine holding the agent's fixed port (here: the session's cluster, or any neighbour), Ray 2.60
    left the agent without its HTTP server and every log view failed."""
    assert "held_log_error" not in watched, watched["held_log_error"]
    method, sparsity = watched["held_task"]["name"].split()  # e.g. "random", "sp=0.5000"
    lines = watched["held_log"].splitlines()
    current = max(i for i, line in enumerate(lines) if line.startswith("stage "))
    assert re.match(rf"stage {method} s=\d+ {re.escape(sparsity)} \(oneshot, key ", lines[current]), lines[current]
    assert any(line.startswith("train epoch 1 ") for line in lines[current:]), lines[current:]


@needs_chromium
def test_the_actors_page_lists_the_trial_actors_in_headless_chromium(watched):
    page = watched["actors_page"]
    assert "Gated" in page and "ALIVE" in page and "trial-" in page


@needs_chromium
def test_a_trial_actors_own_page_names_the_stage_it_runs_in_headless_chromium(watched):
    # The actors list cannot (docs/watching.md says why); the actor's page, opened from it, can: its Tasks
    # History, filtered to running tasks, is the one task of the stage the actor runs now, named by its label.
    assert "actor_running_tasks" in watched, watched.get("watch_error", "no `random` stage was seen running")
    held = watched["held"]  # a `random sp=` stage, held at its first epoch while the page was read
    assert held["name"].startswith("random sp=") and held["state"] == "RUNNING"
    shown = [(t["ID"], t["Name"], t["State"], t["Function or class name"], t["Actor ID"])
             for t in watched["actor_running_tasks"]]
    assert shown == [(held["task_id"], held["name"], "RUNNING", "Gated.run", held["actor_id"])]


@pytest.mark.skipif(prometheus.find() is None, reason="no `prometheus` binary on PATH (apt-get install prometheus)")
def test_every_grafana_dashboard_query_answers_for_the_sweep_in_a_real_prometheus(watched):
    # Prometheus listened on loopback only and scraped the exporter `submit` names, through Ray's own scrape
    # configuration (its service-discovery file), as docs/watching.md tells users to run it.
    assert "prometheus_error" not in watched, watched["prometheus_error"]
    assert watched["prometheus_bind"] == ["127.0.0.1"]
    assert watched["scraped"] == watched["metrics_url"]
    assert "watched" in watched["sweep_values"]  # the dashboard's `sweep` variable offers the sweep
    queries = watched["dashboard_queries"]
    assert len(queries) >= 9  # every target of every panel
    empty = [(title, expr) for title, expr, result in queries if not result]
    assert not empty, f"dashboard queries that return no data for the sweep: {empty}"
    empty = [(title, expr) for title, expr, result in watched["dashboard_queries_all"] if not result]
    assert not empty, f"dashboard queries that return no data with every sweep selected: {empty}"
    for title, expr, result in queries:
        assert all(float(r["value"][1]) >= 0 for r in result), (title, expr, result)
    by_expr = {expr: result for _, expr, result in queries}
    finished = by_expr['sum by (kind, method, status) (ray_ticketsweep_stages_finished_total{sweep=~"$sweep"})']
    assert sum(float(r["value"][1]) for r in finished if r["metric"]["status"] == "ok") == watched["ran"]
    assert {(r["metric"]["kind"], r["metric"]["method"]) for r in finished} >= {("oneshot", "random")}
    assert float(by_expr['sum(ray_ticketsweep_stages_left{sweep=~"$sweep"})'][0]["value"][1]) == 0
