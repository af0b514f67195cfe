"""The Storage Queue that Event Grid feeds, reached through the same Airflow connection as the
blobs: the WASB hook's own client and credential (a managed identity, a SAS, a connection string),
pointed at the account's queue endpoint. Every queue call the pipeline makes is here."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook, WasbHook
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueServiceClient
from azure.storage.queue.aio import QueueServiceClient as AsyncQueueServiceClient

AZURITE_PORTS = {10000: 10001}  # blob -> queue, Azurite's defaults


def poison_queue(queue: str) -> str:
    """Where messages that can never be read go (the ``-poison`` convention of Azure Functions)."""
    return f"{queue}-poison"


def queue_url(blob_url: str) -> str:
    """The account's queue endpoint from its blob endpoint (SAS query kept): ``*.blob.*`` becomes
    ``*.queue.*``; Azurite's blob port 10000 becomes its queue port 10001."""
    parts = urlsplit(blob_url)
    host = parts.hostname or ""
    if ".blob." in host:
        netloc = parts.netloc.replace(".blob.", ".queue.", 1)
    elif parts.port in AZURITE_PORTS:
        netloc = parts.netloc.replace(f":{parts.port}", f":{AZURITE_PORTS[parts.port]}")
    else:
        raise ValueError(f"cannot tell the queue endpoint of {parts.scheme}://{parts.netloc}: "
                         "not *.blob.* nor Azurite's port 10000")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _credential(credential: Any) -> Any:
    """The blob client's credential in a form the queue client takes (each SDK package has its
    own shared-key class; tokens and SAS credentials carry over as they are)."""
    if hasattr(credential, "account_name") and hasattr(credential, "account_key"):
        return {"account_name": credential.account_name, "account_key": credential.account_key}
    return credential


def _connection_string(extra: dict) -> str | None:
    """A connection string names its queue endpoint itself (Azurite's too, on any port)."""
    return extra.get("connection_string") or extra.get("extra__wasb__connection_string")


def queue_service(conn_id: str) -> QueueServiceClient:
    hook = WasbHook(wasb_conn_id=conn_id)
    if conn_str := _connection_string(hook.get_connection(conn_id).extra_dejson):
        return QueueServiceClient.from_connection_string(conn_str)
    blobs = hook.blob_service_client
    return QueueServiceClient(account_url=queue_url(blobs.url), credential=_credential(blobs.credential))


async def async_queue_service(conn_id: str) -> AsyncQueueServiceClient:
    """For the triggerer: the async client, on the async WASB hook's credential."""
    from airflow.providers.common.compat.connection import get_async_connection

    if conn_str := _connection_string((await get_async_connection(conn_id)).extra_dejson):
        return AsyncQueueServiceClient.from_connection_string(conn_str)
    blobs = await WasbAsyncHook(wasb_conn_id=conn_id).get_async_conn()
    return AsyncQueueServiceClient(account_url=queue_url(blobs.url), credential=_credential(blobs.credential))


class QueueStore:
    """The queues of one storage account, through a WASB connection."""

    def __init__(self, conn_id: str) -> None:
        self.client = queue_service(conn_id)

    def ensure(self, queue: str) -> bool:
        """Create the queue if missing; True when it was created."""
        try:
            self.client.create_queue(queue)
        except ResourceExistsError:
            return False
        return True

    def delete(self, queue: str) -> None:
        try:
            self.client.delete_queue(queue)
        except ResourceNotFoundError:
            pass

    def send(self, queue: str, text: str) -> None:
        self.client.get_queue_client(queue).send_message(text)

    def peek(self, queue: str, count: int = 32) -> list[str]:
        """Up to 32 messages' texts, left in the queue."""
        try:
            return [m.content for m in self.client.get_queue_client(queue).peek_messages(max_messages=count)]
        except ResourceNotFoundError:
            return []

    def length(self, queue: str) -> int:
        """Messages in the queue, visible or not (Azure's approximate count)."""
        try:
            return self.client.get_queue_client(queue).get_queue_properties().approximate_message_count or 0
        except ResourceNotFoundError:
            return 0

    def clear(self, queue: str) -> None:
        try:
            self.client.get_queue_client(queue).clear_messages()
        except ResourceNotFoundError:
            pass
