"""What the Azure ML tests share: a chunk task, the stand-in's registration of what provision
makes, submitting a chunk through the operator, and running its trigger as the triggerer would."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred

from tests.azureml_standin.service import JobService
from vidstyle.airflow.operators import StylizeChunkOperator
from vidstyle.pipeline.backends import ChunkTask
from vidstyle.pipeline.backends import azureml_jobs as jobs
from vidstyle.pipeline.environment import record_environment
from vidstyle.pipeline.settings import load_settings

RUN_ID = "video__20260101T000000__clip-0123456789"
WORKSPACE = {"subscriptionId": "0000-sub", "resource_group_name": "media-rg", "workspace_name": "media-ml"}
SPEC = jobs.JobSpec(datastore="vidstyle", compute="gpu-t4", environment="vidstyle-scoring", experiment="vidstyle",
                    identity="managed", input_mode="download", device="cuda", timeout_minutes=60)


def chunk_task(container: str = "videos", index: int = 1, frames: int = 4, model: str = "pop-art",
               environment: str = "vidstyle-scoring:0123456789abcdef") -> ChunkTask:
    base = f"work/clip-0123456789/run/chunks/{index:05d}/"
    return ChunkTask(conn_id=load_settings().wasb_conn_id, container=container, video_blob="incoming/My Clip.mp4",
                     video_id="clip-0123456789", chunk_index=index, chunk_label=f"chunk {index + 1}/3, frames "
                     f"{index * frames}-{index * frames + frames - 1}", frames=frames, input_dir=base + "in/",
                     output_dir=base + "out/", model=model, batch_size=0, environment=environment)


REGISTERED = "0123456789abcdef"  # the environment version "provision" registered for the tests


def register(service: JobService, settings, version: str = REGISTERED) -> None:
    """What `vidstyle provision` leaves behind: the environment and the cluster in the workspace,
    the environment's version recorded in the pipeline's storage."""
    service.assets[f"environments/{settings.azureml_environment}:{version}"] = {
        "name": settings.azureml_environment, "version": version}
    service.assets[f"compute/{settings.azureml_compute}"] = {
        "name": settings.azureml_compute, "size": settings.azureml_vm_size, "provisioning_state": "Succeeded",
        "provisioning_errors": []}
    record_environment(settings, version)


def operator(task: ChunkTask) -> StylizeChunkOperator:
    return StylizeChunkOperator(task_id="stylize_chunk", work=task.to_dict() | {"backend": "azureml"})


def submit(task: ChunkTask) -> tuple[StylizeChunkOperator, TaskDeferred]:
    op = operator(task)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"run_id": RUN_ID})
    return op, deferred.value


def submit_hanging(azureml, task: ChunkTask) -> tuple[StylizeChunkOperator, TaskDeferred, str]:
    """Submit a chunk whose job runs until released; returns once the job is Running."""
    azureml.service.add_rule({"behaviour": "hang"})
    op, deferred = submit(task)
    wait_for_status(azureml, deferred.trigger.job_name, "Running")
    return op, deferred, deferred.trigger.job_name


def wait_for_status(azureml, name: str, status: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while azureml.service.jobs[name].status != status:
        assert time.time() < deadline, f"{name} is {azureml.service.jobs[name].status}, not {status}"
        time.sleep(0.05)


def wait(deferred: TaskDeferred, **change) -> dict:
    """What the triggerer does: rebuild the trigger from its serialized form, run it to its event."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = deferred.trigger.serialize()
    trigger = import_string(classpath)(**(json.loads(json.dumps(kwargs)) | change))

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


