"""Compute backends: where a chunk's frames get stylized.

Every backend takes the same ChunkTask (a blob folder of source frames, a blob folder for the
styled ones, a model) and runs the same ``python -m scoring stylize`` command line, so a chunk
scored locally and one scored on a remote GPU job are interchangeable.
"""

from __future__ import annotations

from vidstyle.backends.azureml import AzureMLBackend
from vidstyle.backends.base import ChunkTask, ComputeBackend
from vidstyle.backends.local import LocalBackend

BACKENDS: dict[str, type[ComputeBackend]] = {b.name: b for b in (LocalBackend, AzureMLBackend)}


def get_backend(name: str) -> ComputeBackend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ValueError(f"unknown compute backend {name!r}; available: {', '.join(sorted(BACKENDS))}") from None


__all__ = ["BACKENDS", "ChunkTask", "ComputeBackend", "get_backend"]
