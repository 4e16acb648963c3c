"""The deployment files' shared checks (tests/deploy): the project's pins, the KubeRay CRD schemas made strict
the way the API server is, and the Ray container of a pod template with its mounts."""
from __future__ import annotations

import copy
import functools
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRDS_ENV = "TICKETSWEEP_KUBERAY_CRDS"
# A checkout beside a `shared/kuberay` folder (the project's own workspace) finds the CRDs without the variable.
KUBERAY_CRDS = Path(os.environ.get(CRDS_ENV) or REPO.parent / "shared" / "kuberay")
CRDS_HOWTO = (f"set {CRDS_ENV} to a directory with the KubeRay v1.7.0 CRDs (ray.io_rayclusters.yaml, "
              f"ray.io_rayjobs.yaml from kuberay's helm-chart/kuberay-operator/crds/) to run these tests")

yaml_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@functools.cache
def ray_pin() -> str:
    """The exact Ray version of pyproject's dependencies ("ray[default]==2.60.0" -> "2.60.0")."""
    pins = [m.group(1) for dep in pyproject()["project"]["dependencies"]
            if (m := re.fullmatch(r"\s*ray(?:\[[^\]]*\])?\s*==\s*([0-9][\w.]*)\s*", dep))]
    assert len(pins) == 1, f"pyproject.toml must pin ray exactly once (ray[...]==X.Y.Z), found {pins}"
    return pins[0]


def ray_container(template: dict) -> dict:
    return template["spec"]["containers"][0]  # KubeRay's Ray container is the first


@functools.cache
def crd_schema(kind: str, version: str = "v1") -> dict:
    if not KUBERAY_CRDS.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {KUBERAY_CRDS}: {CRDS_HOWTO}")
    for path in sorted(KUBERAY_CRDS.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=yaml_loader):
            if not crd or crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != kind:
                continue
            assert crd["spec"]["group"] == "ray.io"
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    assert v.get("served", False), f"{kind} {version} is not served"
                    return strict_schema(v["schema"]["openAPIV3Schema"], root=True)
    pytest.skip(f"no CRD for {kind} {version} in {KUBERAY_CRDS}: {CRDS_HOWTO}")


# The parts of ObjectMeta a manifest may set (the API server validates metadata itself).
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
    "name": {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
    "namespace": {"type": "string"}, "labels": _STRING_MAP, "annotations": _STRING_MAP}}


def strict_schema(node, root: bool = False):
    """A Kubernetes structural schema as a JSON schema that rejects unknown fields and knows `nullable`."""
    if isinstance(node, list):
        return [strict_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[key] = strict_schema(value)
        else:
            out[key] = copy.deepcopy(value)  # enum, default, x-kubernetes-*: data, not schemas
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    if (node.get("type") == "object" and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if root:
        out["properties"]["metadata"] = OBJECT_META
        out.setdefault("required", [])
        out["required"] = sorted(set(out["required"]) | {"apiVersion", "kind", "metadata", "spec"})
    return out


def crd_errors(doc: dict) -> list[str]:
    import jsonschema

    group_version, kind = doc["apiVersion"], doc["kind"]
    assert group_version.startswith("ray.io/"), group_version
    validator = jsonschema.Draft7Validator(crd_schema(kind, group_version.split("/", 1)[1]))
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(doc))


def ray_mounts(template: dict) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volume mount, volume) of the Ray container; every mount names a pod volume."""
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    out = {}
    for mount in ray_container(template).get("volumeMounts", []):
        assert mount["name"] in volumes, f"volumeMount {mount['name']}: no such volume"
        out[mount["mountPath"]] = (mount, volumes[mount["name"]])
    return out
