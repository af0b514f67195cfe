"""Compute backends: where a chunk gets stylized.

Every backend takes the same ChunkTask (a blob folder holding the chunk's piece and spec, a
blob folder for its segment, a model) and runs the same ``python -m scoring stylize`` command
line, so a chunk scored locally and one scored on a remote GPU job are interchangeable.

Backends load by name on first use: the Azure ML one pulls in azure-ai-ml, and nothing a
trigger imports may lead back here (the triggerer imports a trigger on its own).
"""

from __future__ import annotations

import importlib

from vidstyle.backends.base import ChunkTask, ComputeBackend

BACKENDS: dict[str, str] = {
    "local": "vidstyle.backends.local:LocalBackend",
    "azureml": "vidstyle.backends.azureml:AzureMLBackend",
}


def backend_class(name: str) -> type[ComputeBackend]:
    if name not in BACKENDS:
        raise ValueError(f"unknown compute backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_backend(name: str) -> ComputeBackend:
    return backend_class(name)()


__all__ = ["BACKENDS", "ChunkTask", "ComputeBackend", "backend_class", "get_backend"]
