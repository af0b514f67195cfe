"""The processing ledger: one small blob per video content version, in the store itself.

It lives beside the videos rather than in Airflow's database, so "was this video processed?"
survives Airflow restarts and database resets, and the watcher, the backlog sweep and the
processing runs all agree on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pendulum

from vidstyle.blobs import BlobStore
from vidstyle.layout import Layout, Video

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


class Ledger:
    def __init__(self, store: BlobStore, layout: Layout) -> None:
        self.store, self.layout = store, layout

    def known_ids(self) -> set[str]:
        prefix = self.layout.state("")[: -len(".json")]
        return {p.name[len(prefix):-len(".json")] for p in self.store.list(prefix) if p.name.endswith(".json")}

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


def unprocessed(videos: Iterable[Video], known: set[str]) -> list[Video]:
    """Videos whose content version has no ledger entry, oldest upload first."""
    fresh = {v.video_id: v for v in videos if v.video_id not in known}
    return sorted(fresh.values(), key=lambda v: (v.last_modified, v.blob))
