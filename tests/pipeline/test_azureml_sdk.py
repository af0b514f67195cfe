"""Defects that only azure-ai-ml's own MLClient shows (issue #30), each through the real client
against the local Azure ML service (tests/azureml_service), which answers and fails as Azure ML
does: quota and cluster state as the SDK reads them, a PUT the service applied but whose answer
was lost, sign-in refused, a cancel refused, an outage, a build that never ends."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.pipeline.azureml_support import RUN_ID, compute_body, submit, wait, wait_for_status, wait_while
from vidstyle.airflow.triggers.azureml_job import CANCELLING
from vidstyle.hooks.azureml import AzureMLHook
from vidstyle.pipeline.backends.azureml import AzureMLBackend
from vidstyle.pipeline.settings import load_settings

QUOTA = ("Operation could not be completed as it results in exceeding approved Standard NCASv3_T4 Family "
         "Cores quota. Current limit: 0, requested: 4.")


# -- quota and cluster state, as azure-ai-ml 1.35.2 reads them --------------------------------------

def test_a_cluster_whose_provisioning_failed_stops_the_run_at_start_with_its_error(azureml):
    """AmlCompute.provisioning_errors is the first error's code as a string in 1.35.2 (the check
    read it as a list: 'Q; u; o; t; a'), and str(provisioning_state) is 'ProvisioningState.FAILED'."""
    settings = load_settings()
    azureml.api.set_compute(settings.azureml_compute, compute_body(
        settings, state="Failed", provisioning_errors=[{"error": {"code": "QuotaExceeded", "message": QUOTA}}]))
    with pytest.raises(ValueError, match=r"cannot run jobs: .*QuotaExceeded") as err:
        AzureMLBackend().preflight("pop-art", settings)
    assert "Q; u" not in str(err.value)

    azureml.api.set_compute(settings.azureml_compute, compute_body(settings, state="Failed"))
    with pytest.raises(ValueError, match="provisioning state Failed"):
        AzureMLBackend().preflight("pop-art", settings)


def test_a_cluster_that_cannot_scale_up_for_lack_of_quota_stops_the_run_at_start(azureml):
    """A failed scale-up is not a provisioning error: Azure ML reports it in the AmlCompute's own
    ``properties.errors`` while the cluster itself stays Succeeded."""
    azureml.service.quota_error = QUOTA
    with pytest.raises(ValueError, match="cannot run jobs: QuotaExceeded: .*Current limit: 0"):
        AzureMLBackend().preflight("pop-art", load_settings())


@pytest.mark.timeout(120)
def test_a_chunk_that_never_got_a_node_for_lack_of_quota_is_not_retried(azureml, staged):
    azureml.service.quota_error = QUOTA  # the cluster cannot grow: the job stays Queued
    op, deferred = submit(staged)
    wait_for_status(azureml, deferred.trigger.job_name, "Queued")
    event = wait(deferred, queue_timeout=0.5)
    assert (event["status"], event["job_status"]) == ("timeout", "Queued")
    with pytest.raises(AirflowFailException, match="never got a node: QuotaExceeded: .*Current limit: 0"):
        op.execute_complete({"run_id": RUN_ID}, event)


# -- a submit is idempotent -----------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_submit_whose_answer_was_lost_after_the_service_applied_it_waits_for_that_job(azureml, staged):
    """azure-core retries the PUT; Azure ML answers the repeat "already exists" (400): the chunk
    failed for good while its job ran on, billing."""
    azureml.api.fail("PUT", "/jobs/", drop_after_applying=True)
    op, deferred = submit(staged)
    assert azureml.api.calls.count("PUT", "/jobs/") >= 1 and len(azureml.service.submitted) == 1
    assert deferred.trigger.job_name == azureml.service.submitted[0]
    assert op.execute_complete({"run_id": RUN_ID}, wait(deferred))["frames"] == 4


# -- sign-in refused: once, with the cause ---------------------------------------------------------

def test_a_refused_sign_in_at_submit_fails_the_chunk_once_with_the_cause(azureml, staged):
    azureml.api.refuse_sign_in = True
    with pytest.raises(AirflowFailException, match="AADSTS7000215"):
        submit(staged)


@pytest.mark.timeout(120)
def test_a_sign_in_refused_mid_run_fails_the_chunk_once_and_leaves_the_job(azureml, staged):
    azureml.service.add_rule({"hold": ["Running"]})
    op, deferred = submit(staged)
    wait_for_status(azureml, deferred.trigger.job_name, "Running")
    azureml.api.refuse_sign_in = True
    azureml.api.revoke()  # the secret was rotated: every token and every new sign-in is refused
    event = wait(deferred, outage_timeout=3600.0)
    assert event["status"] == "refused" and ("AADSTS7000215" in event["error"] or "401" in event["error"])
    with pytest.raises(AirflowFailException, match="sign"):
        op.execute_complete({"run_id": RUN_ID}, event)
    assert azureml.service.cancelled == []


# -- a cancel that fails is said, not taken as "already ended" --------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("status", [403, 429, 503])
def test_a_refused_cancel_is_logged_and_raised_not_taken_as_ended(azureml, staged, status, caplog):
    from vidstyle.hooks.azureml import AzureMLCancelFailed

    azureml.service.add_rule({"hold": ["Running"]})
    _, deferred = submit(staged)
    name = deferred.trigger.job_name
    wait_for_status(azureml, name, "Running")
    azureml.api.fail("POST", "/cancel$", status=status, code="AuthorizationFailed" if status == 403 else "Busy",
                     message="the service refused the cancel", retry_after=0, times=100)
    caplog.set_level(logging.WARNING)
    with pytest.raises(AzureMLCancelFailed, match=f"{name}.*{status}"):
        AzureMLHook().cancel_job(name)
    assert azureml.service.jobs[name].status == "Running"
    azureml.api.faults.clear()
    assert AzureMLHook().cancel_job(name) is True  # the service takes it now
    wait_for_status(azureml, name, "Canceled")
    assert AzureMLHook().cancel_job(name) is False  # already ended: nothing to do, nothing raised


# -- Preparing: its own failure, its own clock -------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_build_that_never_ends_fails_the_chunk_without_retries(azureml, staged):
    """Retried as transient, every chunk restarted the same large build."""
    azureml.service.add_rule({"hold": ["Preparing"]})
    op, deferred = submit(staged)
    event = wait(deferred, prepare_timeout=0.5)
    assert event["status"] == "timeout" and "building its image" in event["error"]
    with pytest.raises(AirflowFailException, match="image"):
        op.execute_complete({"run_id": RUN_ID}, event)
    assert azureml.service.cancelled == [event["job"]]


@pytest.mark.timeout(120)
def test_after_a_restart_the_queue_clock_does_not_count_the_image_build(azureml, staged):
    azureml.service.add_rule({"hold": ["Preparing", "Queued"]})
    _, deferred = submit(staged)
    job = azureml.service.jobs[deferred.trigger.job_name]
    job.wait_for("Preparing")
    job.created -= 3600  # the service says it was created an hour ago: a build far longer than the limit
    azureml.service.release(job.name)
    job.wait_for("Queued")

    async def release_once_seen_queued():
        seen = azureml.api.calls.count("GET", f"/jobs/{job.name}$")
        while azureml.api.calls.count("GET", f"/jobs/{job.name}$") < seen + 2:
            await asyncio.sleep(0.02)
        azureml.service.release(job.name)

    # The trigger starts now, as after a triggerer restart: the job is Queued.
    assert wait_while(deferred, release_once_seen_queued, queue_timeout=600.0)["status"] == "success"


# -- an outage is bounded by time ----------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_short_outage_of_many_failed_reads_does_not_end_the_try(azureml, staged):
    """Five failed reads in a row ended the try, however short the outage."""
    azureml.service.add_rule({"hold": ["Running"]})
    _, deferred = submit(staged)
    name = deferred.trigger.job_name
    wait_for_status(azureml, name, "Running")
    outage = azureml.api.fail("GET", f"/jobs/{name}$", status=503, code="ServiceUnavailable", retry_after=0,
                              times=40)  # ten reads, each tried four times by azure-core

    async def release_after_the_outage():
        while outage.seen < outage.times:
            await asyncio.sleep(0.05)
        azureml.service.release(name)

    assert wait_while(deferred, release_after_the_outage, outage_timeout=3600.0)["status"] == "success"


@pytest.mark.timeout(120)
def test_an_outage_longer_than_its_limit_ends_the_try_and_leaves_the_job(azureml, staged):
    azureml.service.add_rule({"hold": ["Running"]})
    op, deferred = submit(staged)
    name = deferred.trigger.job_name
    wait_for_status(azureml, name, "Running")
    azureml.api.fail("GET", f"/jobs/{name}$", status=503, code="ServiceUnavailable", retry_after=0, times=10**6)
    event = wait(deferred, outage_timeout=1.0)
    assert event["status"] == "error" and "ServiceUnavailable" in event["error"] and "1 s" in event["error"]
    with pytest.raises(RuntimeError, match="left running"):
        op.execute_complete({"run_id": RUN_ID}, event)
    assert azureml.service.cancelled == [] and azureml.service.jobs[name].status == "Running"


# -- settings ----------------------------------------------------------------------------------------

def test_the_cancel_wait_and_the_outage_limit_are_settings(azureml, staged, monkeypatch):
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_CANCEL_WAIT_MINUTES", "7")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__AZUREML_OUTAGE_MINUTES", "11")
    _, deferred = submit(staged)
    _, kwargs = deferred.trigger.serialize()
    assert deferred.trigger.limits[CANCELLING] == kwargs["cancel_wait"] == 7 * 60
    assert kwargs["outage_timeout"] == 11 * 60
    loaded = load_settings()
    assert (loaded.azureml_cancel_wait_minutes, loaded.azureml_outage_minutes) == (7, 11)


# -- on_kill before the first poll: the trigger's own sign-in, not a second one ---------------------

@pytest.mark.timeout(60)
def test_on_kill_right_after_the_trigger_starts_signs_in_once(azureml, staged):
    azureml.service.add_rule({"hold": ["Running"]})
    _, deferred = submit(staged)
    trigger = deferred.trigger
    tokens = azureml.api.calls.count("POST", "/oauth2/v2.0/token")

    async def killed_at_once():
        polling = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0)  # the trigger has started its first poll (signing in), no more
        await trigger.on_kill()
        polling.cancel()
        await trigger.cleanup()

    asyncio.run(killed_at_once())
    assert azureml.api.calls.count("POST", "/oauth2/v2.0/token") == tokens + 1
    assert azureml.service.cancelled == [trigger.job_name]


# -- a job a failed chunk left running, in a real DAG run (#33) ----------------------------------------

def _refuse_the_triggers_first_read(azureml) -> threading.Thread:
    """Once the chunk's job runs (held there), its next status read is refused (401): the chunk
    fails at once, without retries, and leaves the job running, as a rotated secret would."""
    def refuse() -> None:
        deadline = time.monotonic() + 300
        while not azureml.service.jobs:  # submitted by the DAG run's chunk task
            assert time.monotonic() < deadline, "no job was submitted"
            threading.Event().wait(0.05)
        [job] = azureml.service.jobs.values()
        job.wait_for("Running", 300)
        azureml.api.fail("GET", f"/jobs/{job.name}$", status=401, code="InvalidAuthenticationToken",
                         message="The access token is invalid.")

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    return thread


def _one_chunk_run(azureml, store, tmp_path, name: str):
    from tests.airflow.test_dags import task_states
    from tests.support import make_video
    from vidstyle.cli.localrun import load_dag

    azureml.service.add_rule({"hold": ["Running"]})
    store.upload(make_video(tmp_path / f"{name}.mp4", seconds=0.3, size="32x24", audio=False), f"incoming/{name}.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": f"incoming/{name}.mp4", "chunk_frames": 100,
                                                  "backend": "azureml"})
    return dr, task_states(dr)


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("serialized_dags")
def test_a_job_a_failed_chunk_left_running_is_cancelled_by_the_dag_run(azureml, store, tmp_path):
    _refuse_the_triggers_first_read(azureml)
    dr, states = _one_chunk_run(azureml, store, tmp_path, "left")
    assert str(dr.state) == "failed" and states["stylize_chunk[0]"] == ("failed", 1), states  # once, no retries
    [name] = azureml.service.jobs
    assert states["cancel_leftover_jobs"][0] == "success" and azureml.service.cancelled == [name]


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("serialized_dags")
def test_a_leftover_job_the_service_will_not_cancel_fails_the_task_and_says_so(azureml, store, tmp_path, caplog):
    _refuse_the_triggers_first_read(azureml)
    azureml.api.fail("POST", "/cancel$", status=403, code="AuthorizationFailed", times=100,
                     message="The client does not have authorization to perform action jobs/cancel")
    caplog.set_level(logging.ERROR)
    _, states = _one_chunk_run(azureml, store, tmp_path, "stuck")
    [name] = azureml.service.jobs
    assert states["cancel_leftover_jobs"][0] == "failed", states
    assert azureml.service.jobs[name].status == "Running" and f"did not cancel job {name}" in caplog.text
    azureml.service.release(name)
