"""From blob-created events to the videos to start: each event names a blob; the store says what
it holds now and the ledger whether that content has a run already. Delivery is at least once,
so the same event twice, an event for a blob replaced or deleted since, and an event for content
already processed all end here: in one run, or in a clear skip."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.hooks.queue_store import QueueStore, poison_queue
from vidstyle.pipeline.arrival_events import (
    BlobCreated,
    MalformedEvent,
    describe,
    event_grid_event,
    queue_message,
    read_message,
    why_not_a_video,
)
from vidstyle.pipeline.identity import current_video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import Ledger
from vidstyle.pipeline.settings import Settings, arrivals_conn_id, arrivals_queue

log = logging.getLogger(__name__)


def events_of(payloads: Iterable[dict]) -> list[BlobCreated]:
    """The blob-created events in asset events' payloads: the project's trigger hands the event
    parsed; the Service Bus trigger hands the message body (``message``), parsed here."""
    events: list[BlobCreated] = []
    for payload in payloads:
        if "message" in payload:
            try:
                events += read_message(payload["message"])
            except MalformedEvent as exc:
                log.warning("dropped a message from %s: %s", payload.get("queue", "the queue"), exc)
        elif payload.get("container") and payload.get("blob"):
            events.append(BlobCreated.from_dict(payload))
        else:
            log.warning("dropped an asset event that names no blob: %s", payload)
    return events


def new_videos(store: BlobStore, ledger: Ledger, events: Iterable[BlobCreated], settings: Settings) -> list[dict]:
    """The videos to start, oldest upload first: each event's blob as it is now, once, unless the
    ledger knows that content already. Reasons for every skip are logged."""
    found: dict[str, dict] = {}
    for event in events:
        why = why_not_a_video(event, settings.container, settings.input_prefix, settings.suffixes)
        if why:
            log.info("skipped %s: %s", describe(event), why)
            continue
        try:
            video = current_video(store, event.blob)
        except FileNotFoundError:
            log.info("skipped %s: deleted before its run", describe(event))
            continue
        if event.etag and event.etag.strip('"') != video.etag.strip('"'):
            log.info("%s was replaced since this event: its content now is taken (version %s)", describe(event),
                     video.version)
        if video.video_id in found:
            continue
        entry = ledger.get(video.video_id)
        if entry is not None:
            log.info("skipped %s: this content (%s) is known already (%s)", describe(event), video.video_id,
                     entry.get("status"))
            continue
        found[video.video_id] = video.to_dict()
    return sorted(found.values(), key=lambda v: (v["last_modified"], v["blob"]))


def ledger_of(settings: Settings) -> tuple[BlobStore, Ledger]:
    store = BlobStore(settings.wasb_conn_id, settings.container)
    return store, Ledger(store, Layout(settings))


def ensure_queue(settings: Settings) -> list[str]:
    """The arrivals queue and its poison queue on the storage account; the names created."""
    if settings.arrivals != "storage_queue":
        return []
    queues = QueueStore(arrivals_conn_id(settings))
    name = arrivals_queue(settings)
    return [q for q in (name, poison_queue(name)) if queues.ensure(q)]


def posts_events(store: BlobStore, settings: Settings) -> bool:
    """Whether uploads must post their own event: a queue is watched and the store emits none
    (Azurite; on Azure, Event Grid does it)."""
    return settings.arrivals == "storage_queue" and store.account_name == "devstoreaccount1"


def announce(store: BlobStore, settings: Settings, blob: str) -> None:
    """Post the BlobCreated event Event Grid would write for ``blob``, as it writes it."""
    props = store.properties(blob)
    content_type = props.content_settings.content_type if props.content_settings else None
    event = event_grid_event(store.account_name, store.container, blob, str(props.etag), int(props.size or 0),
                             content_type or "application/octet-stream",
                             f"{store.hook.blob_service_client.url.rstrip('/')}/{store.container}/{blob}")
    QueueStore(arrivals_conn_id(settings)).send(arrivals_queue(settings), queue_message(event))
