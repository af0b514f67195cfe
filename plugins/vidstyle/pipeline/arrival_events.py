"""Blob-created events as Event Grid delivers them, read and written.

Event Grid sends ``Microsoft.Storage.BlobCreated`` events in its own schema or in CloudEvents
1.0, one per message: to a Storage Queue as base64 of the JSON, to Service Bus as the JSON
itself. The subject names the blob: ``/blobServices/default/containers/<c>/blobs/<path>``.
Plain Python (no Airflow, no Azure SDK): the trigger, the DAG and the upload command share it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
# Microsoft's samples write the subject with a leading "/" (the blob storage page) and without one
# (the CloudEvents page's sample); both are read (tests/data/event_grid/README.md).
SUBJECT = re.compile(r"^/?blobServices/default/containers/(?P<container>[^/]+)/blobs/(?P<blob>.+)$")


class MalformedEvent(ValueError):
    """A message that is not a storage event at all: logged and moved aside, never retried."""


@dataclass(frozen=True)
class BlobCreated:
    """One blob written: what the pipeline needs of the event (the content is read from the store)."""

    container: str
    blob: str
    etag: str = ""
    size: int = 0
    event_id: str = ""
    event_time: str = ""
    api: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlobCreated:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def decode(text: str | bytes) -> list[dict]:
    """The events in one message: JSON (Service Bus, or a queue with plain text) or base64 of
    JSON (what Event Grid writes to a Storage Queue); an object or a list of them."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    data = _json(raw)
    if data is None:
        try:
            data = _json(base64.b64decode(raw.strip(), validate=True))
        except (binascii.Error, ValueError):
            data = None
    if data is None:
        raise MalformedEvent(f"not JSON, nor base64 of JSON: {_excerpt(raw)}")
    events = data if isinstance(data, list) else [data]
    if not events or not all(isinstance(e, dict) for e in events):
        raise MalformedEvent(f"not an Event Grid event (an object, or a list of them): {_excerpt(raw)}")
    return events


def blob_created(event: dict) -> BlobCreated | None:
    """The blob a BlobCreated event names, in either schema; None for another event type
    (BlobDeleted, a subscription's validation event); MalformedEvent when it is no event."""
    kind = event.get("eventType") or event.get("type")
    if not kind:
        raise MalformedEvent("not an Event Grid event: it has no eventType (nor a CloudEvents type)")
    if kind != BLOB_CREATED:
        return None
    subject = event.get("subject")
    if not isinstance(subject, str) or not subject:
        raise MalformedEvent(f"a {BLOB_CREATED} event without a subject (id {event.get('id')!r})")
    match = SUBJECT.match(subject)
    if not match:
        raise MalformedEvent(f"the subject {subject!r} names no blob (/blobServices/default/containers/C/blobs/P)")
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    return BlobCreated(container=match["container"], blob=match["blob"], etag=str(data.get("eTag") or ""),
                       size=int(data.get("contentLength") or 0), event_id=str(event.get("id") or ""),
                       event_time=str(event.get("eventTime") or event.get("time") or ""),
                       api=str(data.get("api") or ""))


def read_message(text: str | bytes) -> list[BlobCreated]:
    """Every BlobCreated event of one message (other event types left out)."""
    return [b for b in (blob_created(e) for e in decode(text)) if b is not None]


def why_not_a_video(event: BlobCreated, container: str, prefix: str, suffixes: tuple[str, ...]) -> str | None:
    """Why an event is none of the pipeline's business (logged, dropped), or None when it is."""
    if event.container != container:
        return f"another container ({event.container}, not {container})"
    if not event.blob.startswith(prefix):
        return f"outside the watched prefix {prefix}"
    if event.blob.endswith("/") or (event.size == 0 and event.api == "CreateDirectory"):
        return "a folder"
    if not event.blob.lower().endswith(suffixes):
        return f"not a video name (suffixes: {', '.join(suffixes)})"
    return None


def event_grid_event(account: str, container: str, blob: str, etag: str, size: int,
                     content_type: str = "application/octet-stream", blob_url: str = "") -> dict:
    """A BlobCreated event exactly as Event Grid writes it (Event Grid schema), for the stores
    that emit none (Azurite): the upload command and the tests post it."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "topic": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
                 f"Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": BLOB_CREATED,
        "id": str(uuid.uuid4()),
        "data": {"api": "PutBlob", "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
                 "eTag": etag, "contentType": content_type, "contentLength": size, "blobType": "BlockBlob",
                 "url": blob_url or f"https://{account}.blob.core.windows.net/{container}/{blob}",
                 "sequencer": f"{uuid.uuid4().int:032x}"[:32], "storageDiagnostics": {"batchId": str(uuid.uuid4())}},
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": now,
    }


def queue_message(event: dict) -> str:
    """An event as Event Grid puts it in a Storage Queue message: base64 of its JSON."""
    return base64.b64encode(json.dumps(event).encode()).decode()


def describe(event: BlobCreated) -> str:
    return f"wasb://{event.container}/{event.blob}" + (f" (event {event.event_id})" if event.event_id else "")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None


def _excerpt(raw: bytes, limit: int = 80) -> str:
    text = raw[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(raw) > limit else ""))
