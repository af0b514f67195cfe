"""StylizeChunkOperator: scores one chunk through the configured compute backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from vidstyle.backends import ChunkTask, get_backend
from vidstyle.runtime import failing_well


class StylizeChunkOperator(BaseOperator):
    """One mapped instance per chunk, so a failure or retry touches that chunk alone.

    :param work: a ChunkTask as a dict plus ``backend``, the compute backend's name.
    """

    template_fields: Sequence[str] = ("work",)
    ui_color = "#f4d9ff"

    def __init__(self, *, work: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work = work

    @property
    def chunk_task(self) -> ChunkTask:
        return ChunkTask(**{k: v for k, v in self.work.items() if k != "backend"})

    def execute(self, context: Any) -> dict:
        task, backend = self.chunk_task, get_backend(self.work["backend"])
        self._backend = backend
        self.log.info("%s: %d frames, model %s, backend %s", task.where, task.frames, task.model, backend.name)
        with failing_well(task.chunk_label, task.video_blob):
            return self._report(task, backend.score(self, context, task))

    def execute_complete(self, context: Any, event: dict) -> dict:
        task = self.chunk_task
        with failing_well(task.chunk_label, task.video_blob):
            return self._report(task, get_backend(self.work["backend"]).resume(self, context, task, event))

    def _report(self, task: ChunkTask, result: dict) -> dict:
        self.log.info("%s: %d frames in %.1f s (%.2f frames/s) on %s", task.chunk_label, result["frames"],
                      result["seconds"], result["fps"], result.get("device", "?"))
        return {k: result.get(k) for k in ("frames", "seconds", "fps", "model_seconds", "device", "model")}

    def on_kill(self) -> None:
        backend = getattr(self, "_backend", None) or get_backend(self.work["backend"])
        backend.cancel(self, self.chunk_task)
