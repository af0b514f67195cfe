"""The processing DAG's Params: typed, documented, rendered as the trigger form in the UI."""

from __future__ import annotations

from airflow.sdk import Param

from vidstyle.backends import BACKENDS
from vidstyle.config import Settings
from vidstyle.steps import JobParams


def video_pattern(settings: Settings) -> str:
    """Case-insensitive suffix match written without inline flags, which the UI's JS regex lacks."""
    def either_case(ext: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext.lstrip("."))

    return rf"^[^/\s][^\\]*\.({'|'.join(either_case(s) for s in settings.suffixes)})$"


def stylize_params(settings: Settings) -> dict[str, Param]:
    return {
        "video_blob": Param(
            type="string", minLength=1, maxLength=1024, pattern=video_pattern(settings), title="Video blob",
            description=f"Path of the video inside container '{settings.container}', e.g. "
                        f"{settings.input_prefix}holiday.mp4",
        ),
        "style": Param(
            settings.default_style, type="string", minLength=1, maxLength=1024, title="Style model",
            description="A built-in model name (pop-art), a checkpoint path on the workers, "
                        "or wasb://container/path/model.pth",
        ),
        "chunk_frames": Param(
            settings.chunk_frames, type="integer", minimum=1, maximum=10_000, title="Chunk size (frames)",
            description="Frames per scoring task; each chunk is retried on its own",
        ),
        "output_height": Param(
            0, type="integer", minimum=0, maximum=4320, multipleOf=2, title="Output height",
            description="Height in pixels (even), width follows the aspect ratio; 0 keeps the source size",
        ),
        "crf": Param(
            18, type="integer", minimum=0, maximum=51, title="Encoder quality (CRF)",
            description="H.264 constant rate factor: 0 lossless, 18 visually lossless, 23 default, 51 worst",
        ),
        "output_prefix": Param(
            settings.output_prefix, type="string", pattern=r"^([^/\s][^\\]*/)?$", title="Output prefix",
            description="Folder in the container for the result, manifest and preview (ends with /)",
        ),
        "backend": Param(
            settings.backend, type="string", enum=sorted(BACKENDS), title="Compute backend",
            description="Where chunks are scored: local (on the worker) or azureml (a GPU job per chunk "
                        "on an Azure ML compute cluster; see README)",
        ),
        "keep_work": Param(
            settings.keep_work, type="boolean", title="Keep work files",
            description="Keep the intermediate frames and audio after a successful run (always kept on failure)",
        ),
    }


def job_params(params: dict) -> JobParams:
    return JobParams(**{k: params[k] for k in JobParams.__dataclass_fields__})
