"""The pipeline's container in Azure Blob Storage, through the Azure provider's WasbHook: every
blob call the pipeline makes, with conditional writes for the ledger and the claims."""

from __future__ import annotations

import json
from pathlib import Path

from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobProperties


def parse_wasb(ref: str) -> tuple[str, str] | None:
    """(container, blob) of a ``wasb://container/path`` reference; None for anything else."""
    if not ref.startswith("wasb://"):
        return None
    container, _, blob = ref[len("wasb://"):].partition("/")
    return container, blob


class BlobChanged(RuntimeError):
    """The blob is no longer the version a run pinned."""


class BlobStore:
    """One container, reached through an Airflow connection (any auth the provider supports)."""

    def __init__(self, conn_id: str, container: str) -> None:
        self.hook = WasbHook(wasb_conn_id=conn_id)
        self.container = container
        self.bytes_read = self.bytes_written = 0  # what this store moved, for the manifest

    @property
    def account_name(self) -> str:
        """The storage account the connection reaches."""
        return self.hook.blob_service_client.account_name

    def traffic(self) -> dict[str, int]:
        return {"read": self.bytes_read, "written": self.bytes_written}

    @property
    def _container(self):
        return self.hook.blob_service_client.get_container_client(self.container)

    def ensure_container(self) -> None:
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass

    def list(self, prefix: str) -> list[BlobProperties]:
        """Blobs under a prefix; none when the container does not exist yet."""
        try:
            return list(self._container.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError:
            return []

    def properties(self, blob: str) -> BlobProperties:
        """A blob's properties (its name as given); FileNotFoundError when it does not exist."""
        try:
            props = self._container.get_blob_client(blob).get_blob_properties()
        except ResourceNotFoundError:
            raise FileNotFoundError(f"wasb://{self.container}/{blob} does not exist") from None
        props.name = blob
        return props

    def exists(self, blob: str) -> bool:
        return self.hook.check_for_blob(self.container, blob)

    def upload(self, path: Path, blob: str) -> None:
        self.hook.load_file(str(path), self.container, blob, overwrite=True)
        self.bytes_written += path.stat().st_size

    def download(self, blob: str, path: Path, etag: str = "") -> Path:
        """Streams to disk (no whole-file buffer in memory); with ``etag``, only those exact bytes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        pin = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            stream = self.hook.download(self.container, blob, **pin)
        except ResourceNotFoundError:
            raise FileNotFoundError(f"wasb://{self.container}/{blob} does not exist") from None
        except ResourceModifiedError:
            raise BlobChanged(f"wasb://{self.container}/{blob} changed since this run started; "
                              "the new content is a new video with a run of its own") from None
        with open(path, "wb") as f:
            self.bytes_read += stream.readinto(f)
        return path

    def write_json(self, blob: str, data: dict, indent: int | None = 2) -> None:
        text = json.dumps(data, indent=indent, separators=None if indent else (",", ":"))
        self.hook.load_string(text, self.container, blob, overwrite=True)
        self.bytes_written += len(text.encode())

    def read_json(self, blob: str) -> dict:
        try:
            data = self.hook.download(self.container, blob).readall()
        except ResourceNotFoundError:
            raise FileNotFoundError(f"wasb://{self.container}/{blob} does not exist") from None
        self.bytes_read += len(data)
        return json.loads(data)

    def read_json_versioned(self, blob: str) -> tuple[dict | None, str | None]:
        """(data, ETag) of a JSON blob, or (None, None) when it does not exist."""
        try:
            stream = self.hook.download(self.container, blob)
        except ResourceNotFoundError:
            return None, None
        data = stream.readall()
        self.bytes_read += len(data)
        return json.loads(data), stream.properties.etag

    def write_json_if(self, blob: str, data: dict, etag: str | None) -> bool:
        """Write only if the blob is still at ``etag`` (None: only if it does not exist yet).
        False when someone else wrote first: read again and retry."""
        text = json.dumps(data, indent=1)
        condition = ({"overwrite": True, "etag": etag, "match_condition": MatchConditions.IfNotModified} if etag
                     else {"overwrite": False})
        try:
            self.hook.load_string(text, self.container, blob, **condition)
        except (ResourceModifiedError, ResourceExistsError):
            return False
        self.bytes_written += len(text.encode())
        return True

    def delete_if(self, blob: str, etag: str) -> bool:
        """Delete only if the blob is still at ``etag``; False if it changed or is gone."""
        try:
            self._container.delete_blob(blob, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        names = [p.name for p in self.list(prefix)]
        for name in names:
            self._container.delete_blob(name)
        return len(names)
