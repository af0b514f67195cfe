"""The daily sweep (``video_backlog``): runs that ended without saying so, then the day's videos still to do."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.identity import find_videos
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import Ledger, backlog
from vidstyle.pipeline.reconcile import reconcile
from vidstyle.pipeline.settings import Settings


def _ledger(settings: Settings) -> tuple[BlobStore, Ledger]:
    store = BlobStore(settings.wasb_conn_id, settings.container)
    return store, Ledger(store, Layout(settings))


def reconcile_ledger(settings: Settings, is_live: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Runs the ledger calls active that Airflow no longer runs become failed (picked up below)."""
    return reconcile(_ledger(settings)[1], is_live)


def videos_to_process(settings: Settings, start: datetime, end: datetime, reprocess: bool) -> list[dict]:
    """Videos uploaded in [start, end) with no successful run yet (or all, re-processing), each
    with whether it needs a run id of its own (a re-run)."""
    store, ledger = _ledger(settings)
    picked = backlog(find_videos(store, settings.input_prefix, settings.suffixes), ledger, start, end, reprocess)
    return [v.to_dict() | {"rerun": rerun} for v, rerun in picked]
