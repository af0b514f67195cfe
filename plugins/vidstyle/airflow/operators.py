"""StylizeChunkOperator: scores one chunk through the run's compute backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from vidstyle.airflow.tasks import failing_well
from vidstyle.airflow.triggers.azureml_job import AzureMLJobTrigger
from vidstyle.pipeline.backends import ChunkTask, ComputeBackend, WaitForJob, get_backend


class StylizeChunkOperator(BaseOperator):
    """One mapped instance per chunk, so a failure or retry touches that chunk alone.

    The backend scores the chunk and returns its result, or names the remote job that does: then
    this task defers to that job's trigger, holding no worker slot (its ``scoring`` pool slot
    stays taken, which bounds the jobs in flight).

    :param work: a ChunkTask as a dict plus ``backend``, the compute backend's name.
    """

    template_fields: Sequence[str] = ("work",)
    ui_color = "#f4d9ff"

    def __init__(self, *, work: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work = work
        self._backend: ComputeBackend | None = None

    @property
    def chunk_task(self) -> ChunkTask:
        return ChunkTask(**{k: v for k, v in self.work.items() if k != "backend"})

    @property
    def backend(self) -> ComputeBackend:
        if self._backend is None:
            self._backend = get_backend(self.work["backend"])
        return self._backend

    def execute(self, context: Any) -> dict:
        task = self.chunk_task
        self.log.info("%s: %d frames, model %s, backend %s", task.where, task.frames, task.model, self.backend.name)
        with failing_well(task.chunk_label, task.video_blob):
            outcome = self.backend.score(task, context["run_id"])
        if isinstance(outcome, WaitForJob):
            self.log.info("%s; waiting for it in the triggerer", outcome.note)
            self.defer(trigger=AzureMLJobTrigger(**outcome.trigger_kwargs()), method_name="execute_complete")
        return self._report(task, outcome)

    def execute_complete(self, context: Any, event: dict) -> dict:
        task = self.chunk_task
        with failing_well(task.chunk_label, task.video_blob):
            return self._report(task, self.backend.resume(task, event))

    def _report(self, task: ChunkTask, result: dict) -> dict:
        self.log.info("%s: %d frames in %.1f s (%.2f frames/s) on %s", task.chunk_label, result["frames"],
                      result["seconds"], result["fps"], result.get("device", "?"))
        return {k: result.get(k) for k in ("frames", "seconds", "fps", "model_seconds", "device", "model")}

    def on_kill(self) -> None:
        self.backend.cancel(self.chunk_task)
