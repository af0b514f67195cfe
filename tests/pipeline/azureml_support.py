"""What the Azure ML tests share: a chunk task, the local service's registration of what provision
makes, submitting a chunk through the operator, and running its trigger as the triggerer would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from airflow.sdk.exceptions import TaskDeferred

from tests.azureml_service.api import AzureMLService
from vidstyle.airflow.operators import StylizeChunkOperator
from vidstyle.pipeline.backends import ChunkTask
from vidstyle.pipeline.backends import azureml_jobs as jobs
from vidstyle.pipeline.environment import record_environment
from vidstyle.pipeline.settings import load_settings

RUN_ID = "video__20260101T000000__clip-0123456789"
WORKSPACE = {"subscriptionId": "0000-sub", "resource_group_name": "media-rg", "workspace_name": "media-ml"}
TIMEOUT = 60.0  # how long a test waits for a job to reach a status before it fails
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


def compute_body(settings, state: str = "Succeeded", provisioning_errors: list | None = None) -> dict:
    """The cluster as Azure ML's REST API describes an AmlCompute (ComputeResource)."""
    return {"name": settings.azureml_compute, "location": "westeurope",
            "properties": {"computeType": "AmlCompute", "provisioningState": state,
                           "provisioningErrors": provisioning_errors,
                           "properties": {"vmSize": settings.azureml_vm_size, "vmPriority": "LowPriority",
                                          "scaleSettings": {"minNodeCount": 0,
                                                            "maxNodeCount": settings.azureml_max_nodes,
                                                            "nodeIdleTimeBeforeScaleDown": "PT120S"},
                                          "allocationState": "Steady", "currentNodeCount": 0,
                                          "targetNodeCount": 0, "errors": None}}}


def register(api: AzureMLService, settings, version: str = REGISTERED) -> None:
    """What `vidstyle provision` leaves behind: the environment and the cluster in the workspace,
    the environment's version recorded in the pipeline's storage."""
    api.assets[f"/environments/{settings.azureml_environment}/versions/{version}".lower()] = {
        "name": version, "properties": {"image": "vidstyle.azurecr.io/scoring:1", "osType": "Linux"}}
    api.set_compute(settings.azureml_compute, compute_body(settings))
    record_environment(settings, version)


def operator(task: ChunkTask) -> StylizeChunkOperator:
    return StylizeChunkOperator(task_id="stylize_chunk", work=task.to_dict() | {"backend": "azureml"})


def submit(task: ChunkTask) -> tuple[StylizeChunkOperator, TaskDeferred]:
    op = operator(task)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"run_id": RUN_ID})
    return op, deferred.value


def submit_hanging(azureml, task: ChunkTask) -> tuple[StylizeChunkOperator, TaskDeferred, str]:
    """Submit a chunk whose job is held Running until released; returns once it is Running."""
    azureml.service.add_rule({"hold": ["Running"]})
    op, deferred = submit(task)
    wait_for_status(azureml, deferred.trigger.job_name, "Running")
    return op, deferred, deferred.trigger.job_name


def wait_for_status(azureml, name: str, status: str, timeout: float = TIMEOUT) -> None:
    """Block until the job has reached ``status`` (the engine's event for it)."""
    azureml.service.jobs[name].wait_for(status, timeout)


def wait(deferred: TaskDeferred, **change) -> dict:
    """What the triggerer does: rebuild the trigger from its serialized form, run it to its event."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = deferred.trigger.serialize()
    trigger = import_string(classpath)(**(json.loads(json.dumps(kwargs)) | change))

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


def wait_while(deferred: TaskDeferred, steer: Callable[[], Awaitable[None]], **change) -> dict:
    """``wait`` for the trigger's event while ``steer`` (the test holding and releasing the job
    in the service) runs beside it; the event once both are done."""

    async def both() -> dict:
        waiter = asyncio.create_task(asyncio.to_thread(wait, deferred, **change))
        await steer()
        return await waiter

    return asyncio.run(both())
