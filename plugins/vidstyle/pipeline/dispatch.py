"""Starting processing runs: one ``video_stylize`` run per video version, never two."""

from __future__ import annotations

from typing import Any

from vidstyle.pipeline.identity import Video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import QUEUED, Ledger

PROCESSING_DAG = "video_stylize"


def run_request(video: dict, rerun_tag: str = "", **params: Any) -> dict:
    """Trigger arguments for one video at one content version: the run processes exactly that
    version (or fails saying it was replaced). The run id carries the upload time (the order
    runs are served in, see vidstyle.airflow.priority) and the version; a deliberate re-run of
    the same version adds a tag naming what asked for it."""
    run_id = Video.from_dict(video).run_id + (f"__re__{rerun_tag}" if rerun_tag else "")
    return {"trigger_run_id": run_id,
            "conf": {"video_blob": video["blob"], "video_version": video["version"],
                     **{k: v for k, v in params.items() if v is not None}}}


def record_queued(ledger: Ledger, layout: Layout, videos: list[dict], requests: list[dict]) -> list[str]:
    """Note started runs in the ledger, so the watcher stops seeing those videos as new. Called
    after the triggers (created, or skipped because the run already exists): a crash in between
    leaves the video "new", and the next attempt finds its run already there."""
    for video, request in zip(videos, requests, strict=True):
        spec = layout.default_output(request["conf"].get("style"))
        # A run that got there first (running or ended) keeps its own news: see Ledger.record.
        ledger.record(Video.from_dict(video), request["trigger_run_id"], QUEUED, spec,
                      is_default=spec == layout.default_output())
    return [r["trigger_run_id"] for r in requests]
