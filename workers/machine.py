"""The machine a stage ran on, for its rows: what its seconds were measured on, and under what load.

`describe` names the hardware and the process's settings once per stage; `load` is the 1-minute load average
(the run queue the stage shared its cores with), read at the stage's start and end.
"""
from __future__ import annotations

import os
import platform
import socket

# The columns `describe` and `load` fill, as the store names them.
COLUMNS = ("host", "cpu_model", "logical_cores", "gpu_model", "torch_threads", "load_start", "load_end")


def cpu_model() -> str | None:
    """The CPU's model name as the kernel reports it (Linux), else what Python's platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def load() -> float | None:
    """The 1-minute load average, or None where the system has none."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def describe(device: str) -> dict:
    """Host, CPU model, logical cores, the GPU's model when the stage runs on one, and torch's thread count."""
    import torch  # here, not at the top: cpu_model and load serve torch-free processes too (benchmarks/scale.py)

    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    return {"host": socket.gethostname(), "cpu_model": cpu_model(), "logical_cores": os.cpu_count(),
            "gpu_model": gpu, "torch_threads": torch.get_num_threads()}
