"""Score a chunk as an Azure ML command job on a GPU cluster, without holding a worker slot.

score(): find the chunk's job from an earlier try (still able to finish, or done with its
output in place) or submit a new one, log its Studio link, and defer to AzureMLJobTrigger.
resume(): read the chunk's result.json and what the job cost, or fail this chunk alone with the
job's name, status and error. A job that hung or ran past its time is cancelled first; after a
status-read error nothing is cancelled (the job may be fine: the retry reattaches to it); a
scorer that refused its input (exit 2) fails the chunk without retries, on any GPU.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from vidstyle.azureml import jobs
from vidstyle.azureml.environment import environment_version
from vidstyle.azureml.hook import AzureMLHook
from vidstyle.azureml.trigger import AzureMLJobTrigger
from vidstyle.backends.base import EXIT_BAD_INPUT, JOB_FILE, ChunkTask, ComputeBackend, ScorerRejected
from vidstyle.backends.local import builtin_model_names
from vidstyle.blobs import BlobStore, parse_wasb, require_blob
from vidstyle.config import Settings, load_settings

# GPUs per node of the sizes the pipeline is likely to run on (Azure's NC and ND series); others count as one.
GPUS = {"standard_nc4as_t4_v3": 1, "standard_nc8as_t4_v3": 1, "standard_nc16as_t4_v3": 1,
        "standard_nc64as_t4_v3": 4, "standard_nc6s_v3": 1, "standard_nc12s_v3": 2, "standard_nc24s_v3": 4,
        "standard_nc24ads_a100_v4": 1, "standard_nc48ads_a100_v4": 2, "standard_nc96ads_a100_v4": 4,
        "standard_nd96asr_v4": 8, "standard_nd96amsr_a100_v4": 8, "standard_nc40ads_h100_v5": 1,
        "standard_nc80adis_h100_v5": 2}


class AzureMLJobFailed(RuntimeError):
    """The chunk's job ended without a usable result; the task's retry submits a new job (or
    reattaches to the same one, when only its status could not be read)."""


class AzureMLBackend(ComputeBackend):
    name = "azureml"

    def __init__(self) -> None:
        self._job_name: str | None = None

    @staticmethod
    def options(settings: Settings) -> dict:
        # The environment's version is fixed here, once per run (the split makes the chunks' tasks).
        return {"batch_size": settings.azureml_batch_size, "precision": settings.azureml_precision,
                "compile": settings.azureml_compile,
                "environment": f"{settings.azureml_environment}:{environment_version()}"}

    @staticmethod
    def chunk_frames(settings: Settings) -> int:
        # A job's start (a container, its data, the model) is paid per chunk: see README, "Chunk size".
        return settings.azureml_chunk_frames

    def preflight(self, ref: str, conn_id: str) -> None:
        settings = load_settings()
        AzureMLHook(settings.azureml_conn_id).check()  # a missing connection fails the run here, once
        self._model_uri(ref, settings)  # a model the job cannot read is refused here
        if parse_wasb(ref):
            require_blob(ref, conn_id)

    @staticmethod
    def _model_uri(ref: str, settings: Settings) -> str | None:
        return jobs.model_source(ref, settings.container, settings.azureml_datastore, builtin_model_names())

    @staticmethod
    def _sidecar(ref: str, model_uri: str | None, conn_id: str) -> str | None:
        """The model's JSON sidecar as a job input, when there is one beside it in storage."""
        parsed, uri = parse_wasb(ref), jobs.sidecar_uri(model_uri)
        if not parsed or not uri:
            return None
        container, blob = parsed
        return uri if BlobStore(conn_id, container).exists(blob.rpartition(".")[0] + ".json") else None

    def score(self, operator: Any, context: Any, task: ChunkTask) -> dict:
        settings, run_id = load_settings(), context["run_id"]
        spec, model_uri = jobs.JobSpec.from_settings(settings), self._model_uri(task.model, settings)
        store = BlobStore(task.conn_id, task.container)
        sidecar = self._sidecar(task.model, model_uri, task.conn_id)
        client = AzureMLHook(settings.azureml_conn_id).get_conn()
        earlier_result = functools.cache(lambda: self._result(store, task))  # read once, if at all
        job, reattached = jobs.submit_or_reattach(
            client, task, run_id, lambda name: jobs.build_job(task, name, spec, model_uri, run_id, sidecar),
            output_ready=lambda: earlier_result() is not None,
        )
        self._job_name = job.name
        operator.log.info("%s: %s Azure ML job %s (%s) on %s: %s", task.where,
                          "reattached to" if reattached else "submitted", job.name, job.status,
                          settings.azureml_compute, job.studio_url)
        if job.status == jobs.COMPLETED:  # only a reattached job: its output was just checked
            return self._collect(earlier_result(), task, job.name, client, settings, store)
        operator.defer(
            trigger=AzureMLJobTrigger(
                conn_id=settings.azureml_conn_id, job_name=job.name, label=task.where,
                queue_timeout=settings.azureml_queue_timeout_minutes * 60,
                run_timeout=settings.azureml_job_timeout_minutes * 60 + 600,  # Azure ML's own limit first
                not_responding_grace=settings.azureml_not_responding_minutes * 60,
                poll_seconds=settings.azureml_poll_seconds, max_poll_seconds=settings.azureml_max_poll_seconds),
            method_name="execute_complete",
        )
        raise AssertionError("defer() returns only by raising")  # pragma: no cover

    def resume(self, operator: Any, context: Any, task: ChunkTask, event: dict) -> dict:
        name, status, kind = event["job"], event.get("job_status"), event["status"]
        self._job_name, settings = name, load_settings()
        where = f"{task.chunk_label}: Azure ML job {name}"
        if kind == "success":
            operator.log.info("%s completed: %s", where, event.get("studio_url"))
            client = AzureMLHook(settings.azureml_conn_id).get_conn()
            return self._collect(self._result(BlobStore(task.conn_id, task.container), task), task, name, client,
                                 settings, BlobStore(task.conn_id, task.container))
        error = event.get("error") or "no error given"
        if kind == "error":  # only the status was unreadable: the job is left running for the retry
            raise AzureMLJobFailed(f"{where}: its status could not be read ({error}); the job was left running "
                                   "and the chunk's retry takes it over")
        if kind in ("timeout", "hung"):
            self.cancel(operator, task)  # it still holds (or waits for) a node
        elif kind == "failed" and jobs.exit_status(error) == EXIT_BAD_INPUT:
            raise ScorerRejected(f"{where}: the scorer refused its input (exit {EXIT_BAD_INPUT}); another GPU "
                                 f"cannot help: {error}")
        raise AzureMLJobFailed(f"{where} ended {kind} (job status {status}): {error}; "
                               f"Studio: {event.get('studio_url') or 'n/a'}")

    def cancel(self, operator: Any, task: ChunkTask) -> None:
        if not self._job_name:
            return
        client = AzureMLHook(load_settings().azureml_conn_id).get_conn()
        if jobs.cancel_job(client, self._job_name):
            operator.log.warning("%s: cancelled Azure ML job %s", task.chunk_label, self._job_name)

    @staticmethod
    def _result(store: BlobStore, task: ChunkTask) -> dict | None:
        """The chunk's result.json when the output is complete (segment first, result last)."""
        try:
            result = store.read_json(task.output_dir + "result.json")
        except FileNotFoundError:
            return None
        if result.get("frames") != task.frames or not store.exists(task.output_dir + "segment.mp4"):
            return None
        return result

    @staticmethod
    def _collect(result: dict | None, task: ChunkTask, job_name: str, client: Any, settings: Settings,
                 store: BlobStore) -> dict:
        if result is None:
            raise AzureMLJobFailed(f"{task.chunk_label}: Azure ML job {job_name} completed but left no complete "
                                   f"output (a segment of {task.frames} frames and result.json) in {task.output_dir}")
        cost = job_cost(jobs.job_times(client, job_name), result, job_name, settings)
        # Jobs that failed or were cancelled before this one (a preempted node) were paid for too.
        base, _, attempt = job_name.rpartition("-")
        cost["earlier"] = [job_cost(jobs.job_times(client, f"{base}-{i}"), {}, f"{base}-{i}", settings)
                           for i in range(1, int(attempt) if attempt.isdigit() else 1)]
        store.write_json(task.output_dir + JOB_FILE, cost)  # beside the segment: the manifest sums them
        return result | {"azureml": cost}


def job_cost(times: dict, result: dict, job_name: str, settings: Settings) -> dict:
    """What one chunk's job took: time queued for a node, time on the node (what is billed),
    the part of that before the scorer stylized its first frame (container start, data
    download, model load, compile), GPU-seconds, and at the configured price, the cost."""
    created, started, ended = times["created"], times["started"], times["ended"]
    node = ended - started if started and ended else (0.0 if ended and created else None)  # never got a node
    # The scorer's own start-up (torch, model, compile) plus what the node did before it began.
    startup = None
    if started and result.get("process_started_at"):
        startup = max(0.0, result["process_started_at"] - started) + float(result.get("startup_seconds") or 0)
    gpus = GPUS.get(settings.azureml_vm_size.lower(), 1)
    price = prices(settings).get(settings.azureml_vm_size.lower())
    return {"job": job_name, "vm_size": settings.azureml_vm_size, "gpus": gpus,
            "queued_seconds": round(started - created, 3) if created and started else None,
            "node_seconds": round(node, 3) if node is not None else None,
            "startup_seconds": round(startup, 3) if startup is not None else None,
            "gpu_seconds": round(node * gpus, 3) if node is not None else None,
            "cost": round(node / 3600 * price, 6) if node is not None and price is not None else None}


def prices(settings: Settings) -> dict[str, float]:
    """``azureml_prices`` (JSON: VM size -> price per node-hour), keys in lower case."""
    if not settings.azureml_prices.strip():
        return {}
    try:
        return {k.lower(): float(v) for k, v in json.loads(settings.azureml_prices).items()}
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"azureml_prices must be JSON like {{\"Standard_NC4as_T4_v3\": 0.15}}: {exc}") from exc
