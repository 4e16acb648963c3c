import os
import tempfile

import pytest
import torch

# Tiny models on a 2-core machine: one thread avoids oversubscription (Ray's trial actors
# use the other core), which otherwise slows these tests down many times over.
torch.set_num_threads(1)

# Tests never touch a user's cache or data: everything goes to a per-session temp dir.
os.environ.setdefault("TICKETSWEEP_CACHE", os.path.join(tempfile.gettempdir(), "ticketsweep-test-cache"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray (2 CPUs) for the whole session: starting Ray costs ~5 s and ~700 MB."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
