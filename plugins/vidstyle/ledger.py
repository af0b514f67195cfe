"""The processing ledger: one small blob per video content version, in the store itself.

It lives beside the videos rather than in Airflow's database, so "was this video processed?"
survives Airflow restarts and database resets, and the watcher, the backlog sweep and the
processing runs all agree on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pendulum

from vidstyle.blobs import BlobStore
from vidstyle.layout import Layout, Video

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


class Ledger:
    def __init__(self, store: BlobStore, layout: Layout) -> None:
        self.store, self.layout = store, layout

    def known_ids(self) -> set[str]:
        return known_ids(self.layout, (p.name for p in self.store.list(state_prefix(self.layout))))

    def get(self, video_id: str) -> dict | None:
        try:
            return self.store.read_json(self.layout.state(video_id))
        except FileNotFoundError:
            return None

    def mark(self, video: Video, status: str, **fields) -> dict:
        entry = (self.get(video.video_id) or {}) | video.to_dict() | fields
        entry |= {"status": status, "updated_at": pendulum.now("UTC").to_iso8601_string()}
        self.store.write_json(self.layout.state(video.video_id), entry)
        return entry


def state_prefix(layout: Layout) -> str:
    return layout.state("")[: -len(".json")]


def known_ids(layout: Layout, names: Iterable[str]) -> set[str]:
    """Video ids from the ledger's blob names."""
    prefix = state_prefix(layout)
    return {n[len(prefix):-len(".json")] for n in names if n.startswith(prefix) and n.endswith(".json")}


def unprocessed(videos: Iterable[Video], known: set[str]) -> list[Video]:
    """Videos whose content version has no ledger entry, oldest upload first."""
    fresh = {v.video_id: v for v in videos if v.video_id not in known}
    return sorted(fresh.values(), key=lambda v: (v.last_modified, v.blob))


def backlog(videos: Iterable[Video], ledger: Ledger, start: datetime, end: datetime,
            reprocess: bool = False) -> list[tuple[Video, bool]]:
    """Videos uploaded in [start, end) still to process, each with whether it is a re-run.

    Never processed: picked. Failed before: picked as a re-run. Queued, running or succeeded:
    left alone, unless ``reprocess`` asks for everything again.
    """
    picked = []
    for video in sorted(videos, key=lambda v: (v.last_modified, v.blob)):
        if not start <= datetime.fromisoformat(video.last_modified) < end:
            continue
        entry = ledger.get(video.video_id)
        if reprocess or (entry and entry.get("status") == FAILED):
            picked.append((video, bool(entry) or reprocess))
        elif entry is None:
            picked.append((video, False))
    return picked
