"""Fixtures of the Azure ML tests: a provisioned stand-in workspace, a staged chunk."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.azureml_standin.client import StandinMLClient
from tests.azureml_standin.service import JobService, serve
from tests.pipeline.azureml_support import WORKSPACE, chunk_task, register
from tests.support import cut_chunks, make_video
from vidstyle.hooks.azureml import AzureMLHook
from vidstyle.pipeline.backends import ChunkTask
from vidstyle.pipeline.settings import load_settings


@pytest.fixture
def azureml(monkeypatch, container):
    """A stand-in workspace (its own job service) whose datastore "vidstyle" is the test's container,
    provisioned; fast polling; CPU jobs."""
    service = JobService({"vidstyle": (load_settings().wasb_conn_id, container)}, nodes=4, step=0.05)
    server = serve(service)
    client = StandinMLClient(f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_DEFAULT", json.dumps({"conn_type": "azure", "extra": WORKSPACE}))
    monkeypatch.setattr(AzureMLHook, "_connect", lambda self: (client, None))
    register(service, load_settings())
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_POLL_SECONDS", "0.05")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_MAX_POLL_SECONDS", "0.2")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_DEVICE", "cpu")
    yield SimpleNamespace(service=service, client=client)
    server.shutdown()
    service.stop()


@pytest.fixture
def staged(store, tmp_path) -> ChunkTask:
    """A chunk of four frames (chunk.json + piece.nut) uploaded where the split would have put it."""
    task = chunk_task(container=store.container)
    video = make_video(tmp_path / "four.mp4", seconds=4 * 1001 / 30000, size="32x24", audio=False)
    for path in cut_chunks(video, tmp_path / "cut")[0].iterdir():
        store.upload(path, task.input_dir + path.name)
    return task


