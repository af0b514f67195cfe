"""Create or update what the Azure ML backend needs, idempotently: run it after every change.

    python -m vidstyle.azureml.provision              # datastore, cluster and environment
    python -m vidstyle.azureml.provision --only environment --dry-run

- datastore: the pipeline's container, identity-based (no key or SAS stored in the workspace);
- cluster: the GPU compute cluster from the ``azureml_*`` settings, scaling to 0 nodes when idle,
  with a managed identity the jobs use to read and write the chunk folders;
- environment: the scoring image, built by Azure ML from images/scoring/Dockerfile and scoring/;
  its version is a hash of those files, so an unchanged scorer is never rebuilt.

Anything already as configured is left alone, so running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError

from vidstyle.azureml.hook import AzureMLHook
from vidstyle.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[3]  # the repository: images/ and scoring/
DOCKERFILE = ROOT / "images" / "scoring" / "Dockerfile"
RESOURCES = ("datastore", "cluster", "environment")


class ProvisionError(RuntimeError):
    """The workspace holds something this command must not silently replace."""


def storage_account(settings: Settings) -> str:
    """The account behind the pipeline's WASB connection: the datastore must read the same blobs."""
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    return WasbHook(wasb_conn_id=settings.wasb_conn_id).blob_service_client.account_name


def datastore_spec(settings: Settings, account: str) -> Any:
    from azure.ai.ml.entities import AzureBlobDatastore

    # No credentials: jobs reach the blobs with their own identity (see azureml_job_identity).
    return AzureBlobDatastore(name=settings.azureml_datastore, account_name=account,
                              container_name=settings.container,
                              description="video-style-transfer work area (identity-based access)")


def cluster_spec(settings: Settings) -> Any:
    from azure.ai.ml.entities import AmlCompute, IdentityConfiguration, ManagedIdentityConfiguration

    if settings.azureml_tier not in ("low_priority", "dedicated"):
        raise ProvisionError(f"azureml_tier must be low_priority or dedicated, not {settings.azureml_tier!r}")
    if settings.azureml_compute_identity:
        identity = IdentityConfiguration(type="user_assigned", user_assigned_identities=[
            ManagedIdentityConfiguration(resource_id=settings.azureml_compute_identity)])
    else:
        identity = IdentityConfiguration(type="system_assigned")
    return AmlCompute(name=settings.azureml_compute, size=settings.azureml_vm_size,
                      min_instances=settings.azureml_min_nodes, max_instances=settings.azureml_max_nodes,
                      tier=settings.azureml_tier, idle_time_before_scale_down=settings.azureml_idle_seconds,
                      identity=identity, description="video-style-transfer scoring (scales to zero)")


def stage_build_context(folder: Path) -> str:
    """Copy the scoring image's Dockerfile and sources into ``folder``; returns their content hash."""
    shutil.copyfile(DOCKERFILE, folder / "Dockerfile")
    shutil.copytree(ROOT / "scoring", folder / "scoring",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def environment_spec(settings: Settings, context: Path, version: str) -> Any:
    from azure.ai.ml.entities import BuildContext, Environment

    return Environment(name=settings.azureml_environment, version=version,
                       build=BuildContext(path=str(context), dockerfile_path="Dockerfile"),
                       description="video-style-transfer scorer (python -m scoring), from images/scoring")


def _same_scale(existing: Any, wanted: Any) -> bool:
    def norm(tier: str | None) -> str:
        return (tier or "").replace("_", "").lower()

    return (existing.min_instances, existing.max_instances, norm(existing.tier),
            int(existing.idle_time_before_scale_down or 0)) == (
        wanted.min_instances, wanted.max_instances, norm(wanted.tier), int(wanted.idle_time_before_scale_down))


def ensure_datastore(client: Any, wanted: Any) -> str:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        existing = client.datastores.get(wanted.name)
    except ResourceNotFoundError:
        client.datastores.create_or_update(wanted)
        return "created"
    if (existing.account_name, existing.container_name) == (wanted.account_name, wanted.container_name):
        return "unchanged"
    raise ProvisionError(f"datastore {wanted.name} points at {existing.account_name}/{existing.container_name}, "
                         f"not {wanted.account_name}/{wanted.container_name}; set azureml_datastore to another "
                         "name or remove the old datastore")


def ensure_cluster(client: Any, wanted: Any) -> str:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        existing = client.compute.get(wanted.name)
    except ResourceNotFoundError:
        client.compute.begin_create_or_update(wanted).result()
        return "created"
    if (existing.size or "").lower() != wanted.size.lower():
        # Azure ML cannot resize a cluster's VMs in place; replacing it is the user's call.
        raise ProvisionError(f"cluster {wanted.name} has VM size {existing.size}, not {wanted.size}: delete it "
                             "(az ml compute delete) or set azureml_compute to a new name")
    if _same_scale(existing, wanted):
        return "unchanged"
    client.compute.begin_create_or_update(wanted).result()
    return "updated"


def ensure_environment(client: Any, wanted: Any) -> str:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        client.environments.get(wanted.name, version=wanted.version)
        return "unchanged"
    except ResourceNotFoundError:
        client.environments.create_or_update(wanted)  # Azure ML builds the image on first use
        return "created"


def provision(client: Any, settings: Settings, only: tuple[str, ...] = RESOURCES,
              dry_run: bool = False) -> dict[str, str]:
    """Bring each resource in ``only`` to the configured state; returns what happened to each."""
    outcome: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="vidstyle-env-") as tmp:
        specs: dict[str, Any] = {}
        if "datastore" in only:
            specs["datastore"] = datastore_spec(settings, storage_account(settings))
        if "cluster" in only:
            specs["cluster"] = cluster_spec(settings)
        if "environment" in only:
            specs["environment"] = environment_spec(settings, Path(tmp), stage_build_context(Path(tmp)))
        ensure = {"datastore": ensure_datastore, "cluster": ensure_cluster, "environment": ensure_environment}
        for kind, spec in specs.items():
            described = f"{spec.name}" + (f":{spec.version}" if kind == "environment" else "")
            if dry_run:
                print(f"{kind} {described}: would be\n{json.dumps(spec._to_dict(), indent=2, default=str)}")
                outcome[kind] = "dry-run"
                continue
            outcome[kind] = ensure[kind](client, spec)
            print(f"{kind} {described}: {outcome[kind]}", flush=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=RESOURCES, help="a resource to handle (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the specs; contact nothing")
    a = p.parse_args(argv)
    settings = load_settings()
    try:
        client = None if a.dry_run else AzureMLHook(settings.azureml_conn_id).get_conn()
        provision(client, settings, tuple(a.only or RESOURCES), a.dry_run)
    except (ProvisionError, ValueError, AzureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
