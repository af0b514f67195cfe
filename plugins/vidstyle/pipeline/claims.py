"""Output claims: runs that would write the same result take turns.

Two runs of one video with the same style, height, quality and output prefix would write the
same result (and its manifest and preview); run together, one would silently overwrite the
other. So a run claims its result's path before it splits the video, and gives the claim back
once it has published (or failed). The claim is a small blob created only if absent (the
store's If-None-Match), so two runs asking at once cannot both get it. A run that finds
the claim held waits (its ``claim_output`` sensor reschedules, holding no worker slot) until
the holder's Airflow run has ended. A holder killed without giving the claim back is found
out that way: its run is no longer running, and the next run breaks the claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pendulum

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.layout import Layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    run_id: str
    video: str
    since: str


class OutputClaims:
    def __init__(self, store: BlobStore, layout: Layout) -> None:
        self.store, self.layout = store, layout

    def acquire(self, output: str, run_id: str, video: str, is_running: Callable[[str], bool]) -> Holder | None:
        """Claim ``output`` for ``run_id``; None when this run holds it now, else who does."""
        blob = self.layout.claim(output)
        for _ in range(5):  # a claim broken or given back between our read and our write: ask again
            if self.store.write_json_if(blob, {"output": output, "run_id": run_id, "video": video,
                                               "since": pendulum.now("UTC").to_iso8601_string()}, None):
                return None
            held, etag = self.store.read_json_versioned(blob)
            if held is None:
                continue
            holder = Holder(held["run_id"], held.get("video", "?"), held.get("since", "?"))
            if holder.run_id == run_id:
                return None  # ours already (a retried task)
            if is_running(holder.run_id):
                return holder
            if self.store.delete_if(blob, etag):
                log.warning("broke the claim on %s: run %s (since %s) is no longer running", output,
                            holder.run_id, holder.since)
        raise RuntimeError(f"could not claim {output}: the claim kept changing hands")

    def release(self, output: str, run_id: str) -> bool:
        """Give the claim back if this run holds it; True if it did."""
        blob = self.layout.claim(output)
        held, etag = self.store.read_json_versioned(blob)
        return bool(held and held.get("run_id") == run_id and self.store.delete_if(blob, etag))
