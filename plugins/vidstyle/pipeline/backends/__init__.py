"""Compute backends: where a chunk gets stylized.

Every backend takes the same ChunkTask (a blob folder holding the chunk's piece and spec, a
blob folder for its segment, a model) and runs the same ``python -m scoring stylize`` command
line, so a chunk scored locally and one scored on a remote GPU job are interchangeable. A backend
returns the chunk's result, or a ``WaitForJob`` when the work goes on elsewhere: the operator then
defers (the backend never touches the operator).

Backends load by name on first use: the Azure ML one pulls in azure-ai-ml.
"""

from __future__ import annotations

import importlib

from vidstyle.pipeline.backends.base import ChunkTask, ComputeBackend, WaitForJob

BACKENDS: dict[str, str] = {
    "local": "vidstyle.pipeline.backends.local:LocalBackend",
    "azureml": "vidstyle.pipeline.backends.azureml:AzureMLBackend",
}


def backend_class(name: str) -> type[ComputeBackend]:
    if name not in BACKENDS:
        raise ValueError(f"unknown compute backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str) -> ComputeBackend:
    return backend_class(name)()


__all__ = ["BACKENDS", "ChunkTask", "ComputeBackend", "WaitForJob", "backend_class", "get_backend"]
