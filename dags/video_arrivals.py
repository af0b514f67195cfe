"""Watch the input prefix; start one processing run for every video that arrives.

Runs continuously: a deferrable WASB sensor waits in the triggerer (no worker slot) until a
video with no ledger entry appears, then each new video gets its own ``video_stylize`` run,
whose id derives from the video's path and content version, so nothing runs twice.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from vidstyle.airflow.dispatch import start_runs
from vidstyle.airflow.sensors import NewVideoSensor
from vidstyle.pipeline.dispatch import run_request
from vidstyle.pipeline.settings import load_settings

settings = load_settings()


@dag(
    dag_id="video_arrivals",
    schedule="@continuous",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=30)},
    tags=["video", "watcher"],
    doc_md=__doc__,
)
def video_arrivals():
    new_videos = NewVideoSensor(
        task_id="wait_for_new_videos",
        settings=settings,
        deferrable=True,
        poke_interval=settings.sensor_poke_seconds,
        # Ends the run quietly after a quiet spell; the continuous schedule starts the next.
        timeout=int(timedelta(hours=6).total_seconds()),
        soft_fail=True,
    )

    @task
    def plan_runs(videos: list[dict]) -> list[dict]:
        return [run_request(v) for v in videos]

    start_runs(new_videos.output, plan_runs(new_videos.output))


video_arrivals()
