"""Screenshots of a sweep being watched: a trimmed quickstart run by `orchestrate submit --metrics` on a
pseudo-terminal, and, while it runs, the Ray dashboard's actors and jobs pages and a trial actor's own page
(headless Chromium, logged in with the token in ~/.ray/auth_token), the sweep's metrics as the cluster's
Prometheus endpoint serves them, Prometheus' own graph page of stages done and the ETA (when a `prometheus`
binary is installed: one started on loopback, scraping that endpoint), and the terminal (as text, and drawn to
PNG with matplotlib).

    python docs/screenshots/make.py [--out docs/screenshots]

Captures that cannot be taken here (no browser or Prometheus installed; Grafana never) are skipped with the
reason printed; the others are still taken. Nothing outside a temporary folder and --out is written.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import chromium  # noqa: E402 - beside this script
import prometheus  # noqa: E402 - beside this script

COLUMNS, ROWS = 110, 12
# The quickstart's own 40 epochs: with fewer, an idle machine finishes each stage within a second, before the
# terminal, the dashboard or Prometheus can show it running.
TRIMMED = {"seeds": [0], "sparsities": [0.8, 0.95]}
METRIC = re.compile(r"^ray_(ticketsweep_\w+)\{(.*)\} (\S+)$")
PROMETHEUS_SCRAPE_S = 5  # Ray's exporter can take seconds to answer on a busy machine (the scrape's timeout)
# The sweep's main series as Prometheus' graph page draws them: stages done, and the ETA.
PROMETHEUS_GRAPHS = ('sum(ray_ticketsweep_stages_finished_total{sweep="%s"})',
                     'max(ray_ticketsweep_eta_seconds{sweep="%s"})')


def trimmed_quickstart() -> dict:
    spec = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text())
    spec["seeds"], spec["sparsities"] = TRIMMED["seeds"], TRIMMED["sparsities"]
    spec["name"] = "quickstart-screenshots"
    return spec


class Screen:
    """Just enough of a terminal for a progress display: text, CR, LF, cursor up/down, erase line/below."""

    CSI = re.compile(rb"\x1b\[(\d*)([A-Za-z])")

    def __init__(self, columns: int, rows: int):
        self.columns, self.rows = columns, rows
        self.lines: list[list[str]] = [[]]
        self.row = self.col = 0

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            m = self.CSI.match(data, pos)
            if m:
                n = int(m.group(1) or 1)
                code = m.group(2)
                if code == b"A":
                    self.row = max(0, self.row - n)
                elif code == b"B":
                    self._to(self.row + n)
                elif code == b"K":
                    self.lines[self.row] = self.lines[self.row][:self.col]
                elif code == b"J":
                    self.lines[self.row] = self.lines[self.row][:self.col]
                    del self.lines[self.row + 1:]
                pos = m.end()
                continue
            char = data[pos:pos + 1]
            if char == b"\x1b":  # another escape (a colour, a mode): skip its final byte
                m2 = re.compile(rb"\x1b[\[\]?]?[0-9;?]*[A-Za-z]").match(data, pos)
                pos = m2.end() if m2 else pos + 1
                continue
            width = _utf8_len(data[pos])
            text = data[pos:pos + width].decode("utf-8", "replace")
            pos += width
            if text == "\r":
                self.col = 0
            elif text == "\t":
                self.col = (self.col // 8 + 1) * 8
            elif text == "\n":
                self._to(self.row + 1)
                self.col = 0
            elif text >= " ":
                line = self.lines[self.row]
                line.extend(" " * (self.col - len(line)))
                if self.col < len(line):
                    line[self.col] = text
                else:
                    line.append(text)
                self.col += 1

    def _to(self, row: int) -> None:
        while len(self.lines) <= row:
            self.lines.append([])
        self.row = row

    def text(self) -> str:
        """The last `rows` lines as the terminal shows them: a line longer than the width wraps."""
        shown = []
        for line in self.lines:
            text = "".join(line).rstrip()
            shown += [text[i:i + self.columns] for i in range(0, len(text), self.columns)] or [""]
        return "\n".join(shown[-self.rows:]).rstrip() + "\n"


def _utf8_len(first: int) -> int:
    return 1 if first < 0x80 else 2 if first >> 5 == 0b110 else 3 if first >> 4 == 0b1110 else 4


def text_png(text: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = text.rstrip("\n").splitlines() or [""]
    width = max(60, max(len(line) for line in lines))
    fig = plt.figure(figsize=(width * 0.085 + 0.4, len(lines) * 0.2 + 0.7), dpi=110)
    fig.patch.set_facecolor("#1e1e1e")
    fig.text(0.01, 0.98, title, color="#9cdcfe", family="monospace", size=9, va="top")
    fig.text(0.01, 0.98 - 0.3 / (len(lines) * 0.2 + 0.7), "\n".join(lines), color="#e6e6e6",
             family="monospace", size=9, va="top", linespacing=1.35)
    fig.savefig(path, facecolor=fig.get_facecolor())
    plt.close(fig)


def metrics_table(text: str) -> str:
    """The sweep's own series from a Prometheus page, one line each: name, its kind/method/status tags, value."""
    rows = []
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        tags = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        which = " ".join(f"{k}={tags[k]}" for k in ("kind", "method", "status") if k in tags)
        rows.append(f"{m.group(1):34s} {which:45s} {float(m.group(3)):10.2f}")
    return "\n".join(sorted(rows)) + "\n"


def _get(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.read().decode()


def running_trial_actors(dashboard: str, token: str) -> list[dict]:
    """The state API the actors page reads: the sweep's trial actors that are alive."""
    data = json.loads(_get(f"{dashboard}/api/v0/actors?detail=1&limit=1000", token))
    return [a for a in data["data"]["result"]["result"]
            if a.get("class_name") == "TrialActorBody" and a.get("state") == "ALIVE"]


def running_stage_tasks(dashboard: str, token: str) -> list[dict]:
    """The trial actors' running tasks (each named by its stage), as the actors' pages list them."""
    data = json.loads(_get(f"{dashboard}/api/v0/tasks?detail=1&limit=10000", token))
    return [t for t in data["data"]["result"]["result"] if t.get("state") == "RUNNING" and t.get("actor_id")
            and t.get("func_or_class_name") == "TrialActorBody.run"]


class Submit:
    """`orchestrate submit --metrics SPEC` on a pseudo-terminal of COLUMNS x ROWS, its output kept."""

    def __init__(self, spec_path: Path, columns: int = COLUMNS, rows: int = ROWS):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "COLUMNS": str(columns), "LINES": str(rows)}
        self.process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "submit", str(spec_path),
                                         "--metrics"], stdin=slave, stdout=slave, stderr=slave, env=env,
                                        cwd=str(spec_path.parent), start_new_session=True)
        os.close(slave)
        self.master, self.raw = master, bytearray()
        self.screen = Screen(columns, rows)
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.raw.extend(data)
                self.screen.feed(data)

    def output(self) -> str:
        with self.lock:
            return self.raw.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output())
            if m:
                return m
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"submit never printed {pattern!r}; it printed:\n{self.output()[-3000:]}")

    def wait_for_screen(self, pattern: str, timeout_s: float) -> str:
        """The terminal's screen once it shows `pattern` (a line drawn now, not one drawn over since)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            with self.lock:
                screen = self.screen.text()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.1)
        raise RuntimeError(f"the terminal never showed {pattern!r}; it shows:\n{self.screen.text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # finished stages stay stored; Ray shuts down
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        os.close(self.master)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE), help="where the captures go (default: beside this script)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each step")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    taken, skipped = [], []
    browser = chromium.find()
    if browser is None:
        skipped.append(("actors.png, jobs.png, actor.png",
                        f"no Chromium: none of {', '.join(chromium.BINARIES)} on PATH and ${chromium.ENV} unset "
                        f"(apt-get install chromium)"))
    server = prometheus.find()
    if server is None:
        skipped.append(("prometheus.png", f"no `{prometheus.BINARY}` on PATH (apt-get install prometheus); "
                                          "metrics.png shows the same series as the endpoint serves them"))
    elif browser is None:
        skipped.append(("prometheus.png", "no Chromium to draw Prometheus' graph page"))
    skipped.append(("grafana.png", "no Grafana here: prometheus.png shows the sweep's main series in Prometheus' "
                                   "own graph page (docs/watching.md sets Grafana up)"))
    token = (Path.home() / ".ray" / "auth_token").read_text().strip() \
        if (Path.home() / ".ray" / "auth_token").exists() else None
    with tempfile.TemporaryDirectory(prefix="ts-screens-") as tmp:
        spec_path = Path(tmp) / "quickstart.yaml"
        spec_path.write_text(yaml.safe_dump({**trimmed_quickstart(), "store": str(Path(tmp) / "store")}))
        submit = Submit(spec_path)
        stack, scraper = contextlib.ExitStack(), None
        try:
            dashboard = submit.wait_for(r"Ray dashboard: (http://\S+)", args.timeout).group(1)
            metrics_url = submit.wait_for(r"Ray metrics \(Prometheus\): (http://\S+)", args.timeout).group(1)
            token = token or (Path.home() / ".ray" / "auth_token").read_text().strip()
            if server is not None and browser is not None:
                # From the start, so that its graph holds the sweep's history by the time it is drawn.
                config = prometheus.static_config(Path(tmp) / "prometheus.yml", metrics_url, PROMETHEUS_SCRAPE_S)
                scraper = stack.enter_context(prometheus.Prometheus(server, config, Path(tmp) / "prometheus"))
                started = time.monotonic()
            # Well into the sweep, the terminal as it is while stages train, named with their epoch.
            screen = submit.wait_for_screen(r"running: .*ltr s=0 L=[2-9] epoch [2-9]", args.timeout)
            (out / "terminal.txt").write_text(screen)
            text_png(screen, out / "terminal.png", "$ orchestrate submit quickstart.yaml --metrics")
            taken += ["terminal.txt", "terminal.png"]
            if browser is not None:
                taken += capture_dashboard(browser, dashboard, token, out, args.timeout)
            text = wait_for_metrics(metrics_url, args.timeout)
            (out / "metrics.txt").write_text(text)
            text_png(text, out / "metrics.png", f"the sweep's metrics at {metrics_url} (ray_ prefix dropped)")
            taken += ["metrics.txt", "metrics.png"]
            if scraper is not None:
                # The graphs of the whole sweep: Prometheus keeps what it scraped after the exporter is gone.
                try:
                    submit.process.wait(args.timeout)
                except subprocess.TimeoutExpired:
                    pass  # drawn as far as the sweep got
                capture_prometheus(browser, scraper, out / "prometheus.png", time.monotonic() - started,
                                   args.timeout)
                taken.append("prometheus.png")
        finally:
            stack.close()  # Prometheus first, while the exporter it scrapes is still up
            submit.stop()
    for name in taken:
        print(f"captured {out / name}")
    for names, why in skipped:
        print(f"skipped {names}: {why}")
    return 0


def wait_for_metrics(url: str, timeout_s: float) -> str:
    """The sweep's series once Ray has exported some finished stages and a running one (every few seconds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        table = metrics_table(_get(url))
        if "stages_finished" in table and re.search(r"stages_running .* [1-9]", table):
            return table
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never showed the sweep's stages; it shows:\n{table}")
        time.sleep(1)


def capture_prometheus(browser: str, server: "prometheus.Prometheus", path: Path, elapsed_s: float,
                       timeout_s: float) -> None:
    """Prometheus' own graph page (its web UI on loopback) of stages done and the ETA over `elapsed_s`."""
    exprs = [graph % trimmed_quickstart()["name"] for graph in PROMETHEUS_GRAPHS]
    deadline, end = time.monotonic() + timeout_s, time.time()
    while not all(server.query_range(expr, end - elapsed_s, end, PROMETHEUS_SCRAPE_S) for expr in exprs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus at {server.url} never answered {exprs}")
        time.sleep(1)
    with chromium.Chromium(browser, height=1400) as page:  # both graphs
        page.open(prometheus.graph_url(server.url, exprs, max(60, int(elapsed_s) + 10)))
        # Each graph panel shows its "Load time" once its range query has answered and the graph is drawn.
        deadline = time.monotonic() + timeout_s
        while page.text().count("Load time") < len(exprs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus' graph page never drew {exprs}: {page.text()[:500]!r}")
            time.sleep(0.5)
        time.sleep(1)
        page.screenshot(path)


def capture_dashboard(browser: str, dashboard: str, token: str, out: Path, timeout_s: float) -> list[str]:
    with chromium.Chromium(browser) as page:
        page.log_in(dashboard, token)
        page.open(f"{dashboard}/#/actors")
        page.wait_for("TrialActorBody", "ALIVE", timeout_s=timeout_s)
        time.sleep(2)  # the table's last columns (CPU, memory) come a fetch later
        page.screenshot(out / "actors.png")
        tasks = running_stage_tasks(dashboard, token)
        if not tasks:
            raise RuntimeError("no trial actor runs a stage now: the sweep ended before the capture")
        # The jobs page: the sweep's driver job with its tasks' progress bar, which counts stages only (the
        # liveness pings are not tasks there).
        page.open(f"{dashboard}/#/jobs")
        page.wait_for(tasks[0]["job_id"], timeout_s=timeout_s)
        time.sleep(2)
        page.screenshot(out / "jobs.png")
        # A trial actor's own page names the stage it runs (the actors list cannot: docs/watching.md says why):
        # its Tasks History, filtered to running tasks. Its Logs are folded away so that the picture shows the
        # task table.
        actor = tasks[0]["actor_id"]
        page.open(f"{dashboard}/#/actors/{actor}")
        page.wait_for(actor, "Tasks History", timeout_s=timeout_s)
        page.click("Logs", among="h4")
        page.click("Tasks History", among="h4")
        page.choose("State", "RUNNING")
        deadline = time.monotonic() + timeout_s
        while not any("RUNNING" in row for row in page.rows(actor)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the page of actor {actor} never listed a running task: {page.text()[:500]!r}")
            time.sleep(0.5)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        time.sleep(1)
        page.screenshot(out / "actor.png")
    return ["actors.png", "jobs.png", "actor.png"]


if __name__ == "__main__":
    sys.exit(main())
