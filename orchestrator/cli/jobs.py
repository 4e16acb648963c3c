"""Running on a cluster: `orchestrate cancel`, `logs`, `k8s render`, and the detached half of `submit`."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import click

from orchestrator.deploy import detached
from orchestrator.store import stage_logs
from orchestrator.cli.common import SWEEP_BUSY, fail, plan_of, spec_from, store_at
from orchestrator.store.files import StoreError


def _head_store(location: str) -> str:
    """The store as the head must see it: the job runs in a working directory of its own, so no relative paths."""
    return location if "://" in location else os.path.abspath(location)


def submit_detached(spec_path: str, store_location: str | None, address: str | None, take_over: bool,
                    retry_diverged: bool) -> None:
    """`submit --detach`: validate here, submit the driver as a job, print its id and return."""
    spec = spec_from(spec_path)
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    try:
        address = detached.dashboard_address(address)
    except detached.JobError as err:
        fail(str(err))
    if spec.dataset.root and not os.path.isabs(spec.dataset.root):
        fail(f"{spec_path}: dataset.root: {spec.dataset.root!r} must be an absolute path on the cluster "
              f"for a detached run (the job runs in a working directory of its own)")
    location = _head_store(store_location or spec.store)
    store = store_at(location)
    try:
        api = detached.client(address)  # an unreachable or refusing cluster fails before the store is touched
        store.check_writable()      # the job's record goes there: fail before the cluster runs anything
        extra = (["--take-over"] if take_over else []) + (["--retry-diverged"] if retry_diverged else [])
        record = detached.submit(api, spec_path, spec.name, location, extra, code=spec.code)
    except detached.JobBusy as err:
        click.echo(str(err), err=True)
        sys.exit(SWEEP_BUSY)
    except (detached.JobError, StoreError) as err:
        fail(str(err))
    if "://" not in location and urlparse(address).hostname not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"note: the store {location} is a local path: the head must see this same filesystem "
                   f"there (otherwise use an s3:// or gs:// store)", err=True)
    click.echo(record.job_id)  # alone on stdout, so that JOB=$(orchestrate submit ... --detach) works
    same = f"{spec_path}" + (f" --store {store_location}" if store_location else "")
    click.echo(f"sweep {spec.name}: driver submitted to {address} as job {record.job_id}; "
               f"results go to {location}.\n  follow it:  orchestrate logs {same}\n"
               f"  progress:   orchestrate status {same}\n  stop it:    orchestrate cancel {same}", err=True)


def _recorded(spec_path: str, store_location: str | None) -> detached.JobRecord:
    spec = spec_from(spec_path)
    try:
        return detached.recorded(_head_store(store_location or spec.store), spec.name)
    except (detached.JobError, StoreError) as err:
        fail(str(err))


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--store", "store_location", help="Results store (default: the spec's).")
def cancel(spec_path: str, store_location: str | None) -> None:
    """Stop the sweep's detached job; every finished stage stays in the store (submit again to resume)."""
    record = _recorded(spec_path, store_location)
    try:
        was_running, state = detached.cancel(record)
    except detached.JobError as err:
        fail(str(err))
    if state not in detached.TERMINAL:
        click.echo(f"job {record.job_id}: still {state} {detached.STOP_WAIT_S + 30} s after the stop request", err=True)
        sys.exit(1)
    if not was_running:
        click.echo(f"job {record.job_id} had already ended: {state}")
        return
    # It ended: CANCELLED, or (had it ended by itself meanwhile) as it ended; either way nothing runs now.
    click.echo(f"job {record.job_id}: {state}; finished stages are stored (orchestrate submit {spec_path} "
               f"resumes)")


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--store", "store_location", help="Results store (default: the spec's).")
@click.option("--stage", "stage_prefix",
              help="Print this stage's own log instead: a prefix of its key or its label (`plan SPEC` lists both).")
@click.option("--attempt", type=int, help="With --stage: this attempt (default: the latest).")
def logs(spec_path: str, store_location: str | None, stage_prefix: str | None, attempt: int | None) -> None:
    """Follow the sweep's detached job until it ends (exit 0 if it succeeded or was cancelled), or print one
    stage's log."""
    if attempt is not None and stage_prefix is None:
        fail("--attempt: only with --stage")
    if stage_prefix is not None:
        _print_stage_log(spec_path, store_location, stage_prefix, attempt)
        return
    record = _recorded(spec_path, store_location)
    try:
        state = detached.follow(record, lambda chunk: click.echo(chunk, nl=False))
    except detached.JobError as err:
        fail(str(err))
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; job {record.job_id} keeps running "
                   f"(orchestrate cancel {spec_path} stops it)", err=True)
        sys.exit(130)
    click.echo(f"job {record.job_id}: {state}", err=True)
    if state not in ("SUCCEEDED", detached.CANCELLED):
        sys.exit(1)


def _print_stage_log(spec_path: str, store_location: str | None, prefix: str, attempt: int | None) -> None:
    spec = spec_from(spec_path)
    location = store_location or spec.store
    store = store_at(location)  # an unusable store is a one-line error like everywhere else
    labelled = [k for k, s in plan_of(spec).stages.items() if s.label == prefix]
    if len(labelled) == 1:  # a label as `plan`, `submit` and the log headers print it, e.g. "ltr s=0 L=3"
        prefix = labelled[0]
    try:
        log = stage_logs.find(location, spec.name, prefix, attempt)
    except stage_logs.LogNotFound as err:
        # A planned stage without a log either has not run or ran and printed nothing: say which.
        planned = [s for k, s in plan_of(spec).stages.items() if k.startswith(prefix)] if prefix else []
        if len(planned) == 1 and attempt is None:
            stage = planned[0]
            why = "it ran and printed nothing" if stage.key in store.done_keys(spec.name) else "it has not run yet"
            fail(f"--stage {prefix}: stage {stage.key[:12]} ({stage.label}) has no log: {why}")
        fail(str(err))
    except StoreError as err:
        fail(str(err))
    click.echo(f"# stage {log.stage_key} attempt {log.attempt}: {log.path}", err=True)
    click.echo(log.text, nl=not log.text.endswith("\n"))


@click.group()
def k8s() -> None:
    """Kubernetes (KubeRay): render the RayJob that runs a spec."""


@k8s.command()
@click.argument("spec_path", metavar="SPEC")
@click.option("--image", required=True, help="Image of the head, workers and submitter (built from docker/Dockerfile).")
@click.option("--gpu-image", help="Image of the GPU workers (default: --image).")
@click.option("--store", "store_location", help="Results store, s3:// or gs:// (default: the spec's).")
@click.option("--name", help="The RayJob's name (default: ticketsweep-<sweep>).")
@click.option("--namespace", help="Namespace of every object (default: kubectl's).")
@click.option("--service-account", default="ticketsweep", show_default=True,
              help="ServiceAccount of the head and workers: its cloud identity reaches the store.")
@click.option("--aws-role-arn", help="Also render the ServiceAccount, annotated for this IAM role (EKS IRSA).")
@click.option("--gcp-service-account", help="Also render the ServiceAccount, annotated for this Google service "
                                            "account (GKE Workload Identity).")
@click.option("--auth-secret", default="ticketsweep-ray-auth", show_default=True,
              help="Secret holding Ray's auth token (key auth_token).")
@click.option("--worker-cpus", default=2, show_default=True, type=click.IntRange(min=1), help="CPUs per worker pod.")
@click.option("--worker-memory-gb", default=4.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Memory per worker pod, GiB.")
@click.option("-o", "--output", help="Write the manifests here (default: stdout).")
def render(spec_path: str, image: str, gpu_image: str | None, store_location: str | None, name: str | None,
           namespace: str | None, service_account: str, aws_role_arn: str | None, gcp_service_account: str | None,
           auth_secret: str, worker_cpus: int, worker_memory_gb: float, output: str | None) -> None:
    """Write the RayJob of a spec: the spec in a ConfigMap, the store on object storage, token auth on."""
    from orchestrator.deploy import k8s

    spec = spec_from(spec_path)
    opts = k8s.RenderOptions(image=image, gpu_image=gpu_image, store=store_location, name=name,
                                    namespace=namespace, service_account=service_account, aws_role_arn=aws_role_arn,
                                    gcp_service_account=gcp_service_account, auth_secret=auth_secret,
                                    worker_cpus=worker_cpus, worker_memory_gb=worker_memory_gb)
    try:
        text = k8s.to_yaml(k8s.render(spec_path, spec, opts), spec_path, k8s.plugin_note(spec))
    except k8s.RenderError as err:
        fail(str(err))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text)
    except OSError as err:
        fail(f"-o {output}: cannot write ({err.strerror or err})")
    click.echo(f"wrote {output}", err=True)


COMMANDS = (cancel, logs, k8s)
