"""The compute-backend seam."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from vidstyle.config import Settings


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
    model: str  # built-in name, local checkpoint path, or wasb://container/path
    batch_size: int
    precision: str = "auto"
    compile: bool = False
    flicker_every: int = 8  # measure flicker on every N-th frame pair (0: off)
    environment: str = ""  # a remote backend's scoring environment, pinned for the whole run (name:version)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def where(self) -> str:
        return f"video {self.video_blob} ({self.video_id}), {self.chunk_label}"


class ScorerRejected(ValueError):
    """The scorer refused its inputs (bad model, unreadable frames): a retry cannot help."""


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

    def preflight(self, ref: str, conn_id: str) -> None:
        """Fail fast, before any frame is split, when the model cannot be found or the backend
        is not set up (FileNotFoundError or ValueError: the run fails at once, without retries)."""

    @abstractmethod
    def score(self, operator: Any, context: Any, task: ChunkTask) -> dict:
        """Score the chunk (or defer, for remote backends); returns the chunk's result.json."""

    def resume(self, operator: Any, context: Any, task: ChunkTask, event: dict) -> dict:
        """Called when a deferred chunk's trigger fires; remote backends override it."""
        raise NotImplementedError(f"backend {self.name} never defers")

    def cancel(self, operator: Any, task: ChunkTask) -> None:
        """Stop work in flight when the task is killed or marked failed."""


# The scorer's exit code for inputs it cannot use (see scoring.cli).
EXIT_BAD_INPUT = 2
# What a chunk's folders hold (scoring.chunk names them; read here without importing it).
INPUT_FILES = ("chunk.json", "piece.nut")
OUTPUT_FILES = ("segment.mp4", "result.json")
OPTIONAL_OUTPUT_FILES = ("preview.png",)
JOB_FILE = "job.json"  # a remote chunk's job figures (time queued, on a node, GPU-seconds, cost)


def scorer_args(task: ChunkTask, model: str, input_dir: str, output_dir: str, result: str,
                device: str = "auto", sidecar: str | None = None) -> list[str]:
    """The scoring command line, after the interpreter: identical for every backend."""
    args = ["-m", "scoring", "stylize", "--model", model, "--input", input_dir, "--output", output_dir,
            "--batch-size", str(task.batch_size), "--precision", task.precision, "--device", device,
            "--result", result, "--flicker-every", str(task.flicker_every)]
    if sidecar:
        args += ["--sidecar", sidecar]
    return [*args, "--compile"] if task.compile else args
