"""Score a chunk as an Azure ML command job on a GPU cluster, without holding a worker slot.

score(): find the chunk's job from an earlier try (still able to finish, or done with its
output in place) or submit a new one, and answer which job to wait for (the operator defers).
resume(): read the chunk's result.json and what the job cost, or fail this chunk alone with the
job's name, status and error. A job that hung or ran past its time is cancelled first; after a
status-read error nothing is cancelled (the job may be fine: the retry reattaches to it); a
scorer that refused its input (exit 2) fails the chunk without retries, on any GPU.
"""

from __future__ import annotations

import functools
import logging

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from scoring.chunk import EXIT_BAD_INPUT, RESULT_NAME, SEGMENT_NAME
from vidstyle.hooks import azureml as states
from vidstyle.hooks.azureml import COMPLETED, AzureMLHook
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.backends import azureml_jobs as jobs
from vidstyle.pipeline.backends.azureml_cost import job_cost
from vidstyle.pipeline.backends.base import JOB_FILE, ChunkTask, ComputeBackend, WaitForJob
from vidstyle.pipeline.environment import recorded_environment
from vidstyle.pipeline.errors import BadInput, ScorerRejected
from vidstyle.pipeline.models import WASB, ModelRef, require_stored_model
from vidstyle.pipeline.settings import Settings, load_settings

log = logging.getLogger(__name__)
# The service's answers at submit that no retry changes: a bad body, no permission, no such
# environment, compute or datastore (throttling, 429, and its own failures, 5xx, are retried).
REFUSALS = frozenset({400, 401, 403, 404, 422})


class AzureMLJobFailed(RuntimeError):
    """The chunk's job ended without a usable result; the task's retry submits a new job (or
    reattaches to the same one, when only its status could not be read)."""


def signed_out(exc: ClientAuthenticationError) -> str:
    """A refused sign-in in the authority's own words (its AADSTS code says why), never a secret."""
    return f"Azure ML refused the sign-in: {exc.message or exc}"


class AzureMLRefused(BadInput):
    """A failure every job of the run would meet (an image that does not build, data the cluster
    may not read, an environment or cluster that is missing, no quota): retrying cannot help."""


class AzureMLBackend(ComputeBackend):
    name = "azureml"

    def __init__(self) -> None:
        self._job_name: str | None = None

    @staticmethod
    def options(settings: Settings) -> dict:
        # The environment's version is fixed here, once per run (the split makes the chunks' tasks):
        # the one provision registered and recorded, whatever this worker's own files hash to.
        return {"batch_size": settings.azureml_batch_size, "precision": settings.azureml_precision,
                "compile": settings.azureml_compile, "environment": recorded_environment(settings)}

    @staticmethod
    def chunk_frames(settings: Settings) -> int:
        # A job's start (a container, its data, the model) is paid per chunk: see README, "Chunk size".
        return settings.azureml_chunk_frames

    def preflight(self, ref: str, settings: Settings) -> None:
        """Everything every job of the run needs, once, before any frame is split: the connection,
        a model the jobs can read, the registered environment in the workspace, a cluster that
        can give nodes (its provisioning errors name a quota too small, say)."""
        hook = AzureMLHook(settings.azureml_conn_id)
        hook.check()  # a missing connection fails the run here, once
        self._model_uri(ref, settings)  # a model the job cannot read is refused here
        if (model := ModelRef.parse(ref)).kind == WASB:
            require_stored_model(model, settings.wasb_conn_id)
        environment = recorded_environment(settings)
        name, _, version = environment.partition(":")
        if hook.get_environment(name, version) is None:
            raise AzureMLRefused(f"the recorded scoring environment {environment} does not exist in the workspace "
                                 "(deleted, or provisioned into another one): run `vidstyle provision`")
        if problems := hook.compute_problems(settings.azureml_compute):
            raise AzureMLRefused(f"compute cluster {settings.azureml_compute} cannot run jobs: "
                                 f"{'; '.join(problems)}")

    @staticmethod
    def _model_uri(ref: str, settings: Settings) -> str | None:
        return jobs.model_source(ref, settings.container, settings.azureml_datastore)

    @staticmethod
    def _sidecar(ref: str, model_uri: str | None, conn_id: str) -> str | None:
        """The model's JSON sidecar as a job input, when there is one beside it in storage."""
        model, uri = ModelRef.parse(ref), jobs.sidecar_uri(model_uri)
        if model.kind != WASB or not uri:
            return None
        return uri if BlobStore(conn_id, model.container).exists(model.sidecar_blob) else None

    def score(self, task: ChunkTask, run_id: str) -> dict | WaitForJob:
        settings = load_settings()
        spec, model_uri = jobs.JobSpec.from_settings(settings), self._model_uri(task.model, settings)
        store = BlobStore(task.conn_id, task.container)
        sidecar = self._sidecar(task.model, model_uri, task.conn_id)
        hook = AzureMLHook(settings.azureml_conn_id)
        earlier_result = functools.cache(lambda: self._result(store, task))  # read once, if at all
        try:
            job, reattached = jobs.submit_or_reattach(
                hook, task, run_id, lambda name: jobs.build_job(task, name, spec, model_uri, run_id, sidecar),
                output_ready=lambda: earlier_result() is not None,
            )
        except ClientAuthenticationError as exc:  # no status code: a credential refused, every chunk would be
            raise AzureMLRefused(f"{task.where}: {signed_out(exc)}") from exc
        except HttpResponseError as exc:
            if getattr(exc, "status_code", None) in REFUSALS:  # the service refused the job itself
                raise AzureMLRefused(f"{task.where}: Azure ML refused the job ({exc.status_code}): "
                                     f"{exc.message or exc}") from exc
            raise
        self._job_name = job.name
        note = (f"{task.where}: {'reattached to' if reattached else 'submitted'} Azure ML job {job.name} "
                f"({states.status_of(job)}) on {settings.azureml_compute}: {job.studio_url}")
        if states.status_of(job) == COMPLETED:  # only a reattached job: its output was just checked
            log.info("%s", note)
            return self._collect(earlier_result(), task, job.name, hook, settings, store)
        return WaitForJob(
            conn_id=settings.azureml_conn_id, job_name=job.name, label=task.where,
            queue_timeout=settings.azureml_queue_timeout_minutes * 60,
            run_timeout=settings.azureml_job_timeout_minutes * 60 + 600,  # Azure ML's own limit first
            not_responding_grace=settings.azureml_not_responding_minutes * 60,
            poll_seconds=settings.azureml_poll_seconds, max_poll_seconds=settings.azureml_max_poll_seconds,
            prepare_timeout=settings.azureml_prepare_timeout_minutes * 60,
            cancel_wait=settings.azureml_cancel_wait_minutes * 60, outage_timeout=settings.azureml_outage_minutes * 60,
            note=note)

    def resume(self, task: ChunkTask, event: dict) -> dict:
        name, status, kind = event["job"], event.get("job_status"), event["status"]
        self._job_name, settings = name, load_settings()
        where = f"{task.chunk_label}: Azure ML job {name}"
        if kind == "success":
            log.info("%s completed: %s", where, event.get("studio_url"))
            store = BlobStore(task.conn_id, task.container)
            return self._collect(self._result(store, task), task, name, AzureMLHook(settings.azureml_conn_id),
                                 settings, store)
        error = event.get("error") or "no error given"
        studio = f"Studio: {event.get('studio_url') or 'n/a'}"
        if kind == "error":  # only the status was unreadable: the job is left running for the retry
            raise AzureMLJobFailed(f"{where}: its status could not be read ({error}); the job was left running "
                                   "and the chunk's retry takes it over")
        if kind == "refused":  # the sign-in: every chunk's trigger meets it; the job is left as it is
            raise AzureMLRefused(f"{where}: {error}; the job was left as it is (cancel it in Studio if need be); "
                                 f"fix the connection's credential and clear the chunk")
        if kind in ("timeout", "hung"):
            self.cancel(task)  # it still holds (or waits for) a node
            if status == states.PREPARING:  # the image build: every job of the run waits on the same one
                raise AzureMLRefused(f"{where} was still building its image (Preparing) at its limit: {error}. Every "
                                     f"job of this run waits on the same image: see the job's build log in Studio, "
                                     f"then raise azureml_prepare_timeout_minutes or fix the image; {studio}")
            if status in states.QUEUED and (problems := AzureMLHook(settings.azureml_conn_id).compute_problems(
                    settings.azureml_compute)):
                raise AzureMLRefused(f"{where} never got a node: {'; '.join(problems)}; {studio}")
        elif kind == "failed":
            exit_code = jobs.exit_status(error)
            if exit_code == EXIT_BAD_INPUT:
                raise ScorerRejected(f"{where}: the scorer refused its input (exit {EXIT_BAD_INPUT}); another GPU "
                                     f"cannot help: {error}")
            if event.get("error_code") == states.USER_ERROR and exit_code is None:
                # Not the scorer's own exit but the job's set-up: the image, the data access, the
                # environment. Every other chunk's job meets the same: no retries.
                raise AzureMLRefused(f"{where} failed before the scorer ran, as every job of this run would "
                                     f"(job status {status}): {error}; {studio}")
        raise AzureMLJobFailed(f"{where} ended {kind} (job status {status}): {error}; {studio}")

    def cancel(self, task: ChunkTask) -> None:
        if self._job_name and AzureMLHook(load_settings().azureml_conn_id).cancel_job(self._job_name):
            log.warning("%s: cancelled Azure ML job %s", task.chunk_label, self._job_name)

    def cancel_leftovers(self, tasks: list[ChunkTask], run_id: str) -> list[str]:
        """Every job of the run's chunks still in flight once all chunk tasks have ended: the job
        of a chunk marked failed before its trigger started (Airflow never calls on_kill then).
        Every chunk is tried; a cancel the service refused is raised once all were tried."""
        hook, cancelled, refused = AzureMLHook(load_settings().azureml_conn_id), [], []
        for task in tasks:
            for name in jobs.job_names(hook, task, run_id):
                try:
                    if hook.cancel_job(name):
                        log.warning("%s: cancelled Azure ML job %s, left running by a chunk that ended", task.where,
                                    name)
                        cancelled.append(name)
                except states.AzureMLCancelFailed as exc:
                    refused.append(str(exc))
        if refused:
            raise states.AzureMLCancelFailed(f"{len(refused)} job(s) left running could not be cancelled "
                                             f"(cancelled: {', '.join(cancelled) or 'none'}): {'; '.join(refused)}")
        return cancelled

    @staticmethod
    def _result(store: BlobStore, task: ChunkTask) -> dict | None:
        """The chunk's result.json when the output is complete (segment first, result last)."""
        try:
            result = store.read_json(task.output_dir + RESULT_NAME)
        except FileNotFoundError:
            return None
        if result.get("frames") != task.frames or not store.exists(task.output_dir + SEGMENT_NAME):
            return None
        return result

    @staticmethod
    def _collect(result: dict | None, task: ChunkTask, job_name: str, hook: AzureMLHook, settings: Settings,
                 store: BlobStore) -> dict:
        if result is None:
            raise AzureMLJobFailed(f"{task.chunk_label}: Azure ML job {job_name} completed but left no complete "
                                   f"output (a segment of {task.frames} frames and result.json) in {task.output_dir}")
        cost = job_cost(hook.job_times(job_name), result, job_name, settings)
        # Jobs that failed or were cancelled before this one (a preempted node) were paid for too.
        base, _, attempt = job_name.rpartition("-")
        cost["earlier"] = [job_cost(hook.job_times(f"{base}-{i}"), {}, f"{base}-{i}", settings)
                           for i in range(1, int(attempt) if attempt.isdigit() else 1)]
        store.write_json(task.output_dir + JOB_FILE, cost)  # beside the segment: the manifest sums them
        return result | {"azureml": cost}
