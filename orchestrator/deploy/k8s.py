"""The KubeRay RayJob of one spec (`orchestrate k8s render`): the spec in a ConfigMap, the store on object storage.

What the static k8s/rayjob.yaml leaves to hand edits is derived here: the spec travels in a ConfigMap
mounted on the head (no image rebuild per spec), the worker groups are sized from the spec's resources, and
the store must be object storage, because the pods of a RayJob share no disk. The pods reach the store with
their ServiceAccount's cloud identity (EKS IRSA or GKE Workload Identity); keys never appear in a
manifest. Token authentication is kept on exactly as in the static manifests: RAY_AUTH_MODE=token and the
token from a Secret mounted read-only on every Ray pod and on the submitter.
"""
from __future__ import annotations

import base64
import math
import os
import re
import shlex
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml

from orchestrator.deploy.detached import STOP_ENV, JobError, plugin_code_layout
from orchestrator.spec.sweep_spec import SweepSpec

OBJECT_STORES = ("s3://", "gs://")
CREDENTIAL_PARAMS = {"access_key", "secret_key", "session_token"}
SPEC_DIR = "/etc/ticketsweep/spec"
TOKEN_DIR = "/etc/ray-auth"
TOKEN_KEY = "auth_token"  # KubeRay's convention for the Secret's key
# Ray keeps ~30% of a node's memory for its object store; trials' memory reservations come from the rest.
RAY_MEMORY_SHARE = 0.7
CONFIGMAP_MAX = 1_000_000  # bytes; the API server refuses larger objects (1 MiB with metadata)
NAME_MAX = 40  # KubeRay derives longer names (cluster, services, pods) from the RayJob's
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
RUN_AS = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100}  # the ray user of rayproject/ray images
AWS_ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
GCP_SA_ANNOTATION = "iam.gke.io/gcp-service-account"


class RenderError(ValueError):
    """A spec or option that cannot become a RayJob; the message is one line naming it."""


@dataclass(frozen=True)
class RenderOptions:
    image: str
    gpu_image: str | None = None          # default: `image`
    store: str | None = None              # default: the spec's
    name: str | None = None               # default: from the sweep's name
    namespace: str | None = None
    service_account: str = "ticketsweep"
    aws_role_arn: str | None = None       # renders the ServiceAccount, annotated for IRSA
    gcp_service_account: str | None = None  # renders the ServiceAccount, annotated for Workload Identity
    auth_secret: str = "ticketsweep-ray-auth"
    worker_cpus: int = 2
    worker_memory_gb: float = 4.0


@dataclass(frozen=True)
class Group:
    name: str
    replicas: int
    gpu: bool


def _check_names(opts: RenderOptions) -> None:
    for option, value in (("--namespace", opts.namespace), ("--service-account", opts.service_account),
                          ("--auth-secret", opts.auth_secret)):
        if value is not None and (len(value) > 253 or not OBJECT_NAME.fullmatch(value)):
            raise RenderError(f"{option} {value!r}: not a Kubernetes name (lowercase letters, digits, '-' and '.')")


def job_name(spec: SweepSpec, name: str | None) -> str:
    if name is not None:
        if len(name) > NAME_MAX or not DNS_LABEL.fullmatch(name):
            raise RenderError(f"--name {name!r}: lowercase letters, digits and '-', at most {NAME_MAX} characters")
        return name
    derived = re.sub(r"[^a-z0-9-]+", "-", f"ticketsweep-{spec.name.lower()}")[:NAME_MAX].strip("-")
    return re.sub(r"-{2,}", "-", derived)


def object_store(spec_path: str, spec: SweepSpec, store: str | None) -> str:
    # pyarrow takes keys in a URI's query; a manifest (and the spec in its ConfigMap) must never carry them.
    for where, uri in ((f"{spec_path}: store", spec.store), ("--store", store)):
        keys = sorted(CREDENTIAL_PARAMS & set(parse_qs(urlparse(uri or "").query)))
        if keys:
            raise RenderError(f"{where}: holds credentials ({', '.join(keys)}); the pods get theirs from their "
                              f"ServiceAccount (--aws-role-arn, --gcp-service-account), never from the manifest")
    location = store or spec.store
    if not location.startswith(OBJECT_STORES):
        where = "--store" if store else f"{spec_path}: store"
        raise RenderError(f"{where}: {location!r} is not object storage; a RayJob's pods share no disk, so give "
                          f"an s3:// or gs:// store (e.g. --store s3://BUCKET/ticketsweep)")
    return location.rstrip("/")


def worker_groups(spec: SweepSpec, opts: RenderOptions) -> list[Group]:
    """One CPU group and/or one GPU group (one GPU a pod), each able to run max_concurrent trials at once."""
    shapes = {"resources": spec.resources.shape()}
    for i, m in enumerate(spec.methods):
        if m.resources is not None:
            shapes[f"methods.{i}.resources"] = spec.resources.shape(m.resources)
    pod_memory = opts.worker_memory_gb * RAY_MEMORY_SHARE * 2 ** 30
    groups = []
    for gpu in (False, True):
        mine = {w: s for w, s in shapes.items() if (s[1] > 0) == gpu}
        if not mine:
            continue
        per_pod = math.inf
        for where, (cpus, gpus, memory) in mine.items():
            if cpus > opts.worker_cpus:
                raise RenderError(f"{where}.cpus_per_trial: {cpus:g} CPUs per trial do not fit in a worker pod of "
                                  f"--worker-cpus {opts.worker_cpus}")
            if memory and memory > pod_memory:
                raise RenderError(f"{where}.memory_per_trial_gb: {memory / 2 ** 30:g} GiB per trial do not fit in a "
                                  f"worker pod of "
                                  f"--worker-memory-gb {opts.worker_memory_gb:g} (Ray gives trials about "
                                  f"{RAY_MEMORY_SHARE:.0%} of it)")
            fits = [opts.worker_cpus // cpus] + ([1 // gpus] if gpu else []) + ([pod_memory // memory] if memory else [])
            per_pod = min(per_pod, *fits)
        replicas = math.ceil(spec.resources.max_concurrent / max(1, int(per_pod)))
        groups.append(Group("gpu" if gpu else "cpu", replicas, gpu))
    return groups


def _token_env() -> list[dict]:
    return [{"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN_PATH", "value": f"{TOKEN_DIR}/{TOKEN_KEY}"}]


def _token_volume(opts: RenderOptions) -> tuple[dict, dict]:
    return ({"name": "ray-auth", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "ray-auth", "secret": {"secretName": opts.auth_secret}})


def _shm() -> tuple[dict, dict]:
    # Torch data loaders and Ray's object store want more /dev/shm than a container's default 64 MiB.
    return ({"name": "dshm", "mountPath": "/dev/shm"}, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}})


def _resources(cpu: str, memory: str, limit_cpu: str | None = None, gpu: bool = False) -> dict:
    limits = {"cpu": limit_cpu or cpu, "memory": memory}
    if gpu:
        limits["nvidia.com/gpu"] = 1
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def _pod(container: dict, volumes: list[tuple[dict, dict]], opts: RenderOptions | None, fs_group: bool = True,
         gpu: bool = False) -> dict:
    name, image, rest = container.pop("name"), container.pop("image"), container
    container = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent", **rest,
                 "volumeMounts": [m for m, _ in volumes]}
    spec = {"securityContext": {**RUN_AS, **({"fsGroup": 100} if fs_group else {})}}
    if opts is not None:  # the pods that touch the store get its cloud identity
        spec["serviceAccountName"] = opts.service_account
    if gpu:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    spec.update(containers=[container], volumes=[v for _, v in volumes])
    return {"spec": spec}


def plugin_files(spec_path: str, spec: SweepSpec) -> list[tuple[str, bytes]]:
    """(path beside the spec, content) of every file of the spec's `code:` paths, which travel in the ConfigMap
    and are mounted beside the spec on the head: its driver ships them on to the workers with Ray's runtime
    env, as on any cluster. RenderError for code outside the spec's folder."""
    try:
        layout = plugin_code_layout(spec_path, spec.code)
    except JobError as err:
        raise RenderError(str(err).replace("a detached job ships", "a RayJob mounts")) from None
    out = []
    for path, rel in layout:
        files = [(path, rel)] if os.path.isfile(path) else [
            (os.path.join(folder, f), os.path.relpath(os.path.join(folder, f), path))
            for folder, dirs, names in os.walk(path) if not dirs.sort() and "__pycache__" not in folder
            for f in sorted(names) if not f.endswith(".pyc")]
        for local, inner in files:
            out.append(((rel if os.path.isfile(path) else os.path.join(rel, inner)).replace(os.sep, "/"),
                        Path(local).read_bytes()))
    return out


def plugin_note(spec: SweepSpec) -> str:
    """How the spec's plugin code reaches the cluster, for the manifest's header."""
    if not spec.plugins:
        return ""
    named = ", ".join(spec.plugins)
    if spec.code:
        return (f"# Plugins {named}: their code: paths travel in the ConfigMap beside the spec; the\n"
                "# driver on the head ships them to every worker with Ray's runtime env (py_modules).\n")
    return (f"# Plugins {named}: no code: paths, so they must be installed in the image (a\n"
            "# distribution declaring a ticketsweep.plugins entry point), on the head and on every worker.\n")


def render(spec_path: str, spec: SweepSpec, opts: RenderOptions) -> list[dict]:
    """The manifests, in the order to apply them: [ServiceAccount,] ConfigMap, RayJob."""
    if not opts.image or any(c.isspace() for c in opts.image):
        raise RenderError(f"--image {opts.image!r}: an image reference, e.g. REGISTRY/ticketsweep:TAG")
    _check_names(opts)
    name = job_name(spec, opts.name)
    store = object_store(spec_path, spec, opts.store)
    groups = worker_groups(spec, opts)
    spec_file = "spec.json" if Path(spec_path).suffix == ".json" else "spec.yaml"  # the loader goes by suffix
    meta = lambda n: {"name": n, **({"namespace": opts.namespace} if opts.namespace else {}),  # noqa: E731
                      "labels": {"app.kubernetes.io/name": "ticketsweep", "app.kubernetes.io/instance": name}}
    docs = []
    annotations = {k: v for k, v in ((AWS_ROLE_ANNOTATION, opts.aws_role_arn),
                                     (GCP_SA_ANNOTATION, opts.gcp_service_account)) if v}
    if annotations:
        docs.append({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {**meta(opts.service_account), "annotations": annotations}})
    text = Path(spec_path).read_text()
    if len(text.encode()) > CONFIGMAP_MAX:
        raise RenderError(f"{spec_path}: {len(text.encode())} bytes, more than a ConfigMap holds ({CONFIGMAP_MAX})")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{name}-spec"), "data": {spec_file: text}}
    items = [{"key": spec_file, "path": spec_file}]
    size = len(text.encode())
    for i, (rel, content) in enumerate(plugin_files(spec_path, spec)):
        key = f"code-{i}-" + re.sub(r"[^-._a-zA-Z0-9]", "_", rel)[-200:]
        try:
            config_map["data"][key] = content.decode()
            size += len(content)
        except UnicodeDecodeError:
            config_map.setdefault("binaryData", {})[key] = base64.b64encode(content).decode()
            size += 4 * math.ceil(len(content) / 3)
        items.append({"key": key, "path": rel})
        if size > CONFIGMAP_MAX:
            raise RenderError(f"{spec_path}: code: the plugin code and the spec exceed what a ConfigMap holds "
                              f"({CONFIGMAP_MAX} bytes, at {rel}): install the plugins in the image instead (a "
                              f"distribution declaring a ticketsweep.plugins entry point) and drop code:")
    docs.append(config_map)

    token = _token_volume(opts)
    spec_volume = ({"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
                   {"name": "spec", "configMap": {"name": f"{name}-spec",
                                                  **({"items": items} if len(items) > 1 else {})}})
    head = _pod({"name": "ray-head", "image": opts.image,
                 "ports": [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
                           {"containerPort": 10001, "name": "client"}],
                 "env": _token_env(), "resources": _resources("1", "4Gi", limit_cpu="2")},
                [token, spec_volume, _shm()], opts)
    workers = []
    for g in groups:
        memory = f"{int(opts.worker_memory_gb * 1024)}Mi"
        template = _pod({"name": "ray-worker", "image": (opts.gpu_image or opts.image) if g.gpu else opts.image,
                         "env": _token_env(), "resources": _resources(str(opts.worker_cpus), memory, gpu=g.gpu)},
                        [token, _shm()], opts, gpu=g.gpu)
        workers.append({"groupName": g.name, "replicas": g.replicas, "minReplicas": 0, "maxReplicas": g.replicas,
                        "rayStartParams": {}, "template": template})
    submitter = _pod({"name": "ray-job-submitter", "image": opts.image, "env": _token_env(),
                      "resources": _resources("200m", "512Mi", limit_cpu="1")}, [token], None, fs_group=False)
    submitter["spec"]["restartPolicy"] = "Never"
    entrypoint = ["orchestrate", "submit", f"{SPEC_DIR}/{spec_file}", "--address", "auto", "--store", store,
                  "--no-progress"]
    docs.append({"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta(name), "spec": {
        "entrypoint": " ".join(shlex.quote(a) for a in entrypoint),
        # Stopping the job (ray job stop) sends SIGINT: the driver's Ctrl-C path keeps every finished row.
        "runtimeEnvYAML": yaml.safe_dump({"env_vars": STOP_ENV}, sort_keys=True),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 600,
        "submissionMode": "K8sJobMode",
        "submitterPodTemplate": submitter,
        "rayClusterSpec": {
            "rayVersion": version("ray"),
            "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"}, "template": head},
            "workerGroupSpecs": workers,
        },
    }})
    return docs


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no &anchors for repeated pieces, multi-line strings (the spec) as | blocks."""

    def ignore_aliases(self, data) -> bool:
        return True


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def to_yaml(docs: list[dict], spec_path: str, note: str = "") -> str:
    header = (f"# Rendered by `orchestrate k8s render {spec_path}`. Apply with `kubectl apply -f FILE`; the\n"
              f"# Secret with Ray's auth token must exist first (k8s/README.md). Re-render rather than edit.\n") + note
    return header + yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
