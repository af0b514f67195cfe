"""One chunk as one Azure ML command job: its spec and its deterministic name.

The job runs the same ``python -m scoring stylize`` command line as the local backend, inside
the scoring image, on the chunk's blob folders read through a datastore on the pipeline's own
container. Names derive from the Airflow run and the chunk, so a retried task finds the job an
earlier try started (still running, or finished with its output in place) instead of paying
for the same chunk twice; a failed or cancelled job gets a successor with the next number.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vidstyle.hooks.azureml import (
    COMPLETED,
    NOT_RESPONDING,
    ON_NODE,
    PAUSED,
    PREPARING,
    QUEUED,
    UNKNOWN,
    status_of,
)
from vidstyle.pipeline.backends.base import ChunkTask, scorer_args
from vidstyle.pipeline.environment import environment_version
from vidstyle.pipeline.models import AZUREML, BUILTIN, WASB, ModelRef
from vidstyle.pipeline.settings import Settings

if TYPE_CHECKING:
    from vidstyle.hooks.azureml import AzureMLHook

# A retry takes over a job that can still finish. Not one being cancelled: it will end Canceled,
# and waiting for that only to submit afresh costs a failed try.
REATTACH = QUEUED | ON_NODE | {PREPARING, NOT_RESPONDING, PAUSED, UNKNOWN}
# How Azure ML words a non-zero exit of the job's process; 2 is the scorer refusing its input.
EXIT_STATUS = re.compile(r"exited with (?:status )?code:? ?(\d+)", re.IGNORECASE)

MAX_ATTEMPTS = 50  # job names tried per chunk before giving up: a guard, not a retry policy
PLACEHOLDER = re.compile(r"^(\$\{\{(inputs|outputs)\.\w+\}\}|[\w@%+=:,./-])+$")


@dataclass(frozen=True)
class JobSpec:
    """The installation's Azure ML settings that shape every chunk's job."""

    datastore: str
    compute: str
    environment: str
    experiment: str
    identity: str
    input_mode: str
    device: str
    timeout_minutes: int

    @classmethod
    def from_settings(cls, s: Settings) -> JobSpec:
        return cls(s.azureml_datastore, s.azureml_compute, s.azureml_environment, s.azureml_experiment,
                   s.azureml_job_identity, s.azureml_input_mode, s.azureml_device, s.azureml_job_timeout_minutes)


class ModelNotReachable(ValueError):
    """The model reference names something an Azure ML job cannot read."""


def datastore_uri(datastore: str, path: str) -> str:
    return f"azureml://datastores/{datastore}/paths/{path}"


def model_source(ref: str, container: str, datastore: str) -> str | None:
    """The job input's URI for a model, or None for a model built into the scoring image."""
    model = ModelRef.parse(ref)
    if model.kind == BUILTIN:
        return None
    if model.kind == AZUREML:
        return ref
    if model.kind == WASB:
        if model.container != container or not model.blob:
            raise ModelNotReachable(
                f"model {ref}: an Azure ML job reads blobs through datastore {datastore!r}, which holds "
                f"container {container!r}; put the model there (wasb://{container}/models/...) or give an "
                "azureml://datastores/<name>/paths/<path> URI")
        return datastore_uri(datastore, model.blob)
    raise ModelNotReachable(
        f"model {ref!r} is a path on the worker: an Azure ML job cannot read the worker's disk; upload it to "
        f"wasb://{container}/models/")


def base_name(task: ChunkTask, run_id: str) -> str:
    """Stable per Airflow run and chunk content: equal for every try of one mapped task."""
    key = {k: v for k, v in task.to_dict().items() if k != "conn_id"} | {"run_id": run_id}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"vidstyle-{digest}-c{task.chunk_index:05d}"


def command_line(argv: list[str]) -> str:
    """Azure ML runs a command string: quote every argument except ``${{...}}`` placeholders."""
    return " ".join(a if PLACEHOLDER.match(a) else shlex.quote(a) for a in argv)


def exit_status(error: str) -> int | None:
    """The job's process exit status, when its error says one."""
    m = EXIT_STATUS.search(error or "")
    return int(m[1]) if m else None


def sidecar_uri(model_uri: str | None) -> str | None:
    """A checkpoint's JSON sidecar beside it (architecture, training settings), same datastore."""
    if not model_uri or not model_uri.startswith("azureml://datastores/"):
        return None
    base, dot, _ = model_uri.rpartition(".")
    return f"{base}.json" if dot else None


def build_job(task: ChunkTask, name: str, spec: JobSpec, model_uri: str | None, run_id: str,
              sidecar: str | None = None) -> Any:
    """The command job for one chunk (an azure.ai.ml ``Command``), ready for create_or_update."""
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.constants import AssetTypes, InputOutputModes
    from azure.ai.ml.entities import ManagedIdentityConfiguration, UserIdentityConfiguration

    read = _choice("azureml_input_mode", spec.input_mode,
                   {"download": InputOutputModes.DOWNLOAD, "ro_mount": InputOutputModes.RO_MOUNT})
    identity = _choice("azureml_job_identity", spec.identity,
                       {"managed": ManagedIdentityConfiguration, "user": UserIdentityConfiguration})()
    inputs = {"frames": Input(type=AssetTypes.URI_FOLDER, path=datastore_uri(spec.datastore, task.input_dir),
                              mode=read)}
    if model_uri:
        inputs["model"] = Input(type=AssetTypes.URI_FILE, path=model_uri, mode=InputOutputModes.DOWNLOAD)
    if sidecar:  # its own input: a uri_file lands alone in a folder, without the file beside it
        inputs["model_sidecar"] = Input(type=AssetTypes.URI_FILE, path=sidecar, mode=InputOutputModes.DOWNLOAD)
    outputs = {"styled": Output(type=AssetTypes.URI_FOLDER, path=datastore_uri(spec.datastore, task.output_dir),
                                mode=InputOutputModes.UPLOAD)}
    args = scorer_args(task, "${{inputs.model}}" if model_uri else task.model, "${{inputs.frames}}",
                       "${{outputs.styled}}", "${{outputs.styled}}/result.json", device=spec.device,
                       sidecar="${{inputs.model_sidecar}}" if sidecar else None)
    return command(
        name=name,
        display_name=f"{task.video_blob.rsplit('/', 1)[-1]} {task.chunk_label}"[:250],
        experiment_name=spec.experiment,
        description=f"{task.where}: {task.frames} frames, model {task.model}",
        command=command_line(["python", *args]),
        inputs=inputs,
        outputs=outputs,
        environment=task.environment or f"{spec.environment}:{environment_version()}",  # pinned, never @latest
        compute=spec.compute,
        instance_count=1,
        identity=identity,
        environment_variables={"PYTHONUNBUFFERED": "1"},
        timeout=spec.timeout_minutes * 60,
        tags={"video": task.video_blob[:256], "video_id": task.video_id, "chunk": str(task.chunk_index),
              "airflow_run_id": run_id[:256]},
    )


def _choice(setting: str, value: str, options: dict[str, Any]) -> Any:
    if value not in options:
        raise ValueError(f"{setting} must be one of {', '.join(options)}, not {value!r}")
    return options[value]


def job_names(hook: AzureMLHook, task: ChunkTask, run_id: str) -> list[str]:
    """The names of every job submitted for this chunk in this run, oldest first."""
    base, names = base_name(task, run_id), []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if hook.get_job(f"{base}-{attempt}") is None:
            break
        names.append(f"{base}-{attempt}")
    return names


def submit_or_reattach(hook: AzureMLHook, task: ChunkTask, run_id: str, make_job: Callable[[str], Any],
                       output_ready: Callable[[], bool]) -> tuple[Any, bool]:
    """The chunk's job: the latest one still running or done with its output, else a new one.

    Returns (job, reattached).
    """
    base, latest = base_name(task, run_id), None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        job = hook.get_job(f"{base}-{attempt}")
        if job is None:
            break
        latest = job
    else:
        raise RuntimeError(f"{task.chunk_label}: {MAX_ATTEMPTS} Azure ML jobs already tried for this chunk")
    status = status_of(latest) if latest is not None else None
    if latest is not None and (status in REATTACH or (status == COMPLETED and output_ready())):
        return latest, True
    return hook.submit_job(make_job(f"{base}-{attempt}")), False
