"""Stage keys name stored results: a change to how a plan is built must not change them (else every store's
results would silently stop matching and run again). The literals below were computed by the planner of
a8e7d0f; a deliberate change of meaning bumps plan.CODE_VERSION and these literals with it."""
import hashlib
from pathlib import Path

import pytest

from orchestrator.spec.plan import build_plan
from orchestrator.spec.sweep_spec import load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"

# Every method kind, every sanity check, a search at init: synthetic data, two seeds.
EVERY_KIND = {
    "name": "keys", "model": {"name": "mlp", "options": {"hidden": [16]}},
    "dataset": {"name": "synthetic", "options": {"n_train": 64, "n_test": 32}},
    "training": {"epochs": 4, "rewind": "1ep", "milestones": [2]},
    "methods": [{"kind": "ltr", "sanity_checks": ["shuffle", "reinit", "invert"]},
                {"kind": "cts", "search_at": "init", "sanity_checks": ["shuffle"]},
                {"kind": "oneshot", "criterion": "snip", "sanity_checks": ["invert"]}, {"kind": "gmp"},
                {"kind": "granet"}, {"kind": "bip"}, {"kind": "lrr"}, {"kind": "finetune"}],
    "sparsities": [0.5, 0.8, 0.9], "seeds": [0, 3]}

# (stages, sha256 of the keys in plan order, sha256 of each stage's key, kind, labels, work, inputs and costs)
OLD = {
    "quickstart": (141, "8f54d47b80007656f399b7105717271aa2ba7408d48f25f9c78aaea5371813fe",
                   "2365ebc4aa55f88ad676298ac29a74c50d31160a9d47545929e929a518d85e6b"),
    "tuning": (834, "c310c96c78a952e86852941c0c2051624f76b9b24d4558818bba38fb47f47b23",
               "ee830a61228a012f9a38e4f4f938064a25fbba5d9f263ae468c92b22620256b7"),
    "mnist1d_frontier": (798, "c51f0d8c8853cdc6f52f5f3c4ff4f8db24c8794d882077ca12f3465712b99e3b",
                         "c1c026da17fafa5c5fcdd3c4a7c0ed1137d49abbbc474518c60361c61238c413"),
    "every_kind": (144, "2339affddeecd8edec02773ca1f65b754f8182f503923c0cae2c757a2fa5cdf7",
                   "d7279edd2166247ec75edd76c5c525fde277b70b64d74856b48b68d90104519e"),
}


def _digests(plan) -> tuple[int, str, str]:
    keys = hashlib.sha256("\n".join(plan.stages).encode()).hexdigest()
    rows = "\n".join(f"{k}|{s.kind}|{s.label}|{s.meta.get('method')}|{s.meta.get('requested')}|{s.meta.get('level')}|"
                     f"{s.work!r}|{sorted(s.inputs)}|{sorted(s.cost_parents)}" for k, s in plan.stages.items())
    return len(plan.stages), keys, hashlib.sha256(rows.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(OLD))
def test_stage_keys_and_stages_are_those_of_the_old_planner(name):
    spec = parse_spec(EVERY_KIND) if name == "every_kind" else load_spec(SPECS / f"{name}.yaml")
    assert _digests(build_plan(spec)) == OLD[name]


def test_the_quickstart_shared_stages_keep_their_keys():
    plan = build_plan(load_spec(SPECS / "quickstart.yaml"))
    shared = [k for k, s in plan.stages.items() if s.seed == 0 and s.kind in ("init", "warmup", "dense")]
    assert shared == ["87df09b44a6e25159d0ba950a67804c7", "0e16f7ae1580c8860d0a7eae2723e071",
                      "43f460affc9f45708e4c18ea48cb4785"]
