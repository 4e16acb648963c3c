"""`orchestrate k8s render`: the RayJob of a spec, checked like the static manifests (tests/deploy/test_deploy.py).

The KubeRay CRD check is test_deploy's validator (tests/helpers/kuberay.py; it skips, as there, without the CRD
schemas).
"""
from __future__ import annotations

import copy
import shlex

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from orchestrator.deploy import k8s
from orchestrator.cli import main
from orchestrator.deploy.k8s import RenderError, RenderOptions, render
from orchestrator.spec.sweep_spec import load_spec, parse_spec
from tests.helpers.kuberay import OBJECT_META, crd_errors, ray_container, ray_mounts, ray_pin

STORE = "s3://results-bucket/ticketsweep"
SPEC = {
    "name": "k8s_demo.v1",
    "store": STORE,
    "model": {"name": "mlp"},
    "dataset": {"name": "mnist1d"},
    "training": {"epochs": 2, "rewind": "1ep"},
    "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "magnitude"}],
    "sparsities": [0.5, 0.8],
    "seeds": [0, 1],
    "resources": {"cpus_per_trial": 1, "max_concurrent": 5},
}


def _spec_file(tmp_path, spec=SPEC, name="spec.yaml"):
    path = tmp_path / name
    # A comment must survive: the ConfigMap carries the file as written, not a re-serialisation.
    path.write_text("# my sweep\n" + yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _render(tmp_path, spec=SPEC, **options):
    path = _spec_file(tmp_path, spec)
    return path, render(path, parse_spec(spec), RenderOptions(image="registry.example/ticketsweep:1.0", **options))


def _kinds(docs):
    return {d["kind"]: d for d in docs}


def _pods(job: dict):
    """(role, template) of every pod of the RayJob: head, each worker group, the submitter."""
    cluster = job["spec"]["rayClusterSpec"]
    yield "head", cluster["headGroupSpec"]["template"]
    for group in cluster["workerGroupSpecs"]:
        yield f"worker {group['groupName']}", group["template"]
    yield "submitter", job["spec"]["submitterPodTemplate"]


def test_rendered_rayjob_validates_against_the_kuberay_crd(tmp_path):
    _, docs = _render(tmp_path, aws_role_arn="arn:aws:iam::123456789012:role/ticketsweep")
    job = _kinds(docs)["RayJob"]
    errors = crd_errors(job)
    assert not errors, "\n".join(errors[:20])
    broken = copy.deepcopy(job)
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # not a string
    assert any("is not of type" in e for e in crd_errors(broken))


def test_core_objects_have_valid_metadata(tmp_path):
    _, docs = _render(tmp_path, gcp_service_account="sweeps@proj.iam.gserviceaccount.com", namespace="research")
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ConfigMap", "RayJob"]  # the order to apply them
    for doc in docs:
        assert doc["apiVersion"] == ("ray.io/v1" if doc["kind"] == "RayJob" else "v1")
        jsonschema.validate(doc["metadata"], OBJECT_META)
        assert doc["metadata"]["namespace"] == "research"
        assert doc["kind"] != "Secret"
    assert _kinds(docs)["RayJob"]["metadata"]["name"] == "ticketsweep-k8s-demo-v1"  # from the sweep's name


def test_the_spec_travels_in_a_configmap_mounted_on_the_head(tmp_path):
    path, docs = _render(tmp_path)
    config_map, job = _kinds(docs)["ConfigMap"], _kinds(docs)["RayJob"]
    with open(path) as f:
        assert config_map["data"] == {"spec.yaml": f.read()}
    # The entrypoint, parsed by the real CLI: the mounted spec, the cluster it runs on, the object store.
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["orchestrate", "submit"]
    with main.commands["submit"].make_context("orchestrate submit", argv[2:]) as ctx:
        params = ctx.params
    assert (params["address"], params["store_location"], params["progress"]) == ("auto", STORE, False)
    assert params["spec_path"] == f"{k8s.SPEC_DIR}/spec.yaml"
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    mount, volume = ray_mounts(head)[k8s.SPEC_DIR]
    assert mount["readOnly"] and volume["configMap"]["name"] == config_map["metadata"]["name"]
    # What the head will read back is the same sweep.
    (tmp_path / "mounted").mkdir()
    (tmp_path / "mounted" / "spec.yaml").write_text(config_map["data"]["spec.yaml"])
    assert load_spec(tmp_path / "mounted" / "spec.yaml") == parse_spec(SPEC)
    # A stop request reaches the driver as SIGINT, its Ctrl-C path, which keeps every finished row.
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["RAY_JOB_STOP_SIGNAL"] == "SIGINT"


def test_token_auth_and_cloud_identity_never_inline_secrets(tmp_path):
    _, docs = _render(tmp_path, service_account="sweeper", aws_role_arn="arn:aws:iam::123456789012:role/sweeper")
    kinds = _kinds(docs)
    account = kinds["ServiceAccount"]
    assert account["metadata"]["name"] == "sweeper"
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/sweeper"}
    job = kinds["RayJob"]
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_pin()
    assert job["spec"]["rayClusterSpec"].get("authOptions", {}).get("mode") != "disabled"
    roles = set()
    for role, template in _pods(job):
        roles.add(role.split()[0])
        container = ray_container(template)
        assert container["image"] == "registry.example/ticketsweep:1.0"
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", role
        assert "RAY_AUTH_TOKEN" not in env, f"{role}: the token comes from the Secret's file, never a literal"
        directory, _, key = env["RAY_AUTH_TOKEN_PATH"]["value"].rpartition("/")
        mount, volume = ray_mounts(template)[directory]
        assert mount["readOnly"] and volume["secret"]["secretName"] == "ticketsweep-ray-auth" and key == "auth_token"
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS"} & set(env), role
        # The pods that touch the store (driver on the head, trials on the workers) carry the identity.
        assert template["spec"].get("serviceAccountName") == (None if role == "submitter" else "sweeper"), role
    assert roles == {"head", "worker", "submitter"}
    # Without an annotation option, an existing ServiceAccount is referenced and none is rendered.
    _, plain = _render(tmp_path)
    assert "ServiceAccount" not in _kinds(plain)


@pytest.mark.parametrize("resources,methods,options,expected", [
    # 5 trials of 1 CPU, 2 CPUs a pod: ceil(5 / 2) = 3 CPU pods.
    ({"cpus_per_trial": 1, "max_concurrent": 5}, [], {}, {"cpu": (3, False)}),
    # 0.5 CPU a trial: 4 a pod, ceil(5 / 4) = 2.
    ({"cpus_per_trial": 0.5, "max_concurrent": 5}, [], {}, {"cpu": (2, False)}),
    # One method on a quarter GPU: 4 share a GPU but 2 CPUs limit a pod to 2 trials -> ceil(5 / 2) = 3 GPU pods.
    ({"cpus_per_trial": 1, "max_concurrent": 5}, [{"gpus_per_trial": 0.25}], {}, {"cpu": (3, False), "gpu": (3, True)}),
    # 1 GiB reserved a trial, 2 GiB pods give trials 1.4 GiB: 1 trial a pod -> 5 pods.
    ({"cpus_per_trial": 1, "max_concurrent": 5, "memory_per_trial_gb": 1}, [], {"worker_memory_gb": 2},
     {"cpu": (5, False)}),
    # Everything on half a GPU: no CPU group; 8 CPUs a pod, 2 trials a GPU -> ceil(5 / 2) = 3.
    ({"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent": 5}, [], {"worker_cpus": 8}, {"gpu": (3, True)}),
])
def test_worker_groups_are_sized_from_the_spec(tmp_path, resources, methods, options, expected):
    spec = {**SPEC, "resources": resources,
            "methods": [{"kind": "ltr"}] + [{"kind": "oneshot", "criterion": "snip", "resources": r} for r in methods]}
    _, docs = _render(tmp_path, spec, **options)
    groups = _kinds(docs)["RayJob"]["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    got = {}
    for g in groups:
        limits = ray_container(g["template"])["resources"]["limits"]
        got[g["groupName"]] = (g["replicas"], "nvidia.com/gpu" in limits)
        assert g["minReplicas"] == 0 and g["maxReplicas"] == g["replicas"]
        assert limits["cpu"] == str(options.get("worker_cpus", 2))
    assert got == expected
    assert not crd_errors(_kinds(docs)["RayJob"])


def test_cli_writes_the_file_and_rejects_bad_input_without_writing(tmp_path):
    runner = CliRunner()
    path = _spec_file(tmp_path, {**SPEC, "store": "gs://bucket/sweeps"})
    out = tmp_path / "rayjob.yaml"
    result = runner.invoke(main, ["k8s", "render", path, "--image", "reg/ts:2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert docs == render(path, parse_spec({**SPEC, "store": "gs://bucket/sweeps"}), RenderOptions(image="reg/ts:2"))
    assert "&id" not in out.read_text(), "no YAML anchors: people read and diff these files"

    local = _spec_file(tmp_path, {**SPEC, "store": "./ticketsweep-store"}, "local.yaml")
    keyed = _spec_file(tmp_path, {**SPEC, "store": "s3://b/x?access_key=AKIA&secret_key=s"}, "keyed.yaml")
    target = tmp_path / "never.yaml"
    for args, expected in [
        # A relative store in a spec file is taken from the file's folder.
        ([local], f"local.yaml: store: '{tmp_path / 'ticketsweep-store'}' is not object storage"),
        ([path, "--store", "/data/store"], "--store: '/data/store' is not object storage"),
        ([keyed], "holds credentials (access_key, secret_key)"),
        ([path, "--store", "s3://b/x?session_token=t"], "--store: holds credentials (session_token)"),
        ([path, "--name", "Bad_Name"], "--name 'Bad_Name'"),
        ([path, "--namespace", "No Spaces"], "--namespace 'No Spaces'"),
        ([path, "--worker-cpus", "1", "--store", STORE],
         None),  # fits: 1 CPU trials on 1 CPU pods
    ]:
        result = runner.invoke(main, ["k8s", "render", *args, "--image", "reg/ts:2", "-o", str(target)])
        if expected is None:
            assert result.exit_code == 0, result.output
            target.unlink()
            continue
        assert result.exit_code == 2 and expected in result.stderr, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
        assert not target.exists()
    big = {**SPEC, "resources": {"cpus_per_trial": 4, "max_concurrent": 1}}
    with pytest.raises(RenderError, match=r"resources.cpus_per_trial: 4 CPUs per trial do not fit"):
        render(path, parse_spec(big), RenderOptions(image="x"))
    missing = runner.invoke(main, ["k8s", "render", path])
    assert missing.exit_code == 2 and "--image" in missing.stderr


def test_plugin_code_travels_in_the_configmap_beside_the_spec(tmp_path):
    import base64
    import shutil
    from pathlib import Path

    example = tmp_path / "my_method"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "my_method", example,
                    ignore=shutil.ignore_patterns("store", "__pycache__", "glyphs.npz"))
    import subprocess
    import sys

    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True)
    spec = yaml.safe_load((example / "spec.yaml").read_text())
    path = example / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "store": STORE}))
    loaded = load_spec(path)
    docs = render(str(path), loaded, RenderOptions(image="registry.example/ticketsweep:1.0"))
    config_map, job = _kinds(docs)["ConfigMap"], _kinds(docs)["RayJob"]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    items = ray_mounts(head)[k8s.SPEC_DIR][1]["configMap"]["items"]
    paths = sorted(i["path"] for i in items)
    assert any(item["path"].endswith("glyphs.npz") and item["key"] in config_map["binaryData"] for item in items)
    assert paths == ["my_method/__init__.py", "my_method/criterion.py", "my_method/data.py", "my_method/glyphs.npz",
                     "my_method/model.py", "spec.yaml"]
    # What the head mounts is the same sweep, with the same plugin identities (so the same stage keys).
    mounted = tmp_path / "mounted"
    for item in items:
        target = mounted / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if item["key"] in config_map.get("binaryData", {}):
            target.write_bytes(base64.b64decode(config_map["binaryData"][item["key"]]))
        else:
            target.write_text(config_map["data"][item["key"]])
    again = load_spec(mounted / "spec.yaml")
    assert {k: t["identity"] for k, t in again.plugin_manifest()["things"].items()} == \
        {k: t["identity"] for k, t in loaded.plugin_manifest()["things"].items()}
    assert "travel in the ConfigMap beside the spec" in k8s.plugin_note(loaded)
    # Code outside the spec's folder cannot be mounted beside it: one line, nothing rendered.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "spec.yaml").write_text(yaml.safe_dump({**spec, "store": STORE,
                                                                "code": [str(example / "my_method")]}))
    with pytest.raises(RenderError, match="is outside the spec's folder: a RayJob mounts the spec's folder layout"):
        render(str(tmp_path / "sub" / "spec.yaml"), load_spec(tmp_path / "sub" / "spec.yaml"),
               RenderOptions(image="registry.example/ticketsweep:1.0"))
