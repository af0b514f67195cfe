"""Start one processing run for every video that arrives under the input prefix.

By event (the default, ``arrivals = storage_queue`` or ``service_bus``): Event Grid writes a
blob-created event to a queue; an asset watcher in the triggerer turns each into an event of the
``video_uploads`` asset, and each asset event starts this DAG. The run reads the blob as it is
now and starts its ``video_stylize`` run, whose id derives from the video's path and content
version, so a duplicate event starts nothing. Idle, it costs one queue request per poll.

By listing (``arrivals = listing``, for stores without Event Grid): a deferrable WASB sensor
lists the prefix and the ledger until a video with no ledger entry appears.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task

from vidstyle.airflow.arrivals import payloads, uploads_asset
from vidstyle.airflow.dispatch import start_runs
from vidstyle.airflow.sensors import NewVideoSensor
from vidstyle.pipeline import arrivals
from vidstyle.pipeline.dispatch import run_request
from vidstyle.pipeline.settings import load_settings

settings = load_settings()
by_event = settings.arrivals != "listing"
uploads = uploads_asset(settings) if by_event else None


@dag(
    dag_id="video_arrivals",
    schedule=[uploads] if by_event else "@continuous",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=30)},
    tags=["video", "watcher"],
    doc_md=__doc__,
)
def video_arrivals():
    if by_event:
        @task(inlets=[uploads])
        def read_arrivals() -> list[dict]:
            """The videos the run's blob-created events name, as the store holds them now."""
            events = arrivals.events_of(payloads(get_current_context(), uploads))
            store, ledger = arrivals.ledger_of(settings)
            videos = arrivals.new_videos(store, ledger, events, settings)
            print(f"{len(events)} blob-created events; {len(videos)} new videos to start")
            return videos

        new_videos = read_arrivals()
    else:
        new_videos = NewVideoSensor(
            task_id="wait_for_new_videos",
            settings=settings,
            deferrable=True,
            poke_interval=settings.sensor_poke_seconds,
            # Ends the run quietly after a quiet spell; the continuous schedule starts the next.
            timeout=int(timedelta(hours=6).total_seconds()),
            soft_fail=True,
        ).output

    @task
    def plan_runs(videos: list[dict]) -> list[dict]:
        return [run_request(v) for v in videos]

    start_runs(new_videos, plan_runs(new_videos))


video_arrivals()
