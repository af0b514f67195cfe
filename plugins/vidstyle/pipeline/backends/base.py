"""The compute-backend seam: what a chunk's scoring needs, and what a backend answers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar

from scoring.flicker_figures import DEFAULT_EVERY
from vidstyle.pipeline.settings import Settings

JOB_FILE = "job.json"  # a remote chunk's job figures beside its segment (time queued, on a node, cost)


@dataclass(frozen=True)
class ChunkTask:
    """Everything a backend needs to score one chunk; all of it plain, JSON-able data."""

    conn_id: str
    container: str
    video_blob: str
    video_id: str
    chunk_index: int
    chunk_label: str
    frames: int
    input_dir: str  # blob folder holding chunk.json and the piece it names
    output_dir: str  # blob folder to receive segment.mp4, result.json (and preview.png)
    model: str  # a run's style: built-in name, checkpoint path, wasb:// or azureml:// (pipeline.models)
    batch_size: int
    precision: str = "auto"
    compile: bool = False
    flicker_every: int = DEFAULT_EVERY  # measure flicker on every N-th frame pair (0: off)
    environment: str = ""  # a remote backend's scoring environment, pinned for the whole run (name:version)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def where(self) -> str:
        return f"video {self.video_blob} ({self.video_id}), {self.chunk_label}"


@dataclass(frozen=True)
class WaitForJob:
    """A backend's answer when the chunk's work runs elsewhere: wait in the triggerer for that job.
    The fields are the trigger's (see vidstyle.airflow.triggers.azureml_job), ``note`` what to log."""

    conn_id: str
    job_name: str
    label: str
    queue_timeout: float
    run_timeout: float
    not_responding_grace: float
    poll_seconds: float
    max_poll_seconds: float
    prepare_timeout: float = 3600.0
    cancel_wait: float = 900.0
    outage_timeout: float = 1800.0
    note: str = ""

    def trigger_kwargs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "note"}


class ComputeBackend(ABC):
    name: ClassVar[str]

    @staticmethod
    @abstractmethod
    def options(settings: Settings) -> dict:
        """The scorer's batch_size, precision and compile for this backend, from the settings."""

    @staticmethod
    def chunk_frames(settings: Settings) -> int:
        """Frames per chunk when a run does not say: what keeps this backend's per-chunk overhead small."""
        return settings.chunk_frames

    def preflight(self, ref: str, settings: Settings) -> None:
        """Fail fast, before any frame is split, when the model cannot be found or the backend
        is not set up (FileNotFoundError or ValueError: the run fails at once, without retries)."""

    @abstractmethod
    def score(self, task: ChunkTask, run_id: str) -> dict | WaitForJob:
        """Score the chunk and return its result.json, or say which remote job to wait for."""

    def resume(self, task: ChunkTask, event: dict) -> dict:
        """The chunk's result once the job waited for has ended (remote backends)."""
        raise NotImplementedError(f"backend {self.name} never defers")

    def cancel(self, task: ChunkTask) -> None:
        """Stop work in flight when the task is killed or marked failed."""

    def cancel_leftovers(self, tasks: list[ChunkTask], run_id: str) -> list[str]:
        """Once every chunk task of a run has ended: stop remote work still running for any of
        them (a chunk marked failed before its wait began). Returns what was stopped."""
        return []


def scorer_args(task: ChunkTask, model: str, input_dir: str, output_dir: str, result: str,
                device: str = "auto", sidecar: str | None = None) -> list[str]:
    """The scoring command line, after the interpreter: identical for every backend."""
    args = ["-m", "scoring", "stylize", "--model", model, "--input", input_dir, "--output", output_dir,
            "--batch-size", str(task.batch_size), "--precision", task.precision, "--device", device,
            "--result", result, "--flicker-every", str(task.flicker_every)]
    if sidecar:
        args += ["--sidecar", sidecar]
    return [*args, "--compile"] if task.compile else args
