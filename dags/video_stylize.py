"""Restyle one video: probe, extract audio, split into chunks, score each chunk, stitch, merge.

Started by the arrival watcher, the backlog sweep, or by hand from the trigger form.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from vidstyle import steps
from vidstyle.config import load_settings
from vidstyle.operators import StylizeChunkOperator
from vidstyle.params import stylize_params
from vidstyle.runtime import failing_well, on_task_failure, video_run

settings = load_settings()


def _run(video: dict | None = None) -> steps.VideoRun:
    return video_run(get_current_context(), video)


@dag(
    dag_id="video_stylize",
    schedule=None,
    catchup=False,
    params=stylize_params(settings),
    max_active_runs=settings.max_active_videos,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=20), "on_failure_callback": on_task_failure,
                  "execution_timeout": timedelta(hours=2)},
    tags=["video", "style-transfer"],
    doc_md=__doc__,
)
def video_stylize():
    @task
    def start() -> dict:
        run = _run()
        with failing_well("start", run.params.video_blob):
            return steps.start(run, get_current_context()["run_id"])

    @task
    def probe(video: dict) -> dict:
        run = _run(video)
        with failing_well("probe", run.video.blob):
            return steps.probe(run)

    @task
    def extract_audio(video: dict, info: dict) -> str:
        if not info["has_audio"]:
            raise AirflowSkipException("the source has no audio stream")
        run = _run(video)
        with failing_well("extract_audio", run.video.blob):
            return steps.extract_audio(run)

    @task
    def split_frames(video: dict, info: dict) -> list[dict]:
        run = _run(video)
        with failing_well("split_frames", run.video.blob):
            chunks = steps.split(run)
        return steps.chunk_tasks(run, chunks)

    @task
    def verify_frames(video: dict) -> list[dict]:
        run = _run(video)
        with failing_well("verify_frames", run.video.blob):
            return steps.chunk_results(run)

    @task
    def stitch(video: dict) -> dict:
        run = _run(video)
        with failing_well("stitch", run.video.blob):
            return steps.stitch(run)

    @task(trigger_rule=TriggerRule.NONE_FAILED)  # runs when extract_audio is skipped (no audio)
    def merge_audio(video: dict, info: dict) -> dict:
        run = _run(video)
        with failing_well("merge_audio", run.video.blob):
            return steps.merge_audio(run, info["has_audio"])

    @task
    def publish(video: dict, info: dict, final: dict, results: list[dict], stitched: dict) -> dict:
        run = _run(video)
        with failing_well("publish", run.video.blob):
            manifest = steps.publish(run, get_current_context()["run_id"], info, final, results, stitched)
        return {"output": manifest["outputs"]["video"], "frames": manifest["frames"]}

    @task
    def cleanup(video: dict) -> int:
        run = _run(video)
        with failing_well("cleanup", run.video.blob):
            return steps.cleanup(run)

    video = start()
    info = probe(video)
    audio = extract_audio(video, info)
    chunks = split_frames(video, info)
    scored = StylizeChunkOperator.partial(
        task_id="stylize_chunk",
        pool=settings.scoring_pool,
        retries=3,
        retry_delay=timedelta(seconds=30),
        retry_exponential_backoff=True,
        map_index_template="{{ task.work['chunk_label'] }}",
    ).expand(work=chunks)
    results = verify_frames(video)
    stitched = stitch(video)
    final = merge_audio(video, info)
    published = publish(video, info, final, results, stitched)
    scored >> results >> stitched >> final << audio
    published >> cleanup(video)


video_stylize()
