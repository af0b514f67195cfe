"""AzureMLHook: the Azure ML workspace an Airflow connection names, and every call made to it.

The connection is the Azure provider's generic ``azure`` type. Its extra names the workspace
(``subscriptionId``, ``resource_group_name``, ``workspace_name``) and, optionally, who signs in:
a service principal (login = client id, password = secret, extra ``tenantId``) or, by default,
DefaultAzureCredential: a managed identity (``managed_identity_client_id`` for a user-assigned
one), workload identity, environment variables or the az CLI login. No key is ever needed.
Another cloud is chosen the SDKs' own way: the extra's ``cloud`` (or azure-ai-ml's
AZUREML_CURRENT_CLOUD / ARM_CLOUD_METADATA_URL), the extra's ``authority`` (or azure-identity's
AZURE_AUTHORITY_HOST) and ``disable_instance_discovery`` for a private authority.

As in the Azure provider, the hook owns the client calls: jobs (get, submit, cancel, their run
history's error and times) and the assets provisioning manages (datastore, compute, environment).
azure-ai-ml loads on first use, so importing this module costs only Airflow's BaseHook.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

WORKSPACE_FIELDS = ("subscriptionId", "resource_group_name", "workspace_name")

# Azure ML job statuses (azure.ai.ml.operations._run_history_constants.JobStatus), by what they mean
# here. In the service's order: NotStarted, Starting, Provisioning, Preparing (the image build and
# environment set-up, before any node), Queued (waiting for a node), Running, Finalizing, and an end.
COMPLETED = "Completed"
FAILED = "Failed"
CANCELED = "Canceled"
CANCEL_REQUESTED = "CancelRequested"
NOT_RESPONDING = "NotResponding"  # the node stopped reporting; the service says it can recover
PAUSED = "Paused"
UNKNOWN = "Unknown"
PREPARING = "Preparing"  # building the image: no node yet, not billed; its own limit
QUEUED = frozenset({"NotStarted", "Starting", "Provisioning", "Queued"})  # waiting for a node: the queue timeout
ON_NODE = frozenset({"Running", "Finalizing"})  # on a node, billed: the job timeout
ENDED_BADLY = frozenset({FAILED, CANCELED})
ENDED = frozenset({COMPLETED, FAILED, CANCELED})
USER_ERROR = "UserError"  # the service's category for errors of the job's own making (vs SystemError)


class AzureMLCancelFailed(RuntimeError):
    """Azure ML did not take a cancel (403: no permission, 429: throttled, 5xx): the job may still
    run, and bill. Said, never taken as "already ended"."""


def _word(value: Any) -> str:
    """An azure-ai-ml enum (JobStatus, ProvisioningState) as the service's word: their ``str()``
    is 'ProvisioningState.FAILED', not 'Failed'."""
    return str(getattr(value, "value", value) or "")


def status_of(job: Any) -> str:
    """A job's status as the service's word ("Running"): azure-ai-ml 1.35.2 gives its JobStatus
    enum, whose ``str()`` is 'JobStatus.RUNNING' (the same trap as ProvisioningState)."""
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status) or UNKNOWN)


class AzureMLHook(BaseHook):
    """Interact with an Azure Machine Learning workspace through azure-ai-ml.

    :param azureml_conn_id: an ``azure`` connection whose extra names the workspace.
    """

    conn_name_attr = "azureml_conn_id"
    default_conn_name = "azureml_default"
    conn_type = "azure"
    hook_name = "Azure Machine Learning"

    def __init__(self, azureml_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.azureml_conn_id = azureml_conn_id
        self._client: MLClient | None = None
        self._credential: Any = None
        # One sign-in per hook, even when the trigger's poll and its on_kill both ask at once.
        self._connecting = threading.Lock()

    def get_credential(self, extra: dict[str, Any], login: str | None, password: str | None) -> TokenCredential:
        from azure.identity import ClientSecretCredential, DefaultAzureCredential

        tenant = extra.get("tenantId")
        # Another cloud's sign-in authority: the extra's ``authority``, else azure-identity's own
        # AZURE_AUTHORITY_HOST, else the public cloud's. A private cloud's authority is not in
        # Entra ID's instance list: ``disable_instance_discovery`` skips that check.
        common: dict[str, Any] = {}
        if extra.get("authority"):
            common["authority"] = extra["authority"]
        if extra.get("disable_instance_discovery"):
            common["disable_instance_discovery"] = True
        if login and password and tenant:
            self.log.info("Azure ML: signing in as service principal %s", login)
            return ClientSecretCredential(tenant_id=tenant, client_id=login, client_secret=password, **common)
        kwargs: dict[str, Any] = {k: v for k, v in common.items() if k == "authority"}
        if extra.get("managed_identity_client_id"):
            kwargs["managed_identity_client_id"] = extra["managed_identity_client_id"]
        if extra.get("workload_identity_tenant_id"):
            kwargs["workload_identity_tenant_id"] = extra["workload_identity_tenant_id"]
            kwargs["additionally_allowed_tenants"] = [extra["workload_identity_tenant_id"]]
        self.log.info("Azure ML: signing in with DefaultAzureCredential (managed identity first on Azure)")
        return DefaultAzureCredential(**kwargs)

    def check(self) -> Connection:
        """The connection, checked offline: it exists and names a workspace (ValueError if not)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.azureml_conn_id)
        except AirflowNotFoundException:
            raise ValueError(f"the azureml backend needs the Airflow connection {self.azureml_conn_id!r}, "
                             "which is not defined (docs/azure-ml.md)") from None
        missing = [f for f in WORKSPACE_FIELDS if not conn.extra_dejson.get(f)]
        if missing:
            raise ValueError(f"connection {self.azureml_conn_id!r} must name the workspace: "
                             f"set {', '.join(missing)} in its extra")
        return conn

    def get_conn(self) -> MLClient:
        """The workspace's MLClient, signed in once per hook."""
        with self._connecting:
            if self._client is None:
                self._client, self._credential = self._connect()
        return self._client

    def _connect(self) -> tuple[MLClient, TokenCredential]:
        from azure.ai.ml import MLClient

        conn = self.check()
        extra = conn.extra_dejson
        credential = self.get_credential(extra, conn.login, conn.password)
        # The cloud: the extra's ``cloud`` (AzureCloud, AzureChinaCloud, AzureUSGovernment, or one
        # that ARM_CLOUD_METADATA_URL describes), else azure-ai-ml's default (AZUREML_CURRENT_CLOUD).
        cloud = {"cloud": extra["cloud"]} if extra.get("cloud") else {}
        return MLClient(credential, extra["subscriptionId"], extra["resource_group_name"],
                        extra["workspace_name"], **cloud), credential

    def close(self) -> None:
        """Close the credential (its token cache and HTTP sessions); the next call signs in again."""
        credential, self._credential, self._client = self._credential, None, None
        if credential is not None and hasattr(credential, "close"):
            credential.close()

    # -- jobs ------------------------------------------------------------------------------------

    def get_job(self, name: str) -> Any | None:
        """The job, or None when the workspace has no job of that name (other errors raise)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.get_conn().jobs.get(name)
        except ResourceNotFoundError:
            return None

    def submit_job(self, job: Any) -> Any:
        """Create the job. azure-core retries a PUT whose answer was lost (a read timeout, a 5xx);
        Azure ML answers the repeat that a job of that name exists. A job of that name with the
        same Airflow run tag is this very submit, applied: it is returned, not refused."""
        from azure.core.exceptions import HttpResponseError

        try:
            return self.get_conn().jobs.create_or_update(job)
        except HttpResponseError as exc:
            existing = self.get_job(job.name)
            ours = (job.tags or {}).get("airflow_run_id")
            if existing is not None and ours and (existing.tags or {}).get("airflow_run_id") == ours:
                self.log.warning("Azure ML job %s: the submit's answer was lost (%s), but the service has the job: "
                                 "taken as submitted", job.name, exc.status_code or type(exc).__name__)
                return existing
            raise

    def cancel_job(self, name: str) -> bool:
        """Ask Azure ML to cancel a job: True when asked, False when it had already ended, is
        being cancelled or is gone. Any other answer (403, 429, 5xx) is logged and raised as
        AzureMLCancelFailed: the job may still be running, and billing."""
        from azure.core.exceptions import HttpResponseError

        job = self.get_job(name)
        if job is None or status_of(job) in ENDED or status_of(job) == CANCEL_REQUESTED:  # NotResponding: cancel it
            return False
        try:
            self.get_conn().jobs.begin_cancel(name)
        except HttpResponseError as exc:
            after = self.get_job(name)  # it may have ended meanwhile: that is not a failure
            if after is None or status_of(after) in ENDED or status_of(after) == CANCEL_REQUESTED:
                return False
            message = (f"Azure ML did not cancel job {name} (HTTP {exc.status_code}: {exc.reason or exc.message}); "
                       f"it is {status_of(after)} and may still bill: cancel it in Studio or with "
                       f"az ml job cancel -n {name}")
            self.log.error("%s", message)
            raise AzureMLCancelFailed(message) from exc
        return True

    def _run_details(self, name: str) -> Any:
        # The public SDK surfaces a job's error only inside jobs.stream(); this is what it reads.
        return self.get_conn().jobs._runs_operations.get_run_details(name)

    def job_failure(self, name: str) -> tuple[str | None, str]:
        """The job's error as its run history keeps it: (code, message), the code being the
        service's category (UserError, SystemError, ...). Never raises."""
        try:
            details = self._run_details(name)
            error = details.error.as_dict().get("error", {}) if details.error else {}
        except Exception as exc:  # the reason matters more than the details: keep going without them
            return None, f"(the job's error could not be read: {type(exc).__name__})"
        return error.get("code"), error.get("message") or "no error recorded; see the job's logs in Studio"

    def job_error(self, name: str) -> str:
        """The job's own error message, as Studio shows it; never raises."""
        code, message = self.job_failure(name)
        return f"{code}: {message}" if code else message

    def job_times(self, name: str) -> dict[str, float | None]:
        """When the job was created, started on a node and ended (Unix seconds), from its run
        history; None for what is not known. Never raises."""
        try:
            details = self._run_details(name)
        except Exception as exc:  # figures are a bonus: the chunk's result stands without them
            self.log.warning("Azure ML job %s: its run history could not be read (%s: %s); its figures are unknown",
                             name, type(exc).__name__, exc)
            return {"created": None, "started": None, "ended": None}

        def stamp(t: Any) -> float | None:
            return t.timestamp() if t else None

        return {"created": stamp(details.created_time_utc), "started": stamp(details.start_time_utc),
                "ended": stamp(details.end_time_utc)}

    # -- what provisioning manages ----------------------------------------------------------------

    def _get(self, operations: Any, *args: Any, **kwargs: Any) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return operations.get(*args, **kwargs)
        except ResourceNotFoundError:
            return None

    def get_datastore(self, name: str) -> Any | None:
        return self._get(self.get_conn().datastores, name)

    def create_datastore(self, datastore: Any) -> Any:
        return self.get_conn().datastores.create_or_update(datastore)

    def get_compute(self, name: str) -> Any | None:
        return self._get(self.get_conn().compute, name)

    def compute_problems(self, name: str) -> list[str]:
        """Why the cluster cannot give jobs nodes, in the service's words: missing, failed to
        provision (its provisioning errors), or failing to scale up (a quota too small for its
        VM size, say: Azure ML reports that in the cluster's own ``properties.errors``, which
        azure-ai-ml's AmlCompute does not carry, while the cluster stays Succeeded)."""
        from azure.core.exceptions import ResourceNotFoundError

        conn = self.check()
        try:  # the REST resource as the service sent it: azure-ai-ml's entity keeps only the first code
            rest = self.get_conn().compute._operation.get(conn.extra_dejson["resource_group_name"],
                                                          conn.extra_dejson["workspace_name"], name)
        except ResourceNotFoundError:
            return [f"compute cluster {name} does not exist in the workspace"]
        props = rest.properties
        problems = [_error_text(e) for e in (props.provisioning_errors or [])]
        problems += [_error_text(e) for e in (getattr(props.properties, "errors", None) or [])
                     if getattr(props, "properties", None) is not None]
        state = _word(props.provisioning_state)
        if state.lower() in ("failed", "canceled") and not problems:
            problems.append(f"compute cluster {name} is in provisioning state {state}")
        return problems

    def create_or_update_compute(self, compute: Any) -> Any:
        return self.get_conn().compute.begin_create_or_update(compute).result()

    def get_environment(self, name: str, version: str) -> Any | None:
        return self._get(self.get_conn().environments, name, version=version)

    def create_environment(self, environment: Any) -> Any:
        return self.get_conn().environments.create_or_update(environment)


def _error_text(error: Any) -> str:
    """An ErrorResponse of the REST API as "Code: message"."""
    detail = getattr(error, "error", None) or error
    code, message = getattr(detail, "code", None), getattr(detail, "message", None)
    return f"{code}: {message}" if code and message else str(code or message or detail)
