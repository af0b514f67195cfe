"""Process videos uploaded during each day that have not been processed yet.

Its daily runs sweep up anything the watcher missed; backfilling it over past dates handles
old videos (see README, "Backfill"):

    vidstyle airflow backfill create --dag-id video_backlog --from-date 2026-01-01 --to-date 2026-01-31

With ``--dag-run-conf '{"reprocess": true, "style": "..."}'`` it re-processes every video of
those days, processed or not, e.g. with a new style.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from vidstyle.airflow.dispatch import start_runs
from vidstyle.airflow.tasks import run_is_live
from vidstyle.pipeline import sweep
from vidstyle.pipeline.dispatch import PROCESSING_DAG, run_request
from vidstyle.pipeline.settings import load_settings

settings = load_settings()


@dag(
    dag_id="video_backlog",
    # Data-interval timetable: each run owns one whole day of uploads, [start, end).
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    params={
        "reprocess": Param(False, type="boolean", title="Re-process",
                           description="Also start runs for videos already processed (e.g. with a new style)"),
        "style": Param(None, type=["null", "string"], title="Style model",
                       description="Style for the started runs; empty uses the processing DAG's default"),
    },
    tags=["video", "backfill"],
    doc_md=__doc__,
)
def video_backlog():
    @task
    def reconcile_ledger() -> list[list[str]]:
        """Runs the ledger calls active that Airflow no longer runs become failed: picked up below."""
        ended = sweep.reconcile_ledger(settings, run_is_live(get_current_context(), PROCESSING_DAG))
        print(f"{len(ended)} runs had ended without recording it: {ended}")
        return [list(e) for e in ended]

    @task
    def find_videos(data_interval_start=None, data_interval_end=None) -> list[dict]:
        reprocess = get_current_context()["params"]["reprocess"]
        picked = sweep.videos_to_process(settings, data_interval_start, data_interval_end, reprocess)
        print(f"{len(picked)} videos uploaded in [{data_interval_start}, {data_interval_end}) to process")
        return picked

    @task
    def plan_runs(videos: list[dict], ts_nodash=None) -> list[dict]:
        params = get_current_context()["params"]
        # A video that failed before, or any video when re-processing, needs a run id of its own.
        return [run_request(v, ts_nodash if v["rerun"] else "", style=params["style"]) for v in videos]

    videos = find_videos()
    reconcile_ledger() >> videos
    start_runs(videos, plan_runs(videos))


video_backlog()
