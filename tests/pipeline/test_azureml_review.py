"""The Azure ML defects a review against azure-ai-ml 1.35.2's and Airflow 3.3.2's own sources found,
each shown through azure-ai-ml's own MLClient against the local Azure ML service
(tests/azureml_service), which follows the service's order of states: Preparing (the image build)
before Queued, and the node only from Running."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.pipeline.azureml_support import RUN_ID, operator, register, submit, wait, wait_for_status, wait_while
from vidstyle.airflow.triggers.azureml_job import AzureMLJobTrigger
from vidstyle.hooks.azureml import AzureMLHook
from vidstyle.pipeline.backends import azureml_jobs as jobs
from vidstyle.pipeline.backends.azureml import AzureMLBackend
from vidstyle.pipeline.backends.azureml_cost import job_cost
from vidstyle.pipeline.manifest import job_totals
from vidstyle.pipeline.settings import load_settings

# -- 1. the registered environment, recorded where every worker reads it ---------------------------

def test_the_start_refuses_a_recorded_environment_the_workspace_does_not_have(azureml):
    settings = load_settings()
    AzureMLBackend().preflight("pop-art", settings)  # as provisioned: fine
    register(azureml.api, settings, version="0000000000000000")
    azureml.api.assets.pop(f"/environments/{settings.azureml_environment}/versions/0000000000000000".lower())
    with pytest.raises(ValueError, match="0000000000000000 does not exist in the workspace.*vidstyle provision"):
        AzureMLBackend().preflight("pop-art", settings)


# -- 3. Preparing is the image build: not time on a node ----------------------------------------------

@pytest.mark.timeout(120)
def test_a_slow_image_build_is_not_counted_against_the_run_timeout(azureml, staged):
    """Preparing was counted as running: the first run after a provision had its image build
    counted against the run timeout, and a slow build cancelled every job in flight."""
    azureml.service.add_rule({"hold": ["Preparing"], "behaviour": "succeed"})
    _, deferred = submit(staged)
    name = deferred.trigger.job_name
    wait_for_status(azureml, name, "Preparing")

    async def build_for_longer_than_the_run_timeout():
        seen = azureml.api.calls.count("GET", f"/jobs/{name}$")
        began = time.monotonic()  # the trigger reads it Preparing past the run timeout, then the build ends
        while time.monotonic() - began < 4.0 or azureml.api.calls.count("GET", f"/jobs/{name}$") < seen + 3:
            await asyncio.sleep(0.05)
        assert azureml.service.jobs[name].status == "Preparing"
        azureml.service.release(name)

    event = wait_while(deferred, build_for_longer_than_the_run_timeout, run_timeout=3.0)
    assert event["status"] == "success" and azureml.service.cancelled == []


@pytest.mark.timeout(120)
def test_a_build_that_never_ends_is_given_up_at_its_own_limit(azureml, staged):
    azureml.service.add_rule({"hold": ["Preparing"]})  # a build that never ends
    _, deferred = submit(staged)
    event = wait(deferred, prepare_timeout=0.5)
    assert event["status"] == "timeout" and "building its image" in event["error"]
    assert "azureml_prepare_timeout_minutes" in event["error"]


# -- 4. a systematic error fails once, not four times per chunk -------------------------------------

@pytest.mark.timeout(120)
def test_an_image_that_does_not_build_fails_the_chunk_without_retries(azureml, staged):
    azureml.service.add_rule({"behaviour": "build_fails"})
    op, deferred = submit(staged)
    event = wait(deferred)
    assert (event["status"], event["error_code"]) == ("failed", "UserError")
    with pytest.raises(AirflowFailException, match="before the scorer ran, as every job of this run would"):
        op.execute_complete({"run_id": RUN_ID}, event)


@pytest.mark.timeout(120)
def test_a_crashed_scorer_and_a_preempted_node_are_still_retried(azureml, staged):
    azureml.service.add_rule({"behaviour": "fail", "error": "the low-priority node was preempted"})  # SystemError
    op, deferred = submit(staged)
    with pytest.raises(RuntimeError) as err:
        op.execute_complete({"run_id": RUN_ID}, wait(deferred))
    assert not isinstance(err.value, AirflowFailException)
    crashed = {"status": "failed", "job": "j-1", "job_status": "Failed", "error_code": "UserError",
               "error": "UserError: Execution failed. User process 'python' exited with status code 1."}
    with pytest.raises(RuntimeError) as err:  # the scorer's own crash (a lost GPU, say): retried
        operator(staged).execute_complete({"run_id": RUN_ID}, crashed)
    assert not isinstance(err.value, AirflowFailException)


def test_a_job_the_service_refuses_at_submit_fails_without_retries(azureml, staged):
    azureml.api.fail("PUT", "/jobs/", status=404, code="UserError",
                     message="Environment vidstyle-scoring:0123456789abcdef not found")
    with pytest.raises(AirflowFailException, match="refused the job .404.*not found"):
        operator(staged).execute({"run_id": RUN_ID})


# -- 5. cost and timing figures -----------------------------------------------------------------------

def test_a_job_cancelled_while_queued_waited_until_its_end_and_cost_nothing():
    settings = load_settings()
    queued = job_cost({"created": 100.0, "started": None, "ended": 160.0}, {}, "j-1", settings)
    assert (queued["queued_seconds"], queued["node_seconds"], queued["gpu_seconds"]) == (60.0, 0.0, 0.0)


def test_an_earlier_job_still_cancelling_counts_its_node_time_so_far():
    settings = dataclasses.replace(load_settings(), azureml_prices='{"Standard_NC4as_T4_v3": 3.6}')
    ending = job_cost({"created": 100.0, "started": 110.0, "ended": None}, {}, "j-1", settings, now=150.0)
    assert ending["node_seconds"] == 40.0 and ending["still_ending"] and ending["cost"] == pytest.approx(0.04)
    final = job_cost({"created": 150.0, "started": 160.0, "ended": 260.0},
                     {"process_started_at": 165.0, "startup_seconds": 5.0}, "j-2", settings) | {"earlier": [ending]}
    totals = job_totals([final])
    assert totals["node_seconds"] == 140.0 and totals["cost"] is not None and totals["still_ending"] == 1
    assert totals["startup_share"] == pytest.approx(10.0 / 100.0)  # the final job's start-up over its own time
    assert "lower bounds" in totals["figures"] and "idle" in totals["figures"]


# -- 6. on_kill within Airflow's 30 s: no new sign-in; the credential closed --------------------------

@pytest.mark.timeout(60)
def test_on_kill_reuses_the_triggers_client_and_cleanup_closes_its_credential(azureml, staged, monkeypatch):
    azureml.service.add_rule({"hold": ["Running"]})
    _, deferred = submit(staged)
    closed = []
    real_close = AzureMLHook.close
    monkeypatch.setattr(AzureMLHook, "close", lambda self: closed.append(self._credential) or real_close(self))
    trigger: AzureMLJobTrigger = deferred.trigger
    tokens = azureml.api.calls.count("POST", "/oauth2/v2.0/token")

    async def user_marks_it_failed():
        polling = asyncio.ensure_future(trigger.run().__anext__())
        while azureml.service.jobs[trigger.job_name].reads < 2:
            await asyncio.sleep(0.05)
        polling.cancel()
        await trigger.on_kill()
        await trigger.cleanup()

    asyncio.run(user_marks_it_failed())
    assert azureml.api.calls.count("POST", "/oauth2/v2.0/token") == tokens + 1  # one sign-in: the trigger's
    assert azureml.service.cancelled == [trigger.job_name] and len(closed) == 1 and closed[0] is not None


# -- 7. jobs a failed chunk left running: in a real DAG run, tests/pipeline/test_azureml_sdk.py -----------

# -- 8. states that never timed out -------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_job_paused_before_it_ever_ran_counts_against_the_queue_timeout(azureml, staged):
    azureml.service.add_rule({"behaviour": "pause"})  # paused until released: never, here
    _, deferred = submit(staged)
    event = wait(deferred, queue_timeout=0.5)
    assert (event["status"], event["job_status"]) == ("timeout", "Paused") and "for a node" in event["error"]


@pytest.mark.timeout(120)
def test_a_cancel_that_never_ends_is_not_waited_for_forever(azureml, staged):
    azureml.service.add_rule({"hold": ["Running", "CancelRequested"]})  # a cancel that never ends
    _, deferred = submit(staged)
    wait_for_status(azureml, deferred.trigger.job_name, "Running")
    AzureMLHook().get_conn().jobs.begin_cancel(deferred.trigger.job_name)  # someone cancelled it in Studio
    event = wait(deferred, cancel_wait=0.5)
    assert (event["status"], event["job_status"]) == ("timeout", "CancelRequested")


@pytest.mark.timeout(120)
def test_a_job_requeued_after_it_ran_does_not_count_its_whole_life_as_queued_after_a_restart(azureml, staged):
    """A preempted node the service retried: a trigger started after that (the triggerer
    restarted) counted the job's whole life since creation as waiting for a node."""
    azureml.service.add_rule({"behaviour": "requeue", "hold": ["Running", "Requeued"]})
    _, deferred = submit(staged)
    job = azureml.service.jobs[deferred.trigger.job_name]
    job.wait_for("Running")  # its first node, held there
    job.created -= 3600  # the service says it was created an hour ago: its life is far over the limit below
    azureml.service.release(job.name)  # the node is lost; the job goes back to the queue, held there
    job.entered["Queued"].clear()
    job.wait_for("Queued")

    async def release_once_seen_queued():
        seen = azureml.api.calls.count("GET", f"/jobs/{job.name}$")
        while azureml.api.calls.count("GET", f"/jobs/{job.name}$") < seen + 2:
            await asyncio.sleep(0.02)
        assert job.status == "Queued"
        azureml.service.release(job.name)

    # A trigger started now (after a restart) sees it Queued, a job older than the limit...
    event = wait_while(deferred, release_once_seen_queued, queue_timeout=600.0)
    assert event["status"] == "success"  # ... its wait for a node is not


def test_jobs_of_a_chunk_are_found_by_their_names(azureml, staged):
    _, deferred = submit(staged)
    assert jobs.job_names(AzureMLHook(), staged, RUN_ID) == [deferred.trigger.job_name]
    assert jobs.job_names(AzureMLHook(), staged, RUN_ID + "__other") == []


def test_the_trigger_round_trips_its_new_limits():
    trigger = AzureMLJobTrigger("c", "j", "l", 1.0, 2.0, prepare_timeout=3.0, cancel_wait=4.0, outage_timeout=5.0)
    classpath, kwargs = trigger.serialize()
    assert (kwargs["prepare_timeout"], kwargs["cancel_wait"], kwargs["outage_timeout"]) == (3.0, 4.0, 5.0)
    assert AzureMLJobTrigger(**kwargs).serialize() == (classpath, kwargs)
