"""Short-lived links to one blob for a browser: read-only to play a result, create/write-only to
upload a video straight to storage (large files never pass through the API server).

The link is signed the way the connection allows: with a user-delegation key where the
connection is an identity (managed identity, service principal: no key exists to leak), else
with the account key (a service SAS for that one blob; the key itself never leaves the server).
A connection that is itself a SAS can sign nothing: links are refused with that reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.storage.blob import BlobSasPermissions, BlobServiceClient, CorsRule, generate_blob_sas

from vidstyle.hooks.blob_store import BlobStore

READ = BlobSasPermissions(read=True)
UPLOAD = BlobSasPermissions(create=True, write=True)  # no read, no delete, no list
READ_MINUTES, UPLOAD_MINUTES = 15, 60
CLOCK_SKEW = timedelta(minutes=5)  # a link starts a little in the past: clocks differ


class LinksUnavailable(RuntimeError):
    """The connection cannot sign links (it is a SAS itself, or anonymous)."""


@dataclass(frozen=True)
class BlobLink:
    url: str
    expires: datetime
    kind: str  # "user delegation" or "service (account key)"


class _DelegationKeys:
    """One user-delegation key per service, fetched again well before it expires (a key is good
    for up to 7 days; asking Entra for one per link would add a round trip to every page)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[object, datetime]] = {}

    def get(self, client: BlobServiceClient, needed_until: datetime):
        now = datetime.now(UTC)
        with self._lock:
            key, valid_until = self._keys.get(client.url, (None, now))
            if key is None or valid_until < needed_until + timedelta(minutes=5):
                valid_until = now + timedelta(hours=6)
                key = client.get_user_delegation_key(now - CLOCK_SKEW, valid_until)
                self._keys[client.url] = (key, valid_until)
            return key


_delegation = _DelegationKeys()


def _signing(client: BlobServiceClient, expires: datetime) -> tuple[dict, str]:
    credential = client.credential
    account_key = getattr(credential, "account_key", None)
    if account_key:
        return {"account_key": account_key}, "service (account key)"
    if hasattr(credential, "get_token"):
        return {"user_delegation_key": _delegation.get(client, expires)}, "user delegation"
    raise LinksUnavailable("the storage connection is a SAS or anonymous: it cannot sign links for the browser; "
                           "give the API server an identity (or a key) on the storage account")


def blob_link(store: BlobStore, blob: str, permission: BlobSasPermissions, minutes: int) -> BlobLink:
    """A URL for exactly ``blob`` in the store's container, with ``permission``, for ``minutes``."""
    client = store.hook.blob_service_client
    now = datetime.now(UTC)
    expires = now + timedelta(minutes=minutes)
    signer, kind = _signing(client, expires)
    sas = generate_blob_sas(client.account_name, store.container, blob, permission=permission, expiry=expires,
                            start=now - CLOCK_SKEW, **signer)
    base = client.get_blob_client(store.container, blob).url.split("?", 1)[0]  # the name quoted, no credential
    return BlobLink(f"{base}?{sas}", expires, kind)


def read_link(store: BlobStore, blob: str) -> BlobLink:
    return blob_link(store, blob, READ, READ_MINUTES)


def upload_link(store: BlobStore, blob: str) -> BlobLink:
    return blob_link(store, blob, UPLOAD, UPLOAD_MINUTES)


def allow_browser_uploads(store: BlobStore, origins: list[str]) -> None:
    """CORS on the blob service so a page served from ``origins`` may PUT blocks with a link
    (reads by <video> and <img> need none). For stores the project runs itself (Azurite); on
    Azure the deployment sets it (docs/videos-page.md)."""
    rule = CorsRule(origins, ["GET", "HEAD", "PUT", "OPTIONS"], allowed_headers=["*"], exposed_headers=["*"],
                    max_age_in_seconds=3600)
    service = store.hook.blob_service_client
    current = service.get_service_properties().get("cors") or []
    if any(sorted(r.allowed_origins.split(",")) == sorted(origins) for r in current):
        return
    service.set_service_properties(cors=[*current, rule][-5:])  # the service keeps at most five rules
