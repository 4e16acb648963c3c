"""The progress display on a real terminal: a small real sweep run on a pseudo-terminal names the stage that
runs and its epoch, and redraws it while no stage finishes."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real sweep on a pseudo-terminal

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import sys, time
    import ray
    from orchestrator.run import driver
    from orchestrator.spec.plan import build_plan
    from orchestrator.spec.sweep_spec import parse_spec
    from orchestrator.store.results_store import ResultsStore

    class Slow(driver.TrialActorBody):
        """The dense stage's epochs take a second each: long enough for the pings to see each one."""
        def _on_epoch(self, row):
            if self._label.startswith("dense"):
                time.sleep(1.5)
            super()._on_epoch(row)

        def run(self, payload, roles, *parents):
            self._label = payload["label"]
            return super().run(payload, roles, *parents)

    driver.TrialActor = ray.remote(Slow)
    spec = parse_spec({
        "name": "tty", "model": {"name": "mlp", "options": {"hidden": [8]}},
        "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
        "training": {"epochs": 4, "batch_size": 32, "rewind": "1it"},
        "methods": [{"kind": "oneshot", "criterion": "random"}], "sparsities": [0.5], "seeds": [0],
        "resources": {"max_concurrent": 1}})
    summary = driver.run_plan(build_plan(spec), spec, ResultsStore(sys.argv[1]), progress=True,
                              dashboard=False, echo=print)
    print(f"ran {summary.ran}")
''')


def test_a_sweep_on_a_terminal_shows_the_running_stage_and_its_epoch(tmp_path):
    master, slave = pty.openpty()
    # A terminal of 120 x 30 (a new pseudo-terminal has 0 columns, where tqdm draws nothing).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "store")], stdin=slave, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        out.extend(data)
    proc.wait(timeout=60)
    os.close(master)
    text = out.decode("utf-8", "replace")
    assert proc.returncode == 0, text[-3000:]
    assert "ran 4" in text
    # The dense stage trained alone for several seconds: its epochs were named one after another, each on a
    # redraw of the terminal's running line (nothing finished meanwhile).
    epochs = sorted({int(e) for e in re.findall(r"running: dense s=0 epoch (\d+)", text)})
    assert len(epochs) >= 2, text[-3000:]
    assert "\x1b[" in text or "\r" in text  # a redrawn display, not appended lines
    assert not re.search(r"^\[\d+/\d+\] ", text, re.M)  # the per-stage lines are the non-terminal format
