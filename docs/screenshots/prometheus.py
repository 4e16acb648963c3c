"""A real Prometheus server on loopback, scraping a Ray cluster: started from a scrape configuration (Ray's own
for the session, docs/watching.md § Metrics), on a free port of 127.0.0.1 with its data in a folder of the
caller's, ended by its PID. And the shipped Grafana dashboard's PromQL, with its variables substituted as
Grafana substitutes them, so that each panel's query can be sent to Prometheus' HTTP API.

Used by docs/screenshots/make.py and by the dashboard test; neither needs it when no `prometheus` binary is
installed (`find()` says None and they say what they skipped).
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

BINARY = "prometheus"
LOOPBACK = "127.0.0.1"


def find() -> str | None:
    return shutil.which(BINARY)


def ray_session_config(session_dir: str | Path) -> Path:
    """The scrape configuration Ray writes for a session whose dashboard runs (it lists the nodes' exporters
    through the service-discovery file beside it)."""
    return Path(session_dir) / "metrics" / "prometheus" / "prometheus.yml"


def static_config(path: str | Path, metrics_url: str, interval_s: float) -> Path:
    """A scrape configuration of one target, the exporter URL `submit --metrics` prints (JSON is YAML)."""
    url = urllib.parse.urlsplit(metrics_url)
    config = {"scrape_configs": [{"job_name": "ray", "scrape_interval": f"{interval_s:g}s",
                                  "metrics_path": url.path or "/metrics",
                                  "static_configs": [{"targets": [url.netloc]}]}]}
    Path(path).write_text(json.dumps(config, indent=1))
    return Path(path)


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    """`prometheus --config.file CONFIG` listening on 127.0.0.1 only. Use as a context manager."""

    def __init__(self, binary: str, config: str | Path, data_dir: str | Path, start_timeout_s: float = 120.0):
        self.binary, self.config, self.data_dir = binary, Path(config), Path(data_dir)
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> "Prometheus":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between our probe and Prometheus' bind: then it exits at once; try another.
        for _ in range(3):
            port = _free_port()
            self.url = f"http://{LOOPBACK}:{port}"
            log = open(self.data_dir / "prometheus.log", "ab")
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                 f"--web.listen-address={LOOPBACK}:{port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(self.data_dir))
            log.close()
            if self._wait_ready():
                return self
        self._end()
        raise PrometheusError(f"prometheus did not start; its log: {self.data_dir / 'prometheus.log'}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        self._end()
        return False

    def __exit__(self, *exc) -> None:
        self._end()

    def _end(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # by PID: only the server this object started
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
            answer = json.loads(r.read().decode())
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector (`/api/v1/query`)."""
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict]:
        """A range query's result matrix (`/api/v1/query_range`): what was scraped, also after the target went
        away (an instant query then answers nothing: Prometheus marks the target's series stale)."""
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step_s:g}")["result"]

    def wait_for_scrape(self, url: str, timeout_s: float) -> dict:
        """The active target that scrapes `url` once a scrape of it has succeeded."""
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            seen = self.api("targets", state="active")["activeTargets"]
            for target in seen:
                if target.get("scrapeUrl") == url and target.get("health") == "up":
                    return target
            time.sleep(0.5)
        raise PrometheusError(f"no successful scrape of {url} in {timeout_s:.0f} s; targets: "
                              f"{[(t.get('scrapeUrl'), t.get('health'), t.get('lastError')) for t in seen]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """Every (panel title, PromQL) of a Grafana dashboard, rows' nested panels included."""
    out = []
    for panel in dashboard.get("panels", []):
        out += [(panel.get("title", ""), t["expr"]) for t in panel.get("targets", []) if t.get("expr")]
        out += dashboard_queries(panel)
    return out


def substitute(expr: str, values: dict[str, str], escape: bool = True) -> str:
    """`expr` with Grafana's `$name` / `${name}` variables replaced by one selected value each, escaped for a
    regex matcher as Grafana's Prometheus data source escapes a multi-value variable's single selection
    (`escape=False`: as Grafana puts a variable's custom "All" value, verbatim). A variable the dashboard does
    not define is an error, not an empty match."""
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"the query {expr!r} uses ${name}, which is not one of {sorted(values)}")
        if not escape:
            return values[name]
        value = values[name].replace("\\", "\\\\\\\\")  # a regex backslash, in a PromQL string
        return re.sub(r"([\^$*+?.()|{}\[\]'])", r"\\\\\1", value)
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def graph_url(prometheus_url: str, exprs: list[str], range_s: int) -> str:
    """Prometheus' own graph page (its web UI) with one graph panel per expression. `/graph` redirects to the
    page the build serves (Debian's, without the React UI, to `/classic/graph`), and the redirect drops the
    query: ask where it leads first."""
    with urllib.request.urlopen(f"{prometheus_url}/graph", timeout=30) as r:
        page = urllib.parse.urlsplit(r.url).path
    params = {}
    for i, expr in enumerate(exprs):
        params.update({f"g{i}.expr": expr, f"g{i}.tab": "0", f"g{i}.range_input": f"{range_s}s",
                       f"g{i}.stacked": "0", f"g{i}.show_exemplars": "0"})
    return f"{prometheus_url}{page}?{urllib.parse.urlencode(params)}"
