"""The Azure ML backend, offline: the job body as the REST API receives it, the operator and
trigger state machine through azure-ai-ml's own MLClient against the local Azure ML service
(tests/azureml_service: HTTPS, signed in with a real ClientSecretCredential, here in a thread,
whose jobs run the real scorer on Azurite folders), provisioning, credentials, and the whole
processing DAG scoring its chunks through the service's jobs.

Nothing here reaches Azure; docs/azure-ml.md lists what has not run against a real workspace.
tests/cluster/test_azureml_triggerer.py runs the same backend under Airflow's own scheduler and
triggerer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shlex
import subprocess
import sys
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.pipeline.azureml_support import (
    REGISTERED,
    RUN_ID,
    SPEC,
    WORKSPACE,
    chunk_task,
    operator,
    register,
    submit,
    submit_hanging,
    wait,
    wait_for_status,
    wait_while,
)
from tests.support import ROOT, make_video
from vidstyle.airflow.triggers.azureml_job import AzureMLJobTrigger
from vidstyle.hooks.azureml import AzureMLHook
from vidstyle.pipeline import provisioning as provision
from vidstyle.pipeline.backends import azureml_jobs as jobs
from vidstyle.pipeline.environment import DOCKERFILE, environment_version, record_environment, recorded_environment
from vidstyle.pipeline.identity import current_video
from vidstyle.pipeline.manifest import job_totals
from vidstyle.pipeline.settings import load_settings

# -- the job body ----------------------------------------------------------------------------------

def rest_body(job) -> dict:
    """What azure-ai-ml sends to the REST API for this job (before resolving names to ARM ids)."""
    return job._to_job()._to_rest_object().as_dict()


def test_the_job_body_runs_the_scorer_on_the_chunk_folders_on_the_cluster():
    task = chunk_task()
    name = jobs.base_name(task, RUN_ID) + "-1"
    body = rest_body(jobs.build_job(task, name, SPEC, "azureml://datastores/vidstyle/paths/models/starry.pth", RUN_ID,
                                    sidecar="azureml://datastores/vidstyle/paths/models/starry.json"))
    props = body["properties"]
    assert body["name"] == name and props["jobType"] == "Command"
    assert shlex.split(props["command"]) == [
        "python", "-m", "scoring", "stylize", "--model", "${{inputs.model}}", "--input", "${{inputs.frames}}",
        "--output", "${{outputs.styled}}", "--batch-size", "0", "--precision", "auto", "--device", "cuda",
        "--result", "${{outputs.styled}}/result.json", "--flicker-every", "8", "--sidecar", "${{inputs.model_sidecar}}"]
    assert props["inputs"] == {
        "frames": {"uri": "azureml://datastores/vidstyle/paths/work/clip-0123456789/run/chunks/00001/in/",
                   "mode": "Download", "jobInputType": "uri_folder"},
        "model": {"uri": "azureml://datastores/vidstyle/paths/models/starry.pth", "mode": "Download",
                  "jobInputType": "uri_file"},
        "model_sidecar": {"uri": "azureml://datastores/vidstyle/paths/models/starry.json", "mode": "Download",
                          "jobInputType": "uri_file"}}
    assert props["outputs"] == {
        "styled": {"uri": "azureml://datastores/vidstyle/paths/work/clip-0123456789/run/chunks/00001/out/",
                   "mode": "Upload", "jobOutputType": "uri_folder"}}
    assert props["computeId"] == "gpu-t4"
    assert props["environmentId"] == "vidstyle-scoring:0123456789abcdef"  # pinned, never @latest
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
    assert "--sidecar" not in argv
    assert props["identity"] == {"identityType": "UserIdentity"}


def test_a_run_pins_the_version_provisioning_recorded_not_what_its_own_files_hash_to(container, tmp_path):
    """Each worker hashed its own checkout: a byte of difference (a local edit, CRLF endings, an
    image without images/) gave a version nobody registered, and every job was refused."""
    from vidstyle.pipeline.backends import backend_class

    settings = load_settings()
    with pytest.raises(ValueError, match="run `vidstyle provision`"):  # nothing recorded yet: a clear refusal
        backend_class("azureml").options(settings)
    record_environment(settings, "feedbeef00000000")
    assert environment_version() != "feedbeef00000000"
    options = backend_class("azureml").options(settings)
    assert options["environment"] == f"{settings.azureml_environment}:feedbeef00000000"
    assert provision.stage_build_context(tmp_path) == environment_version()  # what provision registers
    props = rest_body(jobs.build_job(chunk_task(environment=options["environment"]), "n-1", SPEC, None,
                                     RUN_ID))["properties"]
    assert props["environmentId"] == "vidstyle-scoring:feedbeef00000000"  # not "@latest"


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
    assert jobs.model_source(ref, "videos", "vidstyle") == expected


@pytest.mark.parametrize(("ref", "complaint"), [
    ("wasb://elsewhere/models/starry.pth", "datastore 'vidstyle', which holds container 'videos'"),
    ("/opt/models/starry.pth", "cannot read the worker's disk"),
])
def test_models_the_job_cannot_read_are_refused_with_the_way_out(ref, complaint):
    with pytest.raises(jobs.ModelNotReachable, match="put the model there|upload it") as err:
        jobs.model_source(ref, "videos", "vidstyle")
    assert complaint in str(err.value)


@pytest.mark.parametrize("error", [
    "Execution failed. User process 'python' exited with status code 2. Please check log file",
    "UserError: exited with code 2",
])
def test_the_scorers_bad_input_exit_is_read_from_the_jobs_error(error):
    assert jobs.exit_status(error) == 2
    assert jobs.exit_status("the node was preempted") is None


def test_every_trigger_imports_on_its_own_as_the_triggerer_loads_it():
    """The triggerer imports a trigger by its serialized class path in a process of its own."""
    from vidstyle.airflow.triggers.new_video import NewVideoTrigger

    for trigger in (AzureMLJobTrigger("c", "j", "l", 1.0, 1.0), NewVideoTrigger("c", "v", "i/", "s/", ".mp4")):
        classpath, _ = trigger.serialize()
        module, _, name = classpath.rpartition(".")
        done = subprocess.run([sys.executable, "-c", f"import importlib; getattr(importlib.import_module({module!r}), "
                                                     f"{name!r})"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{classpath}: {done.stderr[-1500:]}"


# -- the operator and the trigger against the stand-in ---------------------------------------------

@pytest.mark.timeout(180)
def test_a_chunk_job_is_submitted_deferred_on_and_its_output_and_cost_collected(azureml, staged, store, capsys,
                                                                                 monkeypatch):
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_PRICES", '{"Standard_NC4as_T4_v3": 0.36}')
    op, deferred = submit(staged)
    name = jobs.base_name(staged, RUN_ID) + "-1"
    assert azureml.service.submitted == [name]
    assert isinstance(deferred.trigger, AzureMLJobTrigger) and deferred.method_name == "execute_complete"
    log = capsys.readouterr().out  # the task log: Airflow's structlog writes it to stdout here
    assert f"submitted Azure ML job {name}" in log and f"https://ml.azure.com/runs/{name}" in log

    event = wait(deferred)
    assert event["status"] == "success" and event["job"] == name
    result = op.execute_complete({"run_id": RUN_ID}, event)
    assert result["frames"] == 4 and result["device"] == "cpu"
    assert azureml.api.calls.count("PUT", "/jobs/") == 1  # one job, created through the real client
    assert store.exists(staged.output_dir + "segment.mp4")
    assert store.read_json(staged.output_dir + "result.json")["frames"] == 4
    job = store.read_json(staged.output_dir + "job.json")  # beside the result: the manifest sums them
    assert job["job"] == name and job["vm_size"] == "Standard_NC4as_T4_v3" and job["gpus"] == 1
    assert 0 < job["node_seconds"] == job["gpu_seconds"] and job["queued_seconds"] >= 0
    assert 0 < job["startup_seconds"] < job["node_seconds"]  # container, model: before the first frame
    assert job["cost"] == pytest.approx(job["node_seconds"] / 3600 * 0.36, abs=1e-6)  # rounded to 6 places
    assert job["earlier"] == []


@pytest.mark.timeout(180)
def test_a_failed_job_fails_its_chunk_with_the_job_and_its_error_and_the_retry_resubmits(azureml, staged, store):
    azureml.service.add_rule({"attempt": 1, "behaviour": "fail", "error": "the node was preempted (low priority)"})
    op, deferred = submit(staged)
    event = wait(deferred)
    assert event["status"] == "failed" and event["job_status"] == "Failed"
    with pytest.raises(RuntimeError) as err:
        op.execute_complete({"run_id": RUN_ID}, event)
    message, first = str(err.value), jobs.base_name(staged, RUN_ID) + "-1"
    for part in ("incoming/My Clip.mp4", staged.chunk_label, first, "Failed", "preempted",
                 f"https://ml.azure.com/runs/{first}"):
        assert part in message
    assert azureml.service.cancelled == []  # it had ended: nothing to cancel

    op, deferred = submit(staged)  # Airflow's retry of the same mapped task
    second = jobs.base_name(staged, RUN_ID) + "-2"
    assert azureml.service.submitted == [first, second]
    assert op.execute_complete({"run_id": RUN_ID}, wait(deferred))["frames"] == 4
    # The preempted job's node time was paid for too: the chunk's figures carry it.
    job = store.read_json(staged.output_dir + "job.json")
    assert job["job"] == second and [e["job"] for e in job["earlier"]] == [first]
    assert job["earlier"][0]["node_seconds"] > 0 and job["earlier"][0]["startup_seconds"] is None
    totals = job_totals([job])
    assert (totals["jobs"], totals["retried_jobs"]) == (2, 1)
    assert totals["node_seconds"] == pytest.approx(job["node_seconds"] + job["earlier"][0]["node_seconds"])


@pytest.mark.timeout(180)
def test_a_scorer_that_refuses_its_input_is_not_retried_on_another_gpu(azureml, staged):
    azureml.service.add_rule({"behaviour": "exit2"})
    op, deferred = submit(staged)
    event = wait(deferred)
    assert event["status"] == "failed" and jobs.exit_status(event["error"]) == 2
    with pytest.raises(AirflowFailException, match="refused its input"):  # a failure Airflow does not retry
        op.execute_complete({"run_id": RUN_ID}, event)


@pytest.mark.timeout(180)
def test_a_retry_while_the_job_still_runs_reattaches_instead_of_paying_twice(azureml, staged):
    _, _, name = submit_hanging(azureml, staged)
    op, again = submit(staged)  # the worker was lost; the task's retry runs execute() anew
    assert again.trigger.job_name == name and azureml.service.submitted == [name]
    azureml.service.release(name)
    assert op.execute_complete({"run_id": RUN_ID}, wait(again))["frames"] == 4


@pytest.mark.timeout(180)
def test_a_retry_while_the_job_is_being_cancelled_submits_a_new_one(azureml, staged):
    """A clear of a deferred task cancels its job, and the task runs again at once: the job is
    CancelRequested for a while. Reattaching to it cost one spurious failure and one more retry."""
    azureml.service.add_rule({"hold": ["Running", "CancelRequested"]})  # Azure ML takes its time to cancel
    _, deferred = submit(staged)
    first = deferred.trigger.job_name
    wait_for_status(azureml, first, "Running")
    asyncio.run(deferred.trigger.on_kill())  # the clear
    assert azureml.service.jobs[first].status == "CancelRequested"  # held there until released below
    azureml.service.rules.clear()
    op, again = submit(staged)  # the task's new try, while the old job is still being cancelled
    assert again.trigger.job_name == jobs.base_name(staged, RUN_ID) + "-2"
    assert azureml.service.jobs[first].status == "CancelRequested"  # the premise held all along
    assert op.execute_complete({"run_id": RUN_ID}, wait(again))["frames"] == 4
    azureml.service.release(first)
    wait_for_status(azureml, first, "Canceled")


@pytest.mark.timeout(180)
def test_a_retry_after_the_job_completed_takes_its_output_without_a_new_job(azureml, staged, store):
    _, deferred = submit(staged)
    assert wait(deferred)["status"] == "success"
    op = operator(staged)  # the task died after the job ended, before it resumed
    assert op.execute({"run_id": RUN_ID})["frames"] == 4
    assert len(azureml.service.submitted) == 1

    store.delete_prefix(staged.output_dir)  # but a completed job whose output is gone is run again
    _, deferred = submit(staged)
    assert len(azureml.service.submitted) == 2 and wait(deferred)["status"] == "success"


@pytest.mark.timeout(120)
def test_killing_the_task_or_marking_it_failed_cancels_the_job(azureml, staged):
    op, deferred, name = submit_hanging(azureml, staged)
    asyncio.run(deferred.trigger.on_kill())  # the user acted on the deferred task: the triggerer calls this
    assert azureml.service.cancelled == [name]
    wait_for_status(azureml, name, "Canceled")
    asyncio.run(deferred.trigger.on_kill())  # a second kill finds it ended and does nothing
    assert azureml.service.cancelled == [name]

    op, deferred = submit(staged)  # while on a worker (before deferring), on_kill cancels too
    assert deferred.trigger.job_name.endswith("-2")
    op.on_kill()
    assert azureml.service.cancelled == [name, deferred.trigger.job_name]


@pytest.mark.timeout(120)
def test_a_job_that_stops_responding_gets_a_grace_period_then_is_cancelled(azureml, staged):
    azureml.service.add_rule({"behaviour": "not_responding"})  # held NotResponding until released
    op, deferred = submit(staged)
    name = deferred.trigger.job_name
    seen = azureml.api.calls.count("GET", f"/jobs/{name}$")
    wait_for_status(azureml, name, "NotResponding")

    async def recover_once_seen():  # the trigger reads it NotResponding at least once, then it recovers
        while azureml.api.calls.count("GET", f"/jobs/{name}$") < seen + 2:
            await asyncio.sleep(0.02)
        azureml.service.release(name)

    event = wait_while(deferred, recover_once_seen, not_responding_grace=3600.0)
    assert event["status"] == "success"  # it recovered within its grace
    op, deferred = submit(dataclasses.replace(staged, chunk_index=2, output_dir=staged.output_dir + "b/"))
    event = wait(deferred, not_responding_grace=0.5)
    assert (event["status"], event["job_status"]) == ("hung", "NotResponding")
    with pytest.raises(RuntimeError, match="hung"):
        op.execute_complete({"run_id": RUN_ID}, event)
    assert azureml.service.cancelled == [event["job"]]


@pytest.mark.timeout(120)
def test_only_time_queued_counts_against_the_queue_timeout(azureml, staged):
    # A job held Queued (no node) past its limit is given up and cancelled, naming the queue...
    azureml.service.add_rule({"hold": ["Queued"]})
    op, deferred = submit(staged)
    wait_for_status(azureml, deferred.trigger.job_name, "Queued")
    event = wait(deferred, queue_timeout=0.5)
    assert event["status"] == "timeout" and "for a node" in event["error"]
    assert azureml.service.jobs[event["job"]].status in ("CancelRequested", "Queued")  # held there until now
    with pytest.raises(RuntimeError, match="for a node"):
        op.execute_complete({"run_id": RUN_ID}, event)
    assert azureml.service.cancelled == [event["job"]]

    # ... while one held Running for longer than that limit, after its short wait, is not.
    azureml.service.rules[:] = [{"hold": ["Running"]}]
    op, deferred = submit(dataclasses.replace(staged, chunk_index=3, output_dir=staged.output_dir + "c/"))
    name = deferred.trigger.job_name
    wait_for_status(azureml, name, "Running")

    async def release_after_the_limit():  # the trigger has seen it Running for longer than the queue limit
        seen = azureml.api.calls.count("GET", f"/jobs/{name}$")
        began = time.monotonic()
        while time.monotonic() - began < 1.0 or azureml.api.calls.count("GET", f"/jobs/{name}$") < seen + 3:
            await asyncio.sleep(0.05)
        azureml.service.release(name)

    assert wait_while(deferred, release_after_the_limit, queue_timeout=0.5)["status"] == "success"


@pytest.mark.timeout(60)
def test_the_trigger_polls_with_backoff(azureml, staged, monkeypatch):
    azureml.service.add_rule({"hold": ["Running"]})
    _, deferred = submit(staged)
    wait_for_status(azureml, deferred.trigger.job_name, "Running")  # one status all along: one backoff
    delays = []
    real_sleep = asyncio.sleep

    async def no_wait(seconds):
        delays.append(seconds)
        if len(delays) == 6:
            azureml.service.release(deferred.trigger.job_name)
        await real_sleep(0.05)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    assert wait(deferred, poll_seconds=1.0, max_poll_seconds=4.0)["status"] == "success"
    assert delays[:5] == pytest.approx([1.0, 1.5, 2.25, 3.375, 4.0])


@pytest.mark.timeout(120)
def test_a_model_in_storage_travels_with_its_sidecar(azureml, store, staged, tiny_model):
    tiny_model.with_suffix(".json").write_text('{"architecture": {"width": 4, "blocks": 1}}')
    store.upload(tiny_model, "models/tiny.pth")
    store.upload(tiny_model.with_suffix(".json"), "models/tiny.json")
    task = dataclasses.replace(staged, model=f"wasb://{store.container}/models/tiny.pth")
    op, deferred = submit(task)
    inputs = azureml.service.jobs[deferred.trigger.job_name].props["inputs"]
    assert inputs["model_sidecar"]["uri"] == "azureml://datastores/vidstyle/paths/models/tiny.json"
    assert op.execute_complete({"run_id": RUN_ID}, wait(deferred))["frames"] == 4


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


AZURE_ONLY = ("datastore", "cluster", "environment")


@pytest.mark.timeout(120)
def test_provisioning_is_idempotent_and_refuses_to_replace_what_it_cannot_update(azureml, capsys):
    settings, api, hook = load_settings(), azureml.api, AzureMLHook()
    api.assets.clear()  # an empty workspace, but for the environment (see below)
    # Creating an environment from a build context uploads it to the workspace's default storage
    # account, which the local service does not serve: it is registered as provision registers it.
    register(api, settings, version=environment_version())
    api.assets.pop(f"/computes/{settings.azureml_compute}".lower())
    assert provision.provision(hook, settings, AZURE_ONLY) == {"datastore": "created", "cluster": "created",
                                                                 "environment": "unchanged"}
    assert provision.provision(hook, settings, AZURE_ONLY) == {"datastore": "unchanged", "cluster": "unchanged",
                                                                 "environment": "unchanged"}
    assert api.calls.count("PUT", "/datastores/") == api.calls.count("PUT", "/computes/") == 1

    datastore = api.assets[f"/datastores/{settings.azureml_datastore}"]["properties"]  # as the service keeps it
    assert (datastore["accountName"], datastore["containerName"]) == ("devstoreaccount1", settings.container)
    assert datastore["credentials"] == {"credentialsType": "None"}  # identity-based, no key
    assert recorded_environment(settings) == f"{settings.azureml_environment}:{environment_version()}"

    bigger = dataclasses.replace(settings, azureml_max_nodes=10)
    assert provision.provision(hook, bigger, only=("cluster",)) == {"cluster": "updated"}
    assert AzureMLHook().get_compute(settings.azureml_compute).max_instances == 10  # read back through the SDK
    for change, what in ((dict(azureml_vm_size="Standard_NC24ads_A100_v4"), "VM size"),
                         (dict(azureml_tier="dedicated"), "tier"),
                         (dict(azureml_compute_identity="/subscriptions/s/identities/other"), "identity")):
        with pytest.raises(provision.ProvisionError, match=f"has {what} .* delete it"):
            provision.provision(hook, dataclasses.replace(bigger, **change), only=("cluster",))
    with pytest.raises(provision.ProvisionError, match="points at"):
        provision.provision(hook, dataclasses.replace(settings, container="other"), only=("datastore",))
    out = capsys.readouterr().out
    assert "cluster vidstyle-gpu: updated" in out
    assert "pool scoring: " in out and "vidstyle pool" in out and provision.RESOURCES == AZURE_ONLY  # not here


@pytest.mark.usefixtures("airflow_db")
def test_the_scoring_pool_counts_deferred_chunks_and_is_sized_from_the_settings():
    """A deferred task held no pool slot: every chunk of every video was submitted at once."""
    import uuid

    from airflow.models.pool import Pool

    from vidstyle.airflow.pool import ensure_pool
    from vidstyle.pipeline.settings import pool_slots

    name = f"scoring-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(load_settings(), backend="azureml", azureml_max_nodes=3, scoring_pool=name)
    assert ensure_pool(settings) == "created"
    pool = Pool.get_pool(name)
    assert (pool.slots, pool.include_deferred) == (6, True)  # a node's worth running, one waiting for each node
    assert ensure_pool(settings) == "unchanged"
    assert ensure_pool(dataclasses.replace(settings, azureml_pool_slots=4)) == "updated"
    assert pool_slots(dataclasses.replace(settings, backend="local")) == 1  # one chunk at a time here
    assert pool_slots(dataclasses.replace(settings, scoring_pool_slots=5)) == 5  # said outright: as said


def test_the_environment_is_built_from_the_scoring_image(tmp_path):
    version = provision.stage_build_context(tmp_path)
    assert (tmp_path / "Dockerfile").read_text() == DOCKERFILE.read_text()
    assert (tmp_path / "scoring" / "cli.py").is_file() and (tmp_path / "scoring" / "models" / "pop-art.pth").is_file()
    assert not list(tmp_path.rglob("__pycache__"))
    dockerfile = (tmp_path / "Dockerfile").read_text()
    assert "PYTHONPATH=/app" in dockerfile  # jobs run outside WORKDIR
    assert "FROM python:" in dockerfile  # a plain Python base: a command job needs only bash and Python
    assert "uv sync --locked" in dockerfile and "--extra scorer" in dockerfile  # from the one lock
    assert (tmp_path / "uv.lock").read_bytes() == (ROOT / "uv.lock").read_bytes()
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
def test_the_dag_scores_every_chunk_as_an_azure_ml_job_and_retries_only_the_failed_one(azureml, store, tmp_path,
                                                                                      monkeypatch):
    from tests.airflow.test_dags import task_states
    from vidstyle.cli.localrun import load_dag
    from vidstyle.media import probe as media
    from vidstyle.pipeline.layout import Layout

    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_PRICES", '{"Standard_NC4as_T4_v3": 0.5}')
    # chunk 2's first job fails like a preempted node; its retry, and every other chunk, run for real
    azureml.service.add_rule({"tags": {"chunk": "1"}, "attempt": 1, "behaviour": "fail"})
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size="64x48")
    store.upload(src, "incoming/azure/clip.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/azure/clip.mp4", "chunk_frames": 12,
                                                  "backend": "azureml"})
    states = task_states(dr)
    assert str(dr.state) == "success", states
    assert [states[f"stylize_chunk[{i}]"] for i in range(3)] == [("success", 1), ("success", 2), ("success", 1)]
    assert len(azureml.service.submitted) == 4  # three chunks, one resubmission
    pinned = {azureml.service.jobs[name].props["environmentId"] for name in azureml.service.submitted}
    env = load_settings().azureml_environment  # the recorded one, for all chunks, as the SDK resolved it
    assert len(pinned) == 1 and pinned.pop().endswith(f"/environments/{env}/versions/{REGISTERED}")

    outputs = Layout(load_settings()).outputs("incoming/azure/clip.mp4", Layout(load_settings()).default_output())
    out = store.download(outputs["video"], tmp_path / "out.mp4")
    assert len(media.video_times(out)[0]) == len(media.video_times(src)[0]) == 30
    manifest = store.read_json(outputs["manifest"])
    assert [c["frames"] for c in manifest["chunks"]] == [12, 12, 6]
    assert {c["device"] for c in manifest["chunks"]} == {"cpu"}
    assert manifest["params"]["backend"] == "azureml"
    cost = manifest["azureml"]  # what the video cost: all four jobs, the preempted one included
    assert (cost["jobs"], cost["retried_jobs"]) == (4, 1)
    assert cost["gpu_seconds"] == pytest.approx(sum(
        j["gpu_seconds"] for c in manifest["chunks"] for j in [c["azureml"], *c["azureml"]["earlier"]]))
    assert cost["cost"] == pytest.approx(cost["node_seconds"] / 3600 * 0.5, abs=1e-5)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("serialized_dags")
def test_without_an_azure_ml_connection_the_run_fails_at_start_and_says_so(store, tmp_path):
    from tests.airflow.test_dags import task_states
    from vidstyle.cli.localrun import load_dag
    from vidstyle.pipeline.layout import Layout
    from vidstyle.pipeline.ledger import Ledger

    store.upload(make_video(tmp_path / "clip.mp4", audio=False), "incoming/clip.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/clip.mp4", "backend": "azureml"})
    assert str(dr.state) == "failed" and task_states(dr)["start"] == ("failed", 1)
    entry = Ledger(store, Layout(load_settings())).get(current_video(store, "incoming/clip.mp4").video_id)
    assert "needs the Airflow connection 'azureml_default'" in entry["runs"][dr.run_id]["error"]

