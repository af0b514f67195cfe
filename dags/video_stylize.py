"""Restyle one video: split it into chunks, score each chunk, stitch the segments, merge the audio.

Started by the arrival watcher, the backlog sweep, or by hand from the trigger form.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import PokeReturnValue, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from vidstyle.airflow.form import stylize_params
from vidstyle.airflow.operators import StylizeChunkOperator
from vidstyle.airflow.priority import ARRIVAL_ORDER
from vidstyle.airflow.tasks import cancel_leftover_jobs as leftover_jobs
from vidstyle.airflow.tasks import failing_well, on_task_failure, run_is_live, video_run
from vidstyle.pipeline import steps
from vidstyle.pipeline.run import VideoRun
from vidstyle.pipeline.settings import load_settings, scoring_queue

settings = load_settings()


def _run(video: dict | None = None) -> VideoRun:
    return video_run(get_current_context(), video)


@dag(
    dag_id="video_stylize",
    schedule=None,
    catchup=False,
    params=stylize_params(settings),
    max_active_runs=settings.max_active_videos,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=20), "on_failure_callback": on_task_failure,
                  "execution_timeout": timedelta(hours=2),
                  "weight_rule": ARRIVAL_ORDER},  # first uploaded, first served
    tags=["video", "style-transfer"],
    doc_md=__doc__,
)
def video_stylize():
    @task
    def start() -> dict:
        run = _run()
        with failing_well("start", run.params.video_blob):
            return steps.start(run)

    @task.sensor(poke_interval=settings.claim_poke_seconds, timeout=timedelta(hours=12), mode="reschedule")
    def claim_output(video: dict) -> PokeReturnValue:
        """Runs that would write the same result take turns (see vidstyle.pipeline.claims)."""
        context = get_current_context()
        run = _run(video)
        with failing_well("claim_output", run.video.blob):
            holder = steps.claim_output(run, run_is_live(context, context["dag"].dag_id))
        return PokeReturnValue(is_done=holder is None)

    @task
    def split(video: dict) -> list[dict]:
        """Returns the chunks' work items (mapped over); its summary goes out as XCom "summary"."""
        run = _run(video)
        with failing_well("split", run.video.blob):
            result = steps.split(run)
        get_current_context()["ti"].xcom_push(key="summary", value={k: v for k, v in result.items() if k != "chunks"})
        return result["chunks"]

    @task
    def extract_audio(video: dict, split_summary: dict) -> dict:
        if not split_summary["source"]["has_audio"]:
            raise AirflowSkipException("the source has no audio stream")
        run = _run(video)
        with failing_well("extract_audio", run.video.blob):
            return steps.extract_audio(run)

    @task(trigger_rule=TriggerRule.NONE_FAILED)  # runs when extract_audio is skipped (no audio)
    def stitch(video: dict) -> dict:
        context = get_current_context()
        run = _run(video)
        with failing_well("stitch", run.video.blob):
            return steps.stitch(run, run_is_live(context, context["dag"].dag_id))

    @task
    def publish(video: dict, split_summary: dict, stitched: dict) -> dict:
        run = _run(video)
        audio = get_current_context()["ti"].xcom_pull(task_ids="extract_audio")  # None: no audio
        with failing_well("publish", run.video.blob):
            manifest = steps.publish(run, split_summary, audio, stitched)
        return {"output": manifest["outputs"]["video"], "frames": manifest["frames"]}

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def cancel_leftover_jobs() -> list[str]:
        """Once every chunk has ended: remote jobs a failed chunk left running are cancelled."""
        return leftover_jobs(get_current_context())

    @task
    def cleanup(video: dict) -> int:
        run = _run(video)
        with failing_well("cleanup", run.video.blob):
            return steps.cleanup(run)

    video = start()
    chunks = split(video)
    claim_output(video) >> chunks
    summary = chunks["summary"]
    audio = extract_audio(video, summary)
    scored = StylizeChunkOperator.partial(
        task_id="stylize_chunk",
        pool=settings.scoring_pool,
        queue=scoring_queue(settings),
        retries=3,
        retry_delay=timedelta(seconds=30),
        retry_exponential_backoff=True,
        map_index_template="{{ task.work['chunk_label'] }}",
    ).expand(work=chunks)
    stitched = stitch(video)
    [scored, audio] >> stitched
    scored >> cancel_leftover_jobs()
    publish(video, summary, stitched) >> cleanup(video)


video_stylize()
