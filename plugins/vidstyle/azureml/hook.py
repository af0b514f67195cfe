"""AzureMLHook: an authenticated MLClient for the workspace an Airflow connection names.

The connection is the Azure provider's generic ``azure`` type. Its extra names the workspace
(``subscriptionId``, ``resource_group_name``, ``workspace_name``) and, optionally, who signs in:
a service principal (login = client id, password = secret, extra ``tenantId``) or, by default,
DefaultAzureCredential: a managed identity (``managed_identity_client_id`` for a user-assigned
one), workload identity, environment variables or the az CLI login. No key is ever needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

WORKSPACE_FIELDS = ("subscriptionId", "resource_group_name", "workspace_name")


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

    def get_credential(self, extra: dict[str, Any], login: str | None, password: str | None) -> TokenCredential:
        from azure.identity import ClientSecretCredential, DefaultAzureCredential

        tenant = extra.get("tenantId")
        if login and password and tenant:
            self.log.info("Azure ML: signing in as service principal %s", login)
            return ClientSecretCredential(tenant_id=tenant, client_id=login, client_secret=password)
        kwargs: dict[str, Any] = {}
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
        from azure.ai.ml import MLClient

        conn = self.check()
        extra = conn.extra_dejson
        return MLClient(self.get_credential(extra, conn.login, conn.password), extra["subscriptionId"],
                        extra["resource_group_name"], extra["workspace_name"])
