"""The Azure ML backend, offline: the job body as the REST API receives it, the operator and
trigger state machine against a fake jobs client, provisioning, credentials, and the whole
processing DAG scoring its chunks through "jobs" that run the real scorer on Azurite folders.

Nothing here reaches Azure; README "Azure ML" lists what has not run against a real workspace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shlex
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred
from conftest import cut_chunks, make_video
from fake_azureml import FakeMLClient

from vidstyle.azureml import jobs, provision
from vidstyle.azureml.hook import AzureMLHook
from vidstyle.azureml.trigger import AzureMLJobTrigger
from vidstyle.backends import ChunkTask
from vidstyle.config import load_settings
from vidstyle.operators import StylizeChunkOperator

RUN_ID = "video__clip-0123456789"
WORKSPACE = {"subscriptionId": "0000-sub", "resource_group_name": "media-rg", "workspace_name": "media-ml"}
SPEC = jobs.JobSpec(datastore="vidstyle", compute="gpu-t4", environment="vidstyle-scoring", experiment="vidstyle",
                    identity="managed", input_mode="download", device="cuda", timeout_minutes=60)


def chunk_task(container: str = "videos", index: int = 1, frames: int = 4, model: str = "pop-art") -> ChunkTask:
    base = f"work/clip-0123456789/chunks/{index:05d}/"
    return ChunkTask(conn_id=load_settings().wasb_conn_id, container=container, video_blob="incoming/My Clip.mp4",
                     video_id="clip-0123456789", chunk_index=index, chunk_label=f"chunk {index + 1}/3, frames "
                     f"{index * frames}-{index * frames + frames - 1}", frames=frames, input_dir=base + "in/",
                     output_dir=base + "out/", model=model, batch_size=0)


# -- the job body ----------------------------------------------------------------------------------

def rest_body(job) -> dict:
    """What azure-ai-ml sends to the REST API for this job (before resolving names to ARM ids)."""
    return job._to_job()._to_rest_object().as_dict()


def test_the_job_body_runs_the_scorer_on_the_chunk_folders_on_the_cluster():
    task = chunk_task()
    name = jobs.base_name(task, RUN_ID) + "-1"
    body = rest_body(jobs.build_job(task, name, SPEC, "azureml://datastores/vidstyle/paths/models/starry.pth", RUN_ID))
    props = body["properties"]
    assert body["name"] == name and props["jobType"] == "Command"
    assert shlex.split(props["command"]) == [
        "python", "-m", "scoring", "stylize", "--model", "${{inputs.model}}", "--input", "${{inputs.frames}}",
        "--output", "${{outputs.styled}}", "--batch-size", "0", "--precision", "auto", "--device", "cuda",
        "--result", "${{outputs.styled}}/result.json"]
    assert props["inputs"] == {
        "frames": {"uri": "azureml://datastores/vidstyle/paths/work/clip-0123456789/chunks/00001/in/",
                   "mode": "Download", "jobInputType": "uri_folder"},
        "model": {"uri": "azureml://datastores/vidstyle/paths/models/starry.pth", "mode": "Download",
                  "jobInputType": "uri_file"}}
    assert props["outputs"] == {
        "styled": {"uri": "azureml://datastores/vidstyle/paths/work/clip-0123456789/chunks/00001/out/",
                   "mode": "Upload", "jobOutputType": "uri_folder"}}
    assert props["computeId"] == "gpu-t4"
    assert props["environmentId"] == "vidstyle-scoring@latest"
    assert props["resources"]["instanceCount"] == 1
    assert props["identity"] == {"identityType": "Managed"}
    assert props["limits"]["timeout"] == "PT1H"
    assert props["experimentName"] == "vidstyle"
    assert props["tags"] == {"video": "incoming/My Clip.mp4", "video_id": "clip-0123456789", "chunk": "1",
                             "airflow_run_id": RUN_ID}


def test_a_built_in_model_travels_in_the_image_not_as_an_input():
    spec = dataclasses.replace(SPEC, identity="user", input_mode="ro_mount", device="auto")
    props = rest_body(jobs.build_job(chunk_task(), "n-1", spec, None, RUN_ID))["properties"]
    assert set(props["inputs"]) == {"frames"} and props["inputs"]["frames"]["mode"] == "ReadOnlyMount"
    argv = shlex.split(props["command"])
    assert argv[argv.index("--model") + 1] == "pop-art" and argv[argv.index("--device") + 1] == "auto"
    assert props["identity"] == {"identityType": "UserIdentity"}


def test_job_names_are_the_same_for_every_try_and_differ_per_chunk_run_and_model():
    task = chunk_task()
    name = jobs.base_name(task, RUN_ID)
    assert name == jobs.base_name(chunk_task(), RUN_ID)  # a retry computes the same name
    assert name == jobs.base_name(dataclasses.replace(task, conn_id="elsewhere"), RUN_ID)
    others = {jobs.base_name(chunk_task(index=2), RUN_ID), jobs.base_name(task, RUN_ID + "__re__1"),
              jobs.base_name(chunk_task(model="wasb://videos/models/b.pth"), RUN_ID)}
    assert name not in others and len(others) == 3
    assert name.startswith("vidstyle-") and name.endswith("-c00001") and len(name) < 64


def test_the_command_line_quotes_everything_but_placeholders():
    argv = ["python", "--model", "odd name; rm -rf ~", "--input", "${{inputs.frames}}",
            "--result", "${{outputs.styled}}/result.json", "--x", "$(whoami)"]
    line = jobs.command_line(argv)
    assert shlex.split(line) == argv
    assert "${{inputs.frames}} " in line and "'odd name; rm -rf ~'" in line and "'$(whoami)'" in line


@pytest.mark.parametrize(("ref", "expected"), [
    ("pop-art", None),
    ("wasb://videos/models/starry.pth", "azureml://datastores/vidstyle/paths/models/starry.pth"),
    ("azureml://datastores/other/paths/m.pth", "azureml://datastores/other/paths/m.pth"),
])
def test_models_the_job_can_read(ref, expected):
    assert jobs.model_source(ref, "videos", "vidstyle", ["pop-art"]) == expected


@pytest.mark.parametrize(("ref", "complaint"), [
    ("wasb://elsewhere/models/starry.pth", "datastore 'vidstyle', which holds container 'videos'"),
    ("/opt/models/starry.pth", "cannot read the worker's disk"),
])
def test_models_the_job_cannot_read_are_refused_with_the_way_out(ref, complaint):
    with pytest.raises(jobs.ModelNotReachable, match="put the model there|upload it") as err:
        jobs.model_source(ref, "videos", "vidstyle", ["pop-art"])
    assert complaint in str(err.value)


# -- the operator and the trigger against a fake jobs client -------------------------------------

@pytest.fixture
def azureml(monkeypatch, container):
    """A fake workspace whose datastore "vidstyle" is the test's container; fast polling; CPU jobs."""
    client = FakeMLClient({"vidstyle": (load_settings().wasb_conn_id, container)})
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_DEFAULT", json.dumps({"conn_type": "azure", "extra": WORKSPACE}))
    monkeypatch.setattr(AzureMLHook, "get_conn", lambda self: client)
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_POLL_SECONDS", "0.05")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_MAX_POLL_SECONDS", "0.2")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_DEVICE", "cpu")
    return client


@pytest.fixture
def staged(store, tmp_path) -> ChunkTask:
    """A chunk of four frames (chunk.json + piece.nut) uploaded where the split would have put it."""
    task = chunk_task(container=store.container)
    video = make_video(tmp_path / "four.mp4", seconds=4 * 1001 / 30000, size="32x24", audio=False)
    folder = cut_chunks(video, tmp_path / "cut")[0]
    for path in folder.iterdir():
        store.upload(path, task.input_dir + path.name)
    return task


def operator(task: ChunkTask) -> StylizeChunkOperator:
    return StylizeChunkOperator(task_id="stylize_chunk", work=task.to_dict() | {"backend": "azureml"})


def submit(task: ChunkTask) -> tuple[StylizeChunkOperator, TaskDeferred]:
    op = operator(task)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"run_id": RUN_ID})
    return op, deferred.value


def submit_hanging(azureml: FakeMLClient, task: ChunkTask) -> tuple[StylizeChunkOperator, TaskDeferred, str]:
    """Submit a chunk whose job runs until released; returns once the job is Running."""
    azureml.jobs.behaviour = lambda job: "hang"
    op, deferred = submit(task)
    azureml.jobs.wait_until(deferred.trigger.job_name, "Running")
    return op, deferred, deferred.trigger.job_name


def wait(deferred: TaskDeferred) -> dict:
    """What the triggerer does: rebuild the trigger from its serialized form, run it to its event."""
    from airflow.sdk._shared.module_loading import import_string

    classpath, kwargs = deferred.trigger.serialize()
    trigger = import_string(classpath)(**json.loads(json.dumps(kwargs)))

    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


@pytest.mark.timeout(180)
def test_a_chunk_job_is_submitted_deferred_on_and_its_output_collected(azureml, staged, store, capsys):
    op, deferred = submit(staged)
    name = jobs.base_name(staged, RUN_ID) + "-1"
    assert azureml.jobs.submitted == [name]
    assert isinstance(deferred.trigger, AzureMLJobTrigger) and deferred.method_name == "execute_complete"
    log = capsys.readouterr().out  # the task log: Airflow's structlog writes it to stdout here
    assert f"submitted Azure ML job {name}" in log and f"https://ml.azure.com/runs/{name}" in log

    event = wait(deferred)
    assert event["status"] == "success" and event["job"] == name
    result = op.execute_complete({"run_id": RUN_ID}, event)
    assert result["frames"] == 4 and result["device"] == "cpu"
    assert azureml.jobs.get(name).transitions == ["Preparing", "Running", "Finalizing", "Completed"]
    assert store.exists(staged.output_dir + "segment.mp4")
    assert store.read_json(staged.output_dir + "result.json")["frames"] == 4


@pytest.mark.timeout(180)
def test_a_failed_job_fails_its_chunk_with_the_job_and_its_error_and_the_retry_resubmits(azureml, staged):
    azureml.jobs.behaviour = lambda job: "fail" if job.name.endswith("-1") else "run"
    op, deferred = submit(staged)
    event = wait(deferred)
    assert event["status"] == "failed" and event["job_status"] == "Failed"
    with pytest.raises(RuntimeError) as err:
        op.execute_complete({"run_id": RUN_ID}, event)
    message, first = str(err.value), jobs.base_name(staged, RUN_ID) + "-1"
    for part in ("incoming/My Clip.mp4", staged.chunk_label, first, "Failed", "CUDA error: out of memory",
                 f"https://ml.azure.com/runs/{first}"):
        assert part in message
    assert azureml.jobs.cancelled == []  # it had ended: nothing to cancel

    op, deferred = submit(staged)  # Airflow's retry of the same mapped task
    second = jobs.base_name(staged, RUN_ID) + "-2"
    assert azureml.jobs.submitted == [first, second]
    assert op.execute_complete({"run_id": RUN_ID}, wait(deferred))["frames"] == 4


@pytest.mark.timeout(180)
def test_a_retry_while_the_job_still_runs_reattaches_instead_of_paying_twice(azureml, staged):
    _, _, name = submit_hanging(azureml, staged)
    op, again = submit(staged)  # the worker was lost; the task's retry runs execute() anew
    assert again.trigger.job_name == name and azureml.jobs.submitted == [name]
    azureml.jobs.release(name)
    assert op.execute_complete({"run_id": RUN_ID}, wait(again))["frames"] == 4


@pytest.mark.timeout(180)
def test_a_retry_after_the_job_completed_takes_its_output_without_a_new_job(azureml, staged, store):
    _, deferred = submit(staged)
    assert wait(deferred)["status"] == "success"
    op = operator(staged)  # the task died after the job ended, before it resumed
    assert op.execute({"run_id": RUN_ID})["frames"] == 4
    assert len(azureml.jobs.submitted) == 1

    store.delete_prefix(staged.output_dir)  # but a completed job whose output is gone is run again
    _, deferred = submit(staged)
    assert len(azureml.jobs.submitted) == 2 and wait(deferred)["status"] == "success"


@pytest.mark.timeout(120)
def test_killing_the_task_or_marking_it_failed_cancels_the_job(azureml, staged):
    op, deferred, name = submit_hanging(azureml, staged)
    asyncio.run(deferred.trigger.on_kill())  # the user acted on the deferred task: the triggerer calls this
    assert azureml.jobs.cancelled == [name] and azureml.jobs.get(name).status == "Canceled"
    asyncio.run(deferred.trigger.on_kill())  # a second kill finds it ended and does nothing
    assert azureml.jobs.cancelled == [name]

    op, deferred = submit(staged)  # while on a worker (before deferring), on_kill cancels too
    assert deferred.trigger.job_name.endswith("-2")
    op.on_kill()
    assert azureml.jobs.cancelled == [name, deferred.trigger.job_name]


@pytest.mark.timeout(120)
def test_a_job_that_stops_responding_is_cancelled_and_its_chunk_failed(azureml, staged):
    azureml.jobs.behaviour = lambda job: "not_responding"
    op, deferred = submit(staged)
    event = wait(deferred)
    assert (event["status"], event["job_status"]) == ("failed", "NotResponding")
    with pytest.raises(RuntimeError, match="NotResponding"):
        op.execute_complete({"run_id": RUN_ID}, event)
    assert azureml.jobs.cancelled == [event["job"]]


@pytest.mark.timeout(120)
def test_a_job_past_its_deadline_is_cancelled_and_its_chunk_failed(azureml, staged, monkeypatch):
    azureml.jobs.behaviour = lambda job: "hang"
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_JOB_TIMEOUT_MINUTES", "0")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_QUEUE_TIMEOUT_MINUTES", "0")
    op, deferred = submit(staged)
    started = time.monotonic()
    event = wait(deferred)
    assert event["status"] == "timeout" and time.monotonic() - started < 10
    with pytest.raises(RuntimeError, match="ended timeout"):
        op.execute_complete({"run_id": RUN_ID}, event)
    assert azureml.jobs.get(event["job"]).status == "Canceled"


@pytest.mark.timeout(60)
def test_the_trigger_polls_with_backoff_and_gives_up_on_a_failing_api(azureml, staged, monkeypatch):
    from azure.core.exceptions import ServiceRequestError

    azureml.jobs.behaviour = lambda job: "hang"
    _, deferred = submit(staged)
    trigger, delays = deferred.trigger, []
    trigger.poll_seconds, trigger.max_poll_seconds = 1.0, 4.0
    real_sleep = asyncio.sleep

    async def no_wait(seconds):
        delays.append(seconds)
        if len(delays) == 6:
            azureml.jobs.release(trigger.job_name)
        await real_sleep(0.05)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    assert wait(deferred)["status"] == "success"
    assert delays[:5] == pytest.approx([1.0, 1.5, 2.25, 3.375, 4.0])

    calls = []

    def broken_get(name):
        calls.append(name)
        raise ServiceRequestError("connection reset")

    monkeypatch.setattr(azureml.jobs, "get", broken_get)
    event = wait(deferred)
    assert event["status"] == "error" and "connection reset" in event["error"] and len(calls) == 5


# -- provisioning ----------------------------------------------------------------------------------

def test_the_cluster_spec_scales_to_zero_on_the_configured_gpus():
    settings = dataclasses.replace(load_settings(), azureml_max_nodes=8, azureml_idle_seconds=600)
    body = provision.cluster_spec(settings)._to_rest_object().as_dict()
    props = body["properties"]["properties"]
    assert props["vmSize"] == "Standard_NC4as_T4_v3" and props["vmPriority"] == "LowPriority"
    assert props["scaleSettings"] == {"minNodeCount": 0, "maxNodeCount": 8, "nodeIdleTimeBeforeScaleDown": "PT10M"}
    assert body["identity"] == {"type": "SystemAssigned"}
    dedicated = dataclasses.replace(settings, azureml_tier="dedicated", azureml_compute_identity="/sub/x/id/y")
    body = provision.cluster_spec(dedicated)._to_rest_object().as_dict()
    assert body["properties"]["properties"]["vmPriority"] == "Dedicated"
    assert body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"/sub/x/id/y": {}}}
    with pytest.raises(provision.ProvisionError, match="low_priority or dedicated"):
        provision.cluster_spec(dataclasses.replace(settings, azureml_tier="spot"))


def test_provisioning_is_idempotent_and_refuses_to_replace_what_it_cannot_update(capsys):
    client, settings = FakeMLClient({}), load_settings()
    assert provision.provision(client, settings) == {"datastore": "created", "cluster": "created",
                                                     "environment": "created"}
    assert provision.provision(client, settings) == {"datastore": "unchanged", "cluster": "unchanged",
                                                     "environment": "unchanged"}
    assert len(client.compute.writes) == len(client.environments.writes) == len(client.datastores.writes) == 1

    datastore = client.datastores.writes[0]
    assert (datastore.account_name, datastore.container_name) == ("devstoreaccount1", settings.container)
    assert type(datastore.credentials).__name__ == "NoneCredentialConfiguration"  # identity-based, no key
    env = client.environments.writes[0]
    assert env.name == settings.azureml_environment and len(env.version) == 16
    assert env.build.dockerfile_path == "Dockerfile"

    bigger = dataclasses.replace(settings, azureml_max_nodes=10)
    assert provision.provision(client, bigger, only=("cluster",)) == {"cluster": "updated"}
    assert client.compute.get(settings.azureml_compute).max_instances == 10
    with pytest.raises(provision.ProvisionError, match="VM size"):
        provision.provision(client, dataclasses.replace(settings, azureml_vm_size="Standard_NC24ads_A100_v4"),
                            only=("cluster",))
    with pytest.raises(provision.ProvisionError, match="points at"):
        provision.provision(client, dataclasses.replace(settings, container="other"), only=("datastore",))
    assert "cluster vidstyle-gpu: updated" in capsys.readouterr().out


def test_the_environment_is_built_from_the_scoring_image(tmp_path):
    version = provision.stage_build_context(tmp_path)
    assert (tmp_path / "Dockerfile").read_text() == provision.DOCKERFILE.read_text()
    assert (tmp_path / "scoring" / "cli.py").is_file() and (tmp_path / "scoring" / "models" / "pop-art.pth").is_file()
    assert not list(tmp_path.rglob("__pycache__"))
    assert "PYTHONPATH=/app" in (tmp_path / "Dockerfile").read_text()  # jobs run outside WORKDIR
    again = tmp_path / "again"
    again.mkdir()
    assert provision.stage_build_context(again) == version  # same sources, same version: no rebuild


# -- credentials ---------------------------------------------------------------------------------

def azure_conn(monkeypatch, **fields) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_AZUREML_TEST", json.dumps({"conn_type": "azure", **fields}))
    return "azureml_test"


def test_a_service_principal_connection_signs_in_without_logging_its_secret(monkeypatch, caplog):
    from azure.identity import ClientSecretCredential

    caplog.set_level(logging.DEBUG)
    conn_id = azure_conn(monkeypatch, login="app-id", password="s3cret-value",
                         extra={"tenantId": "tenant-1", **WORKSPACE})
    client = AzureMLHook(conn_id).get_conn()
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        "0000-sub", "media-rg", "media-ml")
    assert isinstance(client._credential, ClientSecretCredential)
    assert "s3cret-value" not in caplog.text


def test_without_a_secret_the_connection_uses_managed_identity(monkeypatch):
    from azure.identity import DefaultAzureCredential

    conn_id = azure_conn(monkeypatch, extra={"managed_identity_client_id": "mi-client", **WORKSPACE})
    assert isinstance(AzureMLHook(conn_id).get_conn()._credential, DefaultAzureCredential)


def test_a_connection_that_does_not_name_the_workspace_says_what_is_missing(monkeypatch):
    conn_id = azure_conn(monkeypatch, extra={"subscriptionId": "0000-sub"})
    with pytest.raises(ValueError, match="resource_group_name, workspace_name"):
        AzureMLHook(conn_id).get_conn()


# -- the whole processing DAG ----------------------------------------------------------------------

@pytest.mark.timeout(600)
@pytest.mark.usefixtures("serialized_dags")
def test_the_dag_scores_every_chunk_as_an_azure_ml_job_and_retries_only_the_failed_one(azureml, store, tmp_path):
    from test_dags import task_states

    from vidstyle import media
    from vidstyle.layout import Layout
    from vidstyle.localrun import load_dag

    # chunk 2's first job fails (a preempted node, say); its retry, and every other chunk, run for real
    azureml.jobs.behaviour = lambda job: "fail" if job.tags["chunk"] == "1" and job.name.endswith("-1") else "run"
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size="64x48")
    store.upload(src, "incoming/azure/clip.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/azure/clip.mp4", "chunk_frames": 12,
                                                  "backend": "azureml"})
    states = task_states(dr)
    assert str(dr.state) == "success", states
    assert [states[f"stylize_chunk[{i}]"] for i in range(3)] == [("success", 1), ("success", 2), ("success", 1)]
    assert len(azureml.jobs.submitted) == 4  # three chunks, one resubmission
    for name in azureml.jobs.submitted:
        spec = azureml.jobs.jobs[name].spec
        assert spec.compute == load_settings().azureml_compute and spec.environment == "vidstyle-scoring@latest"

    outputs = Layout(load_settings()).outputs("incoming/azure/clip.mp4", Layout(load_settings()).default_output())
    out = store.download(outputs["video"], tmp_path / "out.mp4")
    assert len(media.video_times(out)[0]) == len(media.video_times(src)[0]) == 30
    assert media.audio_span(out)
    manifest = store.read_json(outputs["manifest"])
    assert [c["frames"] for c in manifest["chunks"]] == [12, 12, 6]
    assert {c["device"] for c in manifest["chunks"]} == {"cpu"}
    assert manifest["params"]["backend"] == "azureml"


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("serialized_dags")
def test_without_an_azure_ml_connection_the_run_fails_at_start_and_says_so(store, tmp_path):
    from test_dags import task_states

    from vidstyle.layout import Layout
    from vidstyle.ledger import Ledger
    from vidstyle.localrun import load_dag

    store.upload(make_video(tmp_path / "clip.mp4", audio=False), "incoming/clip.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/clip.mp4", "backend": "azureml"})
    assert str(dr.state) == "failed" and task_states(dr)["start"] == ("failed", 1)
    entry = Ledger(store, Layout(load_settings())).get(store.video("incoming/clip.mp4").video_id)
    assert "needs the Airflow connection 'azureml_default'" in entry["runs"][dr.run_id]["error"]
