"""Arrivals by event: the ``video_uploads`` asset, watched through the queue Event Grid feeds, and
the events a ``video_arrivals`` run was started for."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger

from vidstyle.airflow.triggers.blob_events import StorageQueueEventTrigger
from vidstyle.pipeline.settings import ARRIVALS, Settings, arrivals_conn_id, arrivals_queue

ASSET_NAME = "video_uploads"


def watcher_trigger(settings: Settings) -> BaseEventTrigger:
    """The trigger that waits on the arrivals queue, as the ``arrivals`` setting chooses."""
    if settings.arrivals == "storage_queue":
        return StorageQueueEventTrigger(arrivals_conn_id(settings), arrivals_queue(settings), settings.container,
                                        settings.input_prefix, settings.video_suffixes,
                                        settings.arrivals_poll_seconds)
    if settings.arrivals == "service_bus":
        from airflow.providers.microsoft.azure.triggers.message_bus import AzureServiceBusQueueTrigger

        return AzureServiceBusQueueTrigger(queues=[arrivals_queue(settings)],
                                           azure_service_bus_conn_id=arrivals_conn_id(settings),
                                           poll_interval=settings.arrivals_poll_seconds)
    raise ValueError(f"arrivals = {settings.arrivals!r} has no queue to watch (one of {', '.join(ARRIVALS)})")


def uploads_asset(settings: Settings) -> Asset:
    """Uploads under the input prefix, one asset event per blob-created event."""
    return Asset(name=ASSET_NAME, uri=f"x-vidstyle://uploads/{settings.container}/{settings.input_prefix}",
                 watchers=[AssetWatcher(name=f"{ASSET_NAME}_{settings.arrivals}", trigger=watcher_trigger(settings))])


def payloads(context: Any, asset: Asset) -> list[dict]:
    """The payloads of the asset events this run was started for, and of any that came after
    its start: a DAG at max_active_runs consumes only the oldest waiting event per run and the
    rest wait for the next upload (apache/airflow#56050); reading them here leaves none behind.
    A payload seen twice counts once (run ids make a video seen twice harmless anyway)."""
    events = list(context["triggering_asset_events"].get(asset, []))
    after = context["dag_run"].run_after
    if after is not None:
        events += list(context["inlet_events"][asset].after(after.isoformat()))
    seen: dict[str, dict] = {}
    for event in events:
        payload = (event.extra or {}).get("payload")
        if isinstance(payload, dict):
            seen.setdefault(json.dumps(payload, sort_keys=True), payload)
    return list(seen.values())
