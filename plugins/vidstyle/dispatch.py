"""Starting processing runs: one ``video_stylize`` run per video, never two for one version."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import TriggerRule, task

from vidstyle.blobs import BlobStore
from vidstyle.config import load_settings
from vidstyle.layout import Layout, Video
from vidstyle.ledger import QUEUED, Ledger

PROCESSING_DAG = "video_stylize"


def run_request(video: dict, rerun_tag: str = "", **params: Any) -> dict:
    """Trigger arguments for one video at one content version: the run processes exactly that
    version (or fails saying it was replaced). The run id carries the upload time (the order
    runs are served in, see vidstyle.priority) and the version; a deliberate re-run of the same
    version adds a tag naming what asked for it."""
    run_id = Video.from_dict(video).run_id + (f"__re__{rerun_tag}" if rerun_tag else "")
    return {"trigger_run_id": run_id,
            "conf": {"video_blob": video["blob"], "video_version": video["version"],
                     **{k: v for k, v in params.items() if v is not None}}}


@task(trigger_rule=TriggerRule.NONE_FAILED)
def record_queued(videos: list[dict], requests: list[dict]) -> list[str]:
    """Note the started runs in the ledger, so the watcher stops seeing those videos as new.

    Runs after the triggers (created, or skipped because the run already exists). Trigger
    first, record second: a crash in between leaves the video "new", and the next attempt
    finds its run already there instead of starting a second one.
    """
    settings = load_settings()
    layout = Layout(settings)
    ledger = Ledger(BlobStore(settings.wasb_conn_id, settings.container), layout)
    for video, request in zip(videos, requests, strict=True):
        spec = layout.default_output(request["conf"].get("style"))
        # A run that got there first (running or ended) keeps its own news: see Ledger.record.
        ledger.record(Video.from_dict(video), request["trigger_run_id"], QUEUED, spec,
                      is_default=spec == layout.default_output())
    return [r["trigger_run_id"] for r in requests]


def start_runs(videos, requests) -> None:
    """One mapped trigger per request, then the ledger update (wired into the current DAG)."""
    triggers = TriggerDagRunOperator.partial(
        task_id="start_processing",
        trigger_dag_id=PROCESSING_DAG,
        skip_when_already_exists=True,
        wait_for_completion=False,
        map_index_template="{{ task.conf['video_blob'] }}",
    ).expand_kwargs(requests)
    triggers >> record_queued(videos, requests)
