"""Static checks of the deployment files: docker/Dockerfile*, .dockerignore, k8s/*.yaml.

Nothing here needs Docker or a Kubernetes cluster. The KubeRay manifests are validated against the
OpenAPI schemas of the KubeRay v1.7.0 CRDs in $TICKETSWEEP_KUBERAY_CRDS (the directory holding KubeRay's
ray.io_rayclusters.yaml and ray.io_rayjobs.yaml; those tests are skipped, saying how to run them, without it),
made strict the way the API server is: an object's unknown fields are an error (the server would reject them
under strict field validation, or silently prune them) unless the schema preserves unknown fields.
"""
from __future__ import annotations

import copy
import functools
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.helpers.kuberay import REPO, crd_errors, pyproject, ray_container, ray_mounts, ray_pin, yaml_loader

DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile", "gpu": REPO / "docker" / "Dockerfile.gpu"}
MANIFESTS = {"raycluster": REPO / "k8s" / "raycluster.yaml", "rayjob": REPO / "k8s" / "rayjob.yaml"}
IMAGES = {"cpu": "ticketsweep:latest", "gpu": "ticketsweep-gpu:latest"}  # placeholders, see k8s/README.md
TORCH_VERSION = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
STORE_CLAIM = "ticketsweep-store"


# --- the project's own pins ------------------------------------------------------------------------

def test_ray_pin_is_read_from_pyproject():
    assert re.fullmatch(r"\d+\.\d+\.\d+", ray_pin())


# --- Dockerfiles -------------------------------------------------------------------------------------

def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; joins `\\` continuations, drops comments and blank lines."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines inside a continuation are dropped too, as docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, args = line.partition(" ")
        instructions.append((word.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def copy_sources(args: str) -> tuple[list[str], str]:
    """(sources, destination) of a COPY instruction, flags (--chown=...) dropped."""
    parts = json.loads(args) if args.startswith("[") else [p for p in shlex.split(args) if not p.startswith("--")]
    return parts[:-1], parts[-1]


def pip_installs(instructions) -> list[tuple[int, list[str]]]:
    """(instruction index, pip arguments) of every `pip install` in a RUN, in order."""
    found = []
    for i, (word, args) in enumerate(instructions):
        if word != "RUN":
            continue
        lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands, current = [], []
        for token in lexer:  # split the shell line at &&, ||, ;, | outside quotes
            if token and set(token) <= set("&|;"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        for argv in commands + [current]:
            for j in range(len(argv) - 1):
                if argv[j].endswith("pip") and argv[j + 1] == "install" or argv[j:j + 3] == ["-m", "pip", "install"]:
                    found.append((i, argv[j + 2 + (argv[j] == "-m"):]))
                    break
    return found


@pytest.fixture(params=sorted(DOCKERFILES), ids=lambda k: DOCKERFILES[k].name)
def dockerfile(request):
    path = DOCKERFILES[request.param]
    assert path.is_file(), f"missing {path.relative_to(REPO)}"
    return request.param, parse_dockerfile(path)


def test_base_image_is_the_pinned_ray(dockerfile):
    kind, instructions = dockerfile
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) == 1, f"one stage expected, FROM lines: {froms}"
    image = froms[0].split()[0]
    repo, _, tag = image.partition(":")
    assert repo == "rayproject/ray"
    expected = f"{ray_pin()}-py311" + ("-gpu" if kind == "gpu" else "")
    assert tag == expected, f"FROM {image}: the Ray tag must match pyproject's ray=={ray_pin()} ({expected})"
    # py311 must satisfy the package's requires-python.
    from packaging.specifiers import SpecifierSet
    assert "3.11" in SpecifierSet(pyproject()["project"].get("requires-python", ""))


def test_torch_is_pinned_and_installed_before_the_package(dockerfile):
    kind, instructions = dockerfile
    installs = pip_installs(instructions)
    torch = [(i, a) for i, a in installs if any(re.match(r"torch\b", x) for x in a)]
    package = [(i, a) for i, a in installs if "." in a]
    assert len(torch) == 1, f"torch must be installed by exactly one pip install: {installs}"
    assert len(package) == 1, f"the package must be installed once (`pip install .`): {installs}"
    (ti, targs), (pi, pargs) = torch[0], package[0]
    torch_specs = [x for x in targs if re.match(r"torch\b", x)]
    assert torch_specs == [f"torch=={TORCH_VERSION}"], f"torch must be pinned to {TORCH_VERSION}: {targs}"
    assert ti < pi, "torch must be installed before the package, so pip never resolves torch itself"
    first_source_copy = min(i for i, (word, _) in enumerate(instructions) if word in ("COPY", "ADD"))
    assert ti < first_source_copy, "install torch before copying the sources, so its layer stays cached"
    index = [targs[k + 1] for k, x in enumerate(targs[:-1]) if x in ("--index-url", "-i")]
    index += [x.split("=", 1)[1] for x in targs if x.startswith("--index-url=")]
    if kind == "cpu":
        assert index == [TORCH_CPU_INDEX], f"CPU image: torch from the CPU-only index ({TORCH_CPU_INDEX})"
    else:
        assert index == [], "GPU image: the default (CUDA) torch wheel"
    assert "--no-cache-dir" in targs and "--no-cache-dir" in pargs


def test_torch_pin_agrees_with_the_documented_installs():
    """README and CI install torch first too: one torch version everywhere."""
    for name in ("README.md", ".ci/run"):
        path = REPO / name
        if path.is_file():
            pins = set(re.findall(r"torch==([0-9][\w.]*)", path.read_text()))
            assert pins <= {TORCH_VERSION}, f"{name} installs torch {pins}, the images {TORCH_VERSION}"


def test_copied_sources_exist_and_reach_the_build_context(dockerfile):
    _, instructions = dockerfile
    copied = []
    for word, args in instructions:
        if word in ("COPY", "ADD"):
            assert not args.startswith("--from"), "single-stage build expected"
            sources, _ = copy_sources(args)
            copied += [s.rstrip("/") for s in sources]
    assert copied, "nothing copied"
    for source in copied:
        assert not any(c in source for c in "*?["), f"COPY {source}: name the files explicitly"
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert dockerignore_includes(source), f"COPY {source}: excluded by .dockerignore"
        if (REPO / source).is_dir():
            for f in (REPO / source).rglob("*"):
                if f.is_file() and f.suffix in (".py", ".yaml", ".yml", ".json", ".toml"):
                    rel = f.relative_to(REPO).as_posix()
                    assert dockerignore_includes(rel), f"{rel} excluded by .dockerignore"
    # What `pip install .` needs, and the spec the RayJob runs.
    needed = {"pyproject.toml", pyproject()["project"]["readme"], "orchestrator", "workers", "specs"}
    assert needed <= set(copied), f"not copied: {needed - set(copied)}"


def test_runs_as_the_ray_user_without_secrets(dockerfile):
    _, instructions = dockerfile
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] == "ray", "the image must end as the non-root ray user"
    first_run = next(i for i, (word, _) in enumerate(instructions) if word == "RUN")
    assert any(word == "USER" for word, _ in instructions[:first_run]), "USER ray before any RUN"
    secretish = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_KEY", re.I)
    for word, args in instructions:
        if word in ("ENV", "ARG"):
            assert not secretish.search(args), f"{word} {args}: no secrets in images"
        if word in ("COPY", "ADD"):
            for source in copy_sources(args)[0]:
                assert not re.search(r"(^|/)(\.env|\.ray|\.aws|\.ssh|.*\.pem|.*auth_token)", source), source


def test_dockerignore_keeps_local_state_out():
    for path in (".venv/bin/python", ".git/config", "ticketsweep-store/points/x.parquet", ".env",
                 "tests/spec/test_spec.py", "orchestrator/__pycache__/cli.cpython-311.pyc", "frontier.png"):
        assert not dockerignore_includes(path), f"{path} would be sent to the docker daemon"
    for path in ("pyproject.toml", "orchestrator/cli/__init__.py", "specs/quickstart.yaml"):
        assert dockerignore_includes(path), path


@functools.cache
def _dockerignore_rules() -> tuple[tuple[bool, re.Pattern], ...]:
    path = REPO / ".dockerignore"
    assert path.is_file(), "a .dockerignore at the repository root (the build context) is expected"
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip().strip("/") if negate else line.strip("/")
        rules.append((negate, re.compile(_glob_regex(pattern))))
    return tuple(rules)


def _glob_regex(pattern: str) -> str:
    """Docker's .dockerignore globs: `**` any number of path segments, `*` and `?` within one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def dockerignore_includes(path: str) -> bool:
    """Whether a repository path is in the build context: the last rule matching it or a parent wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    included = True
    for negate, regex in _dockerignore_rules():
        if any(regex.fullmatch(p) for p in prefixes):
            included = negate
    return included


# --- Kubernetes manifests ----------------------------------------------------------------------------

@functools.cache
def manifest(name: str) -> tuple[dict, ...]:
    path = MANIFESTS[name]
    assert path.is_file(), f"missing {path.relative_to(REPO)}"
    docs = tuple(d for d in yaml.load_all(path.read_text(), Loader=yaml_loader) if d is not None)
    assert docs, f"{path}: empty"
    return docs


def one(name: str, kind: str) -> dict:
    docs = [d for d in manifest(name) if d.get("kind") == kind]
    assert len(docs) == 1, f"{name}: one {kind} expected, found {len(docs)}"
    return docs[0]


def cluster_spec(name: str) -> dict:
    return one("raycluster", "RayCluster")["spec"] if name == "raycluster" else one("rayjob", "RayJob")["spec"]["rayClusterSpec"]


def ray_pods(name: str):
    """(role, group, pod template) of every Ray pod of a manifest: head, worker groups, submitter."""
    spec = cluster_spec(name)
    yield "head", "head", spec["headGroupSpec"]["template"]
    for group in spec.get("workerGroupSpecs", []):
        yield "worker", group["groupName"], group["template"]
    if name == "rayjob" and "submitterPodTemplate" in one("rayjob", "RayJob")["spec"]:
        yield "submitter", "submitter", one("rayjob", "RayJob")["spec"]["submitterPodTemplate"]


@pytest.mark.parametrize("name,kinds", [
    ("raycluster", {("v1", "PersistentVolumeClaim"), ("ray.io/v1", "RayCluster")}),
    ("rayjob", {("v1", "PersistentVolumeClaim"), ("ray.io/v1", "RayJob")}),
])
def test_manifests_parse_with_expected_kinds(name, kinds):
    docs = manifest(name)
    assert {(d.get("apiVersion"), d.get("kind")) for d in docs} == kinds
    assert len(docs) == len(kinds)
    for d in docs:
        assert d["kind"] != "Secret", "never commit a Secret; see k8s/README.md"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]), d["metadata"]["name"]


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifests_validate_against_the_kuberay_crds(name):
    docs = [d for d in manifest(name) if d["apiVersion"].startswith("ray.io/")]
    assert docs
    for doc in docs:
        errors = crd_errors(doc)
        assert not errors, f"{name}: {doc['kind']} does not match the KubeRay CRD:\n" + "\n".join(errors[:20])


@pytest.mark.parametrize("mutate,expected", [
    (lambda s: s["headGroupSpec"].__setitem__("rayStartparams", {}), "rayStartparams"),          # unknown field
    (lambda s: s["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0), "is not of type"),  # not a string
    (lambda s: s["workerGroupSpecs"][0].pop("groupName"), "groupName"),                          # required
    (lambda s: ray_container(s["headGroupSpec"]["template"]).pop("name"), "name"),               # required, core/v1
    (lambda s: ray_container(s["headGroupSpec"]["template"])["resources"]["limits"].__setitem__("cpu", "two"),
     "cpu"),                                                                                       # quantity pattern
    (lambda s: s.__setitem__("authOptions", {"mode": "none"}), "none"),                           # enum
])
def test_crd_validation_rejects_broken_manifests(mutate, expected):
    doc = copy.deepcopy(one("raycluster", "RayCluster"))
    mutate(doc["spec"])
    errors = crd_errors(doc)
    assert errors and any(expected in e for e in errors), errors


def test_ray_version_and_images_match_the_pins():
    for name in MANIFESTS:
        assert cluster_spec(name)["rayVersion"] == ray_pin(), f"{name}: rayVersion != pyproject's ray=={ray_pin()}"
        for role, group, template in ray_pods(name):
            for container in template["spec"]["containers"]:
                gpu = "nvidia.com/gpu" in container.get("resources", {}).get("limits", {})
                assert container["image"] == IMAGES["gpu" if gpu else "cpu"], f"{name} {group}: {container['image']}"
                assert container.get("imagePullPolicy") == "IfNotPresent", f"{name} {group}: a :latest tag"


def test_head_serves_the_dashboard_and_runs_no_trials():
    for name in MANIFESTS:
        head = cluster_spec(name)["headGroupSpec"]
        assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0"
        assert head["rayStartParams"].get("num-cpus") == "0", "trials must go to the workers"
        ports = {p["containerPort"]: p.get("name") for p in ray_container(head["template"]).get("ports", [])}
        assert ports.get(8265) == "dashboard"


def test_pods_request_and_limit_resources():
    gpu_groups = set()
    for name in MANIFESTS:
        for role, group, template in ray_pods(name):
            for container in template["spec"]["containers"]:
                res = container.get("resources", {})
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{name} {group}: {kind} of cpu and memory"
                if "nvidia.com/gpu" in res.get("limits", {}):
                    assert str(res["limits"]["nvidia.com/gpu"]) == "1", f"{name} {group}: one GPU per pod"
                    gpu_groups.add((name, group))
            if role == "worker":
                spec = next(g for g in cluster_spec(name)["workerGroupSpecs"] if g["groupName"] == group)
                assert 0 <= spec["minReplicas"] <= spec.get("replicas", 0) <= spec["maxReplicas"], group
    assert ("raycluster", "gpu") in gpu_groups, "raycluster.yaml: a gpu worker group with nvidia.com/gpu: 1"


def test_token_authentication_on_every_ray_pod():
    """Ray 2.60 authenticates with a token: the same Secret on the head, the workers and the submitter."""
    secrets = set()
    for name in MANIFESTS:
        assert cluster_spec(name).get("authOptions", {}).get("mode") != "disabled"
        roles = set()
        for role, group, template in ray_pods(name):
            roles.add(role)
            for container in template["spec"]["containers"]:
                names = [e["name"] for e in container.get("env", [])]
                assert len(names) == len(set(names)), f"{name} {group}: duplicate env {names}"
            env = {e["name"]: e for e in ray_container(template).get("env", [])}
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name} {group}: RAY_AUTH_MODE=token"
            if "RAY_AUTH_TOKEN" in env:  # from a Secret, never a literal
                assert "value" not in env["RAY_AUTH_TOKEN"], f"{name} {group}: a literal token"
                secrets.add(env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"])
            else:
                token_path = env["RAY_AUTH_TOKEN_PATH"]["value"]
                mounts = ray_mounts(template)
                directory, _, key = token_path.rpartition("/")
                assert directory in mounts, f"{name} {group}: {token_path} is not on a mounted volume"
                mount, volume = mounts[directory]
                assert "secret" in volume and mount.get("readOnly"), f"{name} {group}: token from a Secret"
                assert key == "auth_token", "the Secret's key is auth_token (KubeRay's convention)"
                secrets.add(volume["secret"]["secretName"])
        assert roles >= ({"head", "worker", "submitter"} if name == "rayjob" else {"head", "worker"})
    assert len(secrets) == 1, f"one token Secret for everything, found {secrets}"


def test_results_store_is_shared_by_head_and_workers():
    claims = [one(name, "PersistentVolumeClaim") for name in MANIFESTS]
    assert all(c == claims[0] for c in claims), "the store claim must be identical in both manifests"
    assert claims[0]["metadata"]["name"] == STORE_CLAIM
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteMany"], "trials on every worker write to the store"
    for name in MANIFESTS:
        for role, group, template in ray_pods(name):
            if role == "submitter":
                continue
            claimed = {path for path, (_, volume) in ray_mounts(template).items()
                       if volume.get("persistentVolumeClaim", {}).get("claimName") == STORE_CLAIM}
            assert claimed == {"/data"}, f"{name} {group}: mount the store claim at /data"


def test_rayjob_runs_a_sweep_with_the_orchestrate_script():
    spec = one("rayjob", "RayJob")["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert "clusterSelector" not in spec, "the RayJob brings its own cluster (rayClusterSpec)"
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["orchestrate", "submit"], spec["entrypoint"]
    scripts = pyproject()["project"]["scripts"]
    assert "orchestrate" in scripts, "orchestrate must be the package's console script"

    # Parse the arguments with the real CLI: unknown options or a missing SPEC fail here.
    import importlib

    module, _, attr = scripts["orchestrate"].partition(":")
    cli = getattr(importlib.import_module(module), attr)
    with cli.commands["submit"].make_context("orchestrate submit", argv[2:]) as ctx:
        params = ctx.params
    assert params["address"] == "auto"
    assert params["store_location"], "the store is given with --store"

    # The spec is baked into the image under its WORKDIR: it must be a spec of this repository's specs/.
    workdir = [a for w, a in parse_dockerfile(DOCKERFILES["cpu"]) if w == "WORKDIR"][-1].rstrip("/")
    spec_path = params["spec_path"]
    if spec_path.startswith("/"):
        assert spec_path.startswith(workdir + "/"), f"{spec_path} is not under the image's WORKDIR {workdir}"
        spec_path = spec_path[len(workdir) + 1:]
    assert spec_path.startswith("specs/") and (REPO / spec_path).is_file(), f"{spec_path}: no such spec in specs/"
    from orchestrator.spec.sweep_spec import load_spec

    load_spec(str(REPO / spec_path))  # a valid spec

    # A local store must be on the shared claim, mounted the same on the head and the workers.
    store = params["store_location"]
    if "://" not in store:
        for role, group, template in ray_pods("rayjob"):
            if role != "submitter":
                assert any(store == p or store.startswith(p.rstrip("/") + "/") for p in ray_mounts(template)), \
                    f"--store {store} is not on a volume of {group}"
