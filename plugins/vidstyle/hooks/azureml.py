"""AzureMLHook: the Azure ML workspace an Airflow connection names, and every call made to it.

The connection is the Azure provider's generic ``azure`` type. Its extra names the workspace
(``subscriptionId``, ``resource_group_name``, ``workspace_name``) and, optionally, who signs in:
a service principal (login = client id, password = secret, extra ``tenantId``) or, by default,
DefaultAzureCredential: a managed identity (``managed_identity_client_id`` for a user-assigned
one), workload identity, environment variables or the az CLI login. No key is ever needed.

As in the Azure provider, the hook owns the client calls: jobs (get, submit, cancel, their run
history's error and times) and the assets provisioning manages (datastore, compute, environment).
azure-ai-ml loads on first use, so importing this module costs only Airflow's BaseHook.
"""

from __future__ import annotations

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
                             "which is not defined (README: Azure ML)") from None
        missing = [f for f in WORKSPACE_FIELDS if not conn.extra_dejson.get(f)]
        if missing:
            raise ValueError(f"connection {self.azureml_conn_id!r} must name the workspace: "
                             f"set {', '.join(missing)} in its extra")
        return conn

    def get_conn(self) -> MLClient:
        """The workspace's MLClient, signed in once per hook."""
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
        return self.get_conn().jobs.create_or_update(job)

    def cancel_job(self, name: str) -> bool:
        """Ask Azure ML to cancel a job; False when it had already ended, is being cancelled
        or is gone."""
        from azure.core.exceptions import HttpResponseError

        try:
            job = self.get_job(name)
            if job is None or status_of(job) in ENDED or status_of(job) == CANCEL_REQUESTED:  # NotResponding: cancel it
                return False
            self.get_conn().jobs.begin_cancel(name)
        except HttpResponseError:
            return False
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
        except Exception:  # figures are a bonus: the chunk's result stands without them
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
        provision, or its provisioning errors (a quota too small for its VM size, say)."""
        compute = self.get_compute(name)
        if compute is None:
            return [f"compute cluster {name} does not exist in the workspace"]
        problems = [str(e) for e in (getattr(compute, "provisioning_errors", None) or [])]
        state = str(getattr(compute, "provisioning_state", "") or "")
        if state.lower() in ("failed", "canceled") and not problems:
            problems.append(f"compute cluster {name} is in provisioning state {state}")
        return problems

    def create_or_update_compute(self, compute: Any) -> Any:
        return self.get_conn().compute.begin_create_or_update(compute).result()

    def get_environment(self, name: str, version: str) -> Any | None:
        return self._get(self.get_conn().environments, name, version=version)

    def create_environment(self, environment: Any) -> Any:
        return self.get_conn().environments.create_or_update(environment)
