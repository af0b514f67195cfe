"""Fixtures of the Azure ML tests: a provisioned workspace on the local Azure ML service (HTTPS,
reached by azure-ai-ml's own MLClient through its settings for other clouds), a staged chunk."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.azureml_service.api import AzureMLService, Calls, client_environment, connection, serve
from tests.azureml_service.jobs import JobService
from tests.pipeline.azureml_support import chunk_task, register
from tests.support import cut_chunks, make_video
from vidstyle.pipeline.backends import ChunkTask
from vidstyle.pipeline.settings import load_settings


@pytest.fixture(scope="session")
def azureml_service(tmp_path_factory):
    """One local Azure ML service for the session (azure-ai-ml keeps a cloud's endpoints per
    process, so its address must not change); each test gets a fresh engine and workspace."""
    service = AzureMLService(JobService({}))
    server, ca = serve(service, tmp_path_factory.mktemp("azureml-tls"))
    yield service, ca
    server.shutdown()


@pytest.fixture
def azureml(monkeypatch, container, azureml_service):
    """A workspace on the local service whose datastore "vidstyle" is the test's container,
    provisioned; a service-principal connection; fast polling; CPU jobs. ``service`` is the job
    engine, ``api`` the REST front (faults, sign-in, calls)."""
    api, ca = azureml_service
    engine = JobService({"vidstyle": (load_settings().wasb_conn_id, container)}, nodes=4, step=0.05)
    api.engine, api.faults, api.assets, api.refuse_sign_in, api.calls = engine, [], {}, False, Calls()
    for key, value in client_environment(api, ca).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_DEFAULT", json.dumps(connection(api)))
    register(api, load_settings())
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_POLL_SECONDS", "0.05")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_MAX_POLL_SECONDS", "0.2")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_DEVICE", "cpu")
    yield SimpleNamespace(service=engine, api=api)
    engine.stop()


@pytest.fixture
def staged(store, tmp_path) -> ChunkTask:
    """A chunk of four frames (chunk.json + piece.nut) uploaded where the split would have put it."""
    task = chunk_task(container=store.container)
    video = make_video(tmp_path / "four.mp4", seconds=4 * 1001 / 30000, size="32x24", audio=False)
    for path in cut_chunks(video, tmp_path / "cut")[0].iterdir():
        store.upload(path, task.input_dir + path.name)
    return task


