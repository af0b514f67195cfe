"""A processing run's parameters, as the trigger form, the REST API or the watcher give them, and
the rules on them that a JSON schema could only state as a raw regular expression."""

from __future__ import annotations

from dataclasses import dataclass

from vidstyle.pipeline.errors import BadInput
from vidstyle.pipeline.settings import Settings


@dataclass(frozen=True)
class JobParams:
    video_blob: str
    style: str
    chunk_frames: int | None  # None: the backend's default
    output_height: int
    crf: int
    output_prefix: str
    backend: str
    keep_work: bool
    video_version: str | None = None  # the content version the run was created for; None: the current one

    @classmethod
    def of(cls, params: dict) -> JobParams:
        """From a run's params (the form's fields; extra keys, such as a local run's mark, ignored)."""
        return cls(**{k: params.get(k) for k in cls.__dataclass_fields__})


def check_params(params: JobParams, settings: Settings) -> None:
    """The rules the trigger form states in words, checked here with the same words (a JSON
    schema pattern would show users a raw regular expression)."""
    blob, prefix = params.video_blob, params.output_prefix
    if blob.startswith("/") or "\\" in blob or blob != blob.strip() or not blob.lower().endswith(settings.suffixes):
        raise BadInput(f"video_blob {blob!r}: give the path of a video file inside container {settings.container!r}, "
                       f"without a leading '/', ending in one of {settings.video_suffixes}")
    if prefix and (prefix.startswith("/") or not prefix.endswith("/") or "\\" in prefix):
        raise BadInput(f"output_prefix {prefix!r}: give a folder inside container {settings.container!r}, ending "
                       "with '/' and without a leading '/' (or leave it empty for the container's top)")
