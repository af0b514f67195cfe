"""The processing ledger: one small blob per video content version, in the store itself.

It lives beside the videos rather than in Airflow's database, so "was this video processed?"
survives Airflow restarts and database resets, and the watcher, the backlog sweep and the
processing runs all agree on it.

An entry keeps, for one version of one video:
- ``outputs``: per *output* (the parameters that change the result: style, height, CRF,
  output prefix), its state and the run that decided it. A failed run for another style never
  touches the default output's success;
- ``runs``: per Airflow run, its output, state and error;
- ``history``: every event in order (the last ``HISTORY`` of them).
The top-level ``status`` is the default output's, what the watcher and the sweep go by.
Every write is conditional on the blob's ETag, so runs of one video updating it at the same
moment never lose each other's update.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from datetime import datetime

import pendulum

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.identity import OutputSpec, Video
from vidstyle.pipeline.layout import Layout

QUEUED, RUNNING, SUCCEEDED, FAILED, SUPERSEDED = "queued", "running", "succeeded", "failed", "superseded"
ACTIVE = frozenset({QUEUED, RUNNING})
HISTORY = 200
WRITE_TRIES = 30


class LedgerConflict(RuntimeError):
    """The entry kept changing under us (many runs writing one video's entry at once)."""


def _now() -> str:
    return pendulum.now("UTC").to_iso8601_string()


class Ledger:
    def __init__(self, store: BlobStore, layout: Layout) -> None:
        self.store, self.layout = store, layout

    def known_ids(self) -> set[str]:
        return known_ids(self.layout, (p.name for p in self.store.list(state_prefix(self.layout))))

    def entries(self) -> list[dict]:
        """Every entry (for reconciling): small blobs, read one by one."""
        return [e for i in sorted(self.known_ids()) if (e := self.get(i))]

    def get(self, video_id: str) -> dict | None:
        entry = self.store.read_json_versioned(self.layout.state(video_id))[0]
        return upgrade(entry) if entry else None

    def update(self, video: Video, change: Callable[[dict], None]) -> dict:
        """Read, change, write back only if nobody wrote in between; else read again and retry."""
        blob = self.layout.state(video.video_id)
        for attempt in range(WRITE_TRIES):
            entry, etag = self.store.read_json_versioned(blob)
            entry = upgrade(entry) if entry else {"video": video.to_dict(), "status": None, "outputs": {}, "runs": {},
                                                  "history": []}
            entry["video"] = entry.get("video") or video.to_dict()
            change(entry)
            entry["updated_at"] = _now()
            entry["history"] = entry["history"][-HISTORY:]
            if self.store.write_json_if(blob, entry, etag):
                return entry
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # a burst of writers spreads out
        raise LedgerConflict(f"ledger entry {blob} kept changing; gave up after {WRITE_TRIES} tries")

    def record(self, video: Video, run_id: str, status: str, output: OutputSpec, is_default: bool,
               **fields) -> dict:
        """One run's new state: its run record, its output's state (unless that would lose what
        another run established, see ``_supersedes``), the history, and the top-level status
        when the output is the installation's default one."""
        def change(entry: dict) -> None:
            now = _now()
            run = entry["runs"].setdefault(run_id, {"output": output.key, "started_at": now})
            if status == QUEUED and run.get("status") not in (None, QUEUED):
                return  # the run got there first (running or ended): its news stands
            run.update({"status": status, "updated_at": now, **fields})
            current = entry["outputs"].setdefault(output.key, {"params": output.to_dict()})
            if _supersedes(current, run_id, status):
                current.update({"status": status, "run_id": run_id, "updated_at": now,
                                **{k: fields[k] for k in ("outputs", "error") if k in fields}})
            if is_default:
                entry["status"], entry["run_id"] = current["status"], current["run_id"]
            entry["history"].append({"at": now, "run_id": run_id, "output": output.key, "status": status,
                                     **({"error": fields["error"]} if fields.get("error") else {})})

        return self.update(video, change)

    def end_run(self, video: Video, run_id: str, status: str, error: str) -> dict:
        """A run found ended without saying so (killed, lost): its own records only."""
        entry = self.get(video.video_id) or {}
        key = entry.get("runs", {}).get(run_id, {}).get("output")
        params = entry.get("outputs", {}).get(key, {}).get("params") if key else None
        spec = OutputSpec(**params) if params else OutputSpec(style="?")
        return self.record(video, run_id, status, spec, is_default=entry.get("run_id") == run_id, error=error)


def upgrade(entry: dict) -> dict:
    """An entry as this version writes it. Entries from before per-output records (one status
    per video, the video's fields at the top) keep their status, so a video processed then is
    not processed again, and go into the history whole."""
    if "runs" in entry:
        return entry
    video = {k: entry[k] for k in ("container", "blob", "version", "last_modified", "size", "etag", "video_id")
             if k in entry}
    return {"video": entry.get("video") or video, "status": entry.get("status"), "run_id": entry.get("run_id"),
            "outputs": {}, "runs": {}, "history": [{"at": entry.get("updated_at"), "status": entry.get("status"),
                                                    "earlier_format": entry}]}


_RANK = {SUCCEEDED: 3, QUEUED: 2, RUNNING: 2, FAILED: 1, SUPERSEDED: 1, None: 0}


def _supersedes(current: dict, run_id: str, status: str) -> bool:
    """Does a run's news replace what an output's entry says? Its own earlier news, yes; a
    success, yes; otherwise only if it does not rank below it: a result in place outranks a run
    in flight, which outranks a failure, so a failed manual run never erases a success and a
    run that failed at once never hides another run still working on the same output."""
    if current.get("run_id") in (None, run_id) or status == SUCCEEDED:
        return True
    return _RANK[status] >= _RANK[current.get("status")]


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

    Never processed with the default output (no entry, or only other outputs tried): picked.
    Its default output failed: picked as a re-run. Queued, running, succeeded, or superseded by
    a newer upload: left alone, unless ``reprocess`` asks for everything again. A re-run gets a
    run id of its own (the plain one may exist already)."""
    picked = []
    for video in sorted(videos, key=lambda v: (v.last_modified, v.blob)):
        if not start <= datetime.fromisoformat(video.last_modified) < end:
            continue
        entry = ledger.get(video.video_id)
        if reprocess or entry is None or entry.get("status") in (None, FAILED):
            picked.append((video, entry is not None or reprocess))
    return picked

