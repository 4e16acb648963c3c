"""Several nodes and fractional (fake) GPUs: `ray.cluster_utils.Cluster` in a subprocess, joined by address.

A subprocess, because this test needs its own multi-node cluster while the rest of the
session shares one local Ray.
"""
import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # a multi-node Ray cluster in a subprocess

SCRIPT = textwrap.dedent('''
    import json, socket, sys
    import pandas as pd
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors
    from orchestrator.deploy.cluster import WORKER_NICENESS
    from orchestrator.run.driver import run_plan
    from orchestrator.spec.plan import build_plan
    from orchestrator.spec.sweep_spec import parse_spec
    from orchestrator.store.results_store import ResultsStore

    with socket.socket() as s:  # no fixed port: another Ray on this machine may hold 8265
        s.bind(("127.0.0.1", 0))
        dashboard_port = s.getsockname()[1]
    # Workers at a private cluster's priority (Ray would nice them by 15: beside busy processes this test
    # then ran out of its time).
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_port": dashboard_port,
                                                            "_system_config": {"worker_niceness": WORKER_NICENESS}})
    cluster.add_node(num_cpus=2)                 # a CPU-only node
    cluster.add_node(num_cpus=2, num_gpus=1)     # a node with one (fake) GPU
    spec = parse_spec({
        "name": "multi", "model": {"name": "mlp", "options": {"hidden": [8]}},
        "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
        "training": {"epochs": 1, "batch_size": 32, "rewind": "1it"},
        "methods": [{"kind": "oneshot", "criterion": "random"}], "sparsities": [0.5, 0.9], "seeds": [0, 1],
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent": 2}})
    summary = run_plan(build_plan(spec), spec, ResultsStore(sys.argv[1]), address=cluster.address,
                       progress=False, echo=lambda *_: None)
    gpu_node = [n["NodeID"] for n in ray.nodes() if n["Resources"].get("GPU")][0]
    placed = {a["node_id"] for a in list_actors(filters=[("class_name", "=", "TrialActorBody")])}
    points = pd.read_parquet(sys.argv[1] + "/points")
    print(json.dumps({"ran": summary.ran, "failed": summary.failed, "placed": sorted(placed), "gpu_node": gpu_node,
                      "gpu_fraction": sorted(set(points["gpu_fraction"])), "device": sorted(set(points["device"])),
                      "status": sorted(set(points["status"]))}))
    ray.shutdown()
    cluster.shutdown()
''')


def test_fractional_gpu_trials_run_on_the_gpu_node(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store")], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == 0 and result["ran"] == 2 * (3 + 2)
    assert result["placed"] == [result["gpu_node"]]  # 0.5 GPU each: both trial actors share the GPU node
    assert result["gpu_fraction"] == [0.5]
    assert result["device"] == ["cpu"]  # fake GPU: torch sees no CUDA, the actor falls back to the CPU
    assert result["status"] == ["ok"]
