"""Score a chunk as an Azure ML command job on a GPU cluster, without holding a worker slot.

score(): find the chunk's job from an earlier try (still running, or done with its output in
place) or submit a new one, log its Studio link, and defer to AzureMLJobTrigger. resume():
read the chunk's result.json, or fail this chunk alone with the job's name, status and error,
cancelling a job that is hung or past its time first. Airflow's retry then submits afresh.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from vidstyle.azureml import jobs
from vidstyle.azureml.hook import AzureMLHook
from vidstyle.azureml.trigger import AzureMLJobTrigger
from vidstyle.backends.base import ChunkTask, ComputeBackend
from vidstyle.backends.local import builtin_model_names
from vidstyle.blobs import BlobStore, parse_wasb, require_blob
from vidstyle.config import Settings, load_settings


class AzureMLJobFailed(RuntimeError):
    """The chunk's job ended without a usable result; the task's retry submits a new job."""


class AzureMLBackend(ComputeBackend):
    name = "azureml"

    def __init__(self) -> None:
        self._job_name: str | None = None

    @staticmethod
    def options(settings: Settings) -> dict:
        return {"batch_size": settings.azureml_batch_size, "precision": settings.azureml_precision,
                "compile": settings.azureml_compile}

    def preflight(self, ref: str, conn_id: str) -> None:
        settings = load_settings()
        AzureMLHook(settings.azureml_conn_id).check()  # a missing connection fails the run here, once
        self._model_uri(ref, settings)  # a model the job cannot read is refused here
        if parse_wasb(ref):
            require_blob(ref, conn_id)

    @staticmethod
    def _model_uri(ref: str, settings: Settings) -> str | None:
        return jobs.model_source(ref, settings.container, settings.azureml_datastore, builtin_model_names())

    def score(self, operator: Any, context: Any, task: ChunkTask) -> dict:
        settings, run_id = load_settings(), context["run_id"]
        spec, model_uri = jobs.JobSpec.from_settings(settings), self._model_uri(task.model, settings)
        store = BlobStore(task.conn_id, task.container)
        client = AzureMLHook(settings.azureml_conn_id).get_conn()
        earlier_result = functools.cache(lambda: self._result(store, task))  # read once, if at all
        job, reattached = jobs.submit_or_reattach(
            client, task, run_id, lambda name: jobs.build_job(task, name, spec, model_uri, run_id),
            output_ready=lambda: earlier_result() is not None,
        )
        self._job_name = job.name
        operator.log.info("%s: %s Azure ML job %s (%s) on %s: %s", task.where,
                          "reattached to" if reattached else "submitted", job.name, job.status,
                          settings.azureml_compute, job.studio_url)
        if job.status == jobs.COMPLETED:  # only a reattached job: its output was just checked
            return self._collect(earlier_result(), task, job.name)
        wait = settings.azureml_job_timeout_minutes + settings.azureml_queue_timeout_minutes
        operator.defer(
            trigger=AzureMLJobTrigger(
                conn_id=settings.azureml_conn_id, job_name=job.name, label=task.where,
                deadline=time.time() + wait * 60, poll_seconds=settings.azureml_poll_seconds,
                max_poll_seconds=settings.azureml_max_poll_seconds),
            method_name="execute_complete",
        )
        raise AssertionError("defer() returns only by raising")  # pragma: no cover

    def resume(self, operator: Any, context: Any, task: ChunkTask, event: dict) -> dict:
        name, status = event["job"], event.get("job_status")
        self._job_name = name
        if event["status"] == "success":
            operator.log.info("%s: Azure ML job %s completed: %s", task.where, name, event.get("studio_url"))
            return self._collect(self._result(BlobStore(task.conn_id, task.container), task), task, name)
        self.cancel(operator, task)  # a hung or timed-out job still holds a node; an ended one is left be
        raise AzureMLJobFailed(f"{task.chunk_label}: Azure ML job {name} ended {event['status']} "
                               f"(job status {status}): {event.get('error') or 'no error given'}; "
                               f"Studio: {event.get('studio_url') or 'n/a'}")

    def cancel(self, operator: Any, task: ChunkTask) -> None:
        if not self._job_name:
            return
        client = AzureMLHook(load_settings().azureml_conn_id).get_conn()
        if jobs.cancel_job(client, self._job_name):
            operator.log.warning("%s: cancelled Azure ML job %s", task.chunk_label, self._job_name)

    @staticmethod
    def _result(store: BlobStore, task: ChunkTask) -> dict | None:
        """The chunk's result.json when the output is complete (segment first, result last)."""
        try:
            result = store.read_json(task.output_dir + "result.json")
        except FileNotFoundError:
            return None
        if result.get("frames") != task.frames or not store.exists(task.output_dir + "segment.mp4"):
            return None
        return result

    @staticmethod
    def _collect(result: dict | None, task: ChunkTask, job_name: str) -> dict:
        if result is None:
            raise AzureMLJobFailed(f"{task.chunk_label}: Azure ML job {job_name} completed but left no complete "
                                   f"output (a segment of {task.frames} frames and result.json) in {task.output_dir}")
        return result
