"""Starting processing runs from a DAG: one mapped trigger per video, then the ledger told."""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import TriggerRule, task

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline import dispatch
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import Ledger
from vidstyle.pipeline.settings import load_settings


@task(trigger_rule=TriggerRule.NONE_FAILED)
def record_queued(videos: list[dict], requests: list[dict]) -> list[str]:
    """Note the started runs in the ledger, so the watcher stops seeing those videos as new.

    Runs after the triggers (created, or skipped because the run already exists). Trigger
    first, record second: a crash in between leaves the video "new", and the next attempt
    finds its run already there instead of starting a second one.
    """
    settings = load_settings()
    layout = Layout(settings)
    return dispatch.record_queued(Ledger(BlobStore(settings.wasb_conn_id, settings.container), layout), layout,
                                  videos, requests)


def start_runs(videos, requests) -> None:
    """One mapped trigger per request, then the ledger update (wired into the current DAG)."""
    triggers = TriggerDagRunOperator.partial(
        task_id="start_processing",
        trigger_dag_id=dispatch.PROCESSING_DAG,
        skip_when_already_exists=True,
        wait_for_completion=False,
        map_index_template="{{ task.conf['video_blob'] }}",
    ).expand_kwargs(requests)
    triggers >> record_queued(videos, requests)
