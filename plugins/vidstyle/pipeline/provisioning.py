"""Create or update what the Azure ML backend needs, idempotently: run it after every change.

    vidstyle provision                        # datastore, cluster and environment
    vidstyle provision --only environment --dry-run

- datastore: the pipeline's container, identity-based (no key or SAS stored in the workspace);
- cluster: the GPU compute cluster from the ``azureml_*`` settings, scaling to 0 nodes when idle,
  with a managed identity the jobs use to read and write the chunk folders;
- environment: the scoring image, built by Azure ML from images/scoring/Dockerfile, uv.lock and
  scoring/ of the checkout this runs from; its version is a hash of those files
  (vidstyle.pipeline.environment), recorded in the pipeline's storage, where every worker reads
  the version it pins: an unchanged scorer is never rebuilt and a rolled-back one is used again.

Airflow's ``scoring`` pool is not made here: this may run on an operator's laptop, whose Airflow
config names another database than the deployment's. ``vidstyle pool``, run where Airflow runs
(airflow-init, the Helm migration job, ``vidstyle cluster``), makes it from the same settings;
this prints the size it will have.

Anything already as configured is left alone, so running it twice changes nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vidstyle.hooks.azureml import AzureMLHook
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.environment import build_files, environment_version, record_environment
from vidstyle.pipeline.settings import Settings, pool_slots

RESOURCES = ("datastore", "cluster", "environment")


class ProvisionError(RuntimeError):
    """The workspace holds something this command must not silently replace."""


def storage_account(settings: Settings) -> str:
    """The account behind the pipeline's WASB connection: the datastore must read the same blobs."""
    return BlobStore(settings.wasb_conn_id, settings.container).account_name


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
    """Copy the scoring image's Dockerfile and sources into ``folder``; returns their version."""
    for rel, path in build_files():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / rel)
    return environment_version()


def environment_spec(settings: Settings, context: Path, version: str) -> Any:
    from azure.ai.ml.entities import BuildContext, Environment

    return Environment(name=settings.azureml_environment, version=version,
                       build=BuildContext(path=str(context), dockerfile_path="Dockerfile"),
                       description="video-style-transfer scorer (python -m scoring), from images/scoring")


def _tier(cluster: Any) -> str:
    return (cluster.tier or "").replace("_", "").lower()


def _identity(cluster: Any) -> tuple[str, tuple[str, ...]]:
    identity = cluster.identity
    if identity is None:
        return "none", ()
    kind = (identity.type or "").replace("_", "").lower()
    ids = tuple(sorted((i.resource_id or "").lower() for i in (identity.user_assigned_identities or [])))
    return kind, ids


def _same_scale(existing: Any, wanted: Any) -> bool:
    return (existing.min_instances, existing.max_instances, int(existing.idle_time_before_scale_down or 0)) == (
        wanted.min_instances, wanted.max_instances, int(wanted.idle_time_before_scale_down))


def ensure_datastore(hook: AzureMLHook, wanted: Any) -> str:
    existing = hook.get_datastore(wanted.name)
    if existing is None:
        hook.create_datastore(wanted)
        return "created"
    if (existing.account_name, existing.container_name) == (wanted.account_name, wanted.container_name):
        return "unchanged"
    raise ProvisionError(f"datastore {wanted.name} points at {existing.account_name}/{existing.container_name}, "
                         f"not {wanted.account_name}/{wanted.container_name}; set azureml_datastore to another "
                         "name or remove the old datastore")


def ensure_cluster(hook: AzureMLHook, wanted: Any) -> str:
    existing = hook.get_compute(wanted.name)
    if existing is None:
        hook.create_or_update_compute(wanted)
        return "created"
    # Azure ML changes none of these in place (and the jobs' data access hangs on the identity):
    # replacing the cluster is the user's call.
    for what, have, want in (("VM size", (existing.size or "").lower(), wanted.size.lower()),
                             ("tier", _tier(existing), _tier(wanted)),
                             ("identity", _identity(existing), _identity(wanted))):
        if have != want:
            raise ProvisionError(f"cluster {wanted.name} has {what} {_shown(have)}, not {_shown(want)}: delete it "
                                 "(az ml compute delete) or set azureml_compute to a new name")
    if _same_scale(existing, wanted):
        return "unchanged"
    hook.create_or_update_compute(wanted)
    return "updated"


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        kind, ids = value
        return kind + (f" ({', '.join(ids)})" if ids else "")
    return str(value)


def ensure_environment(hook: AzureMLHook, wanted: Any) -> str:
    if hook.get_environment(wanted.name, wanted.version) is not None:
        return "unchanged"
    hook.create_environment(wanted)  # Azure ML builds the image on first use
    return "created"


def provision(hook: AzureMLHook | None, settings: Settings, only: tuple[str, ...] = RESOURCES,
              dry_run: bool = False) -> dict[str, str]:
    """Bring each resource in ``only`` to the configured state; returns what happened to each.
    The environment's version is recorded for the workers once the workspace has it."""
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
            outcome[kind] = ensure[kind](hook, spec)
            if kind == "environment":
                record_environment(settings, spec.version)  # what every worker's runs now pin
            print(f"{kind} {described}: {outcome[kind]}", flush=True)
    print(f"pool {settings.scoring_pool}: {pool_slots(settings)} slots, counting deferred tasks (made by "
          "`vidstyle pool` where Airflow runs)", flush=True)
    return outcome
