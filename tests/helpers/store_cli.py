"""Running the real CLI in subprocesses against a store, for the fault-injection tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ORCHESTRATE = [sys.executable, "-m", "orchestrator.cli"]


def env_without_ray_address(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra)
    return env


SPEC = {
    "name": "heal",
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 2, "batch_size": 32, "lr": 0.05, "rewind": "1it"},
    "methods": [{"kind": "oneshot", "criterion": "random"}, {"kind": "ltr"}],
    "sparsities": [0.5, 0.8],
    "seeds": [0],
    # One trial actor: each is a process of its own (importing torch), which costs these tiny stages more than
    # running two at once gains them.
    "resources": {"max_retries": 1, "max_concurrent": 1},
}
WIDER = {**SPEC, "sparsities": [0.5, 0.8, 0.9]}  # adds stages that read the seed's warm-up weights


def orchestrate(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(ORCHESTRATE + list(args), env=env or env_without_ray_address(), capture_output=True,
                          text=True, timeout=timeout)


def write_spec(folder: Path, spec: dict) -> str:
    path = folder / f"{spec['name']}-{len(spec['sparsities'])}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def submit(folder: Path, store: Path, spec: dict = SPEC, address: str | None = None) -> subprocess.CompletedProcess:
    """`submit` in a subprocess: on a private cluster of its own, or joining the cluster at `address` (the
    session's, conftest `ray_address`, which saves a cluster start where that start is not what is tested)."""
    joining = ("--address", address) if address else ()
    return orchestrate("submit", write_spec(folder, spec), "--store", str(store), "--no-dashboard", "--no-progress",
                       *joining)


def status(folder: Path, store: Path, spec: dict = SPEC) -> subprocess.CompletedProcess:
    out = orchestrate("status", write_spec(folder, spec), "--store", str(store))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return out


def status_in_process(folder: Path, store: Path, spec: dict = SPEC):
    """`status` through the same CLI in this process: for a loop that looks at many stores, where a process
    start each time (imports) would cost more than the look. What is looked at was written by other processes."""
    from click.testing import CliRunner

    from orchestrator.cli import main

    out = CliRunner().invoke(main, ["status", write_spec(folder, spec), "--store", str(store)])
    assert out.exit_code == 0 and out.exception is None, out.output[-3000:]
    return out


def points_frame(store: Path) -> pd.DataFrame:
    """The README's raw pandas read, in a canonical order."""
    frame = pd.read_parquet(store / "points")
    frame = frame.assign(method=frame["method"].astype(str), sweep=frame["sweep"].astype(str))
    return frame.sort_values(["stage_key", "attempt"]).reset_index(drop=True)


def finished_store(tmp_path_factory, address: str | None = None) -> Path:
    """A store holding the finished SPEC sweep, made by a real `submit` (for module fixtures; tests work on
    copies)."""
    folder = tmp_path_factory.mktemp("finished")
    out = submit(folder, folder / "store", address=address)
    assert out.returncode == 0, out.stderr[-3000:]
    return folder / "store"
