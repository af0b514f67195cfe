"""Installation settings, read from Airflow's config section ``[vidstyle]``.

Each can be set in airflow.cfg or as ``AIRFLOW__VIDSTYLE__<KEY>`` in the environment; DAG
params override the per-run ones from the UI form or ``--conf``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from scoring.flicker_figures import DEFAULT_EVERY

SECTION = "vidstyle"


@dataclass(frozen=True)
class Settings:
    wasb_conn_id: str = "wasb_default"  # the Airflow connection to the storage account (blobs, and the arrivals queue)
    container: str = "videos"  # the one blob container that holds uploads, work areas, results and the ledger
    input_prefix: str = "incoming/"  # where users drop videos (never modified); the watcher looks here only
    work_prefix: str = "work/"  # each run's work area: plan, audio, chunk pieces and segments
    output_prefix: str = "outputs/"  # results, manifests and previews, mirroring the input paths
    state_prefix: str = "state/"  # the ledger (state/videos/<video_id>.json) and the Azure ML environment record
    video_suffixes: str = ".mp4,.mov,.mkv,.avi,.webm,.m4v,.mpg,.mpeg,.ts"  # what counts as a video (comma-separated)
    default_style: str = "pop-art"  # the style of runs that name none (the watcher's, the sweep's, the form's default)
    chunk_frames: int = 240  # frames per chunk on the local backend when a run does not say (chunks end on keyframes)
    backend: str = "local"  # where chunks are scored when a run does not say: "local" (the worker) or "azureml"
    keep_work: bool = False  # keep a run's work area after it succeeds (a failed run always keeps it)
    max_active_videos: int = 4  # video_stylize runs at once (the DAG's max_active_runs); more wait queued
    scoring_pool: str = "scoring"  # the Airflow pool of the chunk tasks (vidstyle pool makes it)
    scoring_pool_slots: int = 0  # chunks scoring at once; 0: 1 locally, on Azure ML azureml_pool_slots
    scoring_queue: str = ""  # the Celery queue of the chunk tasks (workers with a GPU, say); empty: the default
    sensor_poke_seconds: int = 30  # the listing watcher's interval (arrivals = "listing")
    # How uploads are found (docs/concepts.md, "Arrivals"): "storage_queue" (Event Grid's blob-created events
    # in a Storage Queue, on the WASB connection), "service_bus" (the same events in a Service Bus
    # queue, the provider's trigger) or "listing" (the store listed, for stores without Event Grid).
    arrivals: str = "storage_queue"
    arrivals_queue: str = ""  # empty: "<container>-arrivals"
    arrivals_conn_id: str = ""  # empty: wasb_conn_id (storage_queue) or azure_service_bus_default
    arrivals_poll_seconds: float = 5.0  # how often an empty queue is asked again
    azure_http_logging: bool = False  # log every Azure SDK request's headers (read at import, see vidstyle.hooks)
    claim_poke_seconds: int = 30  # how often a run waiting for another one writing its result looks again
    max_frames: int = 500_000  # longer videos are refused at split
    # How chunks encode their segments (H.264; the run's crf sets the quality). "auto": the
    # GPU's hardware encoder on a node that has one, else libx264 at this preset.
    encoder: str = "auto"
    x264_preset: str = "medium"  # libx264's preset for segments ("veryfast" costs 2.3 dB at CRF 18, no faster chunk)
    # Sources that cannot be cut by stream copy are re-encoded per chunk at this x264 CRF
    # (near-lossless: the chunk decodes it once more before styling).
    mezzanine_crf: int = 10
    # Flicker (docs/models.md, "Flicker"): each chunk measures the warping error of the pair (i, i+1) for
    # every N-th frame i; 0 turns it off. Every 8th costs ~2% of a chunk's time on a CPU.
    flicker_every: int = DEFAULT_EVERY
    local_batch_size: int = 0  # 0: the scorer picks (1 on CPU, by free memory on a GPU)
    local_precision: str = "auto"  # auto: fp16 on a GPU; on a CPU bf16 where native, else int8 compiled, else fp32
    # Compile the model for chunks big enough to win it back: torch.compile (~20 s, ~6 s from the
    # worker's cache), or on a CPU in fp32/int8 an AOTInductor package (built once per model and size)
    local_compile: bool = True
    # Azure ML backend (docs/azure-ml.md). The workspace itself is named by the connection.

    azureml_conn_id: str = "azureml_default"  # the Airflow connection naming the workspace
    azureml_datastore: str = "vidstyle"  # a datastore on `container`, registered by provision
    azureml_compute: str = "vidstyle-gpu"  # the compute cluster's name (provision creates it)
    azureml_vm_size: str = "Standard_NC4as_T4_v3"  # the GPU VM size (fixed once the cluster exists)
    azureml_min_nodes: int = 0  # 0: no GPU node runs (or bills) while no chunk waits
    azureml_max_nodes: int = 4  # the cluster's most nodes: bounds parallel chunks
    azureml_tier: str = "low_priority"  # or "dedicated"; a preempted chunk is retried on its own
    azureml_idle_seconds: int = 300  # idle time before the cluster scales a node down
    azureml_compute_identity: str = ""  # a user-assigned identity's resource id; empty: system-assigned
    azureml_environment: str = "vidstyle-scoring"  # built from images/scoring by provision
    azureml_experiment: str = "vidstyle"  # the experiment jobs are grouped under in Studio
    azureml_job_identity: str = "managed"  # data access: "managed" (the cluster's) or "user" (submitter's)
    azureml_input_mode: str = "download"  # or "ro_mount"
    azureml_device: str = "cuda"  # fail loudly if a node has no GPU; "auto" allows CPU clusters
    azureml_batch_size: int = 0  # the scorer's batch size on a node; 0: by the GPU's free memory
    azureml_precision: str = "auto"  # fp16 on a GPU
    azureml_compile: bool = False  # torch.compile on the node (each fresh node pays the compile)
    azureml_job_timeout_minutes: int = 60  # a job running longer is stopped by Azure ML
    azureml_queue_timeout_minutes: int = 120  # the longest a job may wait for a node (time queued only)
    azureml_prepare_timeout_minutes: int = 60  # the longest a job may spend Preparing (its image build)
    azureml_not_responding_minutes: int = 10  # how long a job may say NotResponding before it is given up
    azureml_cancel_wait_minutes: int = 15  # how long a job may stay CancelRequested before the wait ends
    azureml_outage_minutes: int = 30  # how long the job's status may be unreadable before the try ends
    azureml_pool_slots: int = 0  # chunks with a job on Azure ML at once; 0: twice azureml_max_nodes
    azureml_chunk_frames: int = 9000  # a chunk's frames on Azure ML when a run does not say (docs/azure-ml.md)
    # Price per node-hour by VM size, for the manifest's cost estimate, as JSON: what you pay
    # (low priority or dedicated, your region and discounts), e.g. {"Standard_NC4as_T4_v3": 0.15}.
    azureml_prices: str = ""
    azureml_poll_seconds: float = 15.0  # first status poll; the interval then grows to the max
    azureml_max_poll_seconds: float = 30.0  # the longest interval between two polls: a job's end is seen this late

    @property
    def suffixes(self) -> tuple[str, ...]:
        return tuple(s.strip().lower() for s in self.video_suffixes.split(",") if s.strip())


def load_settings() -> Settings:
    """The installation's settings from Airflow's config (airflow.cfg or the environment)."""
    from airflow.configuration import conf

    values = {}
    for f in fields(Settings):
        if not conf.has_option(SECTION, f.name):
            continue
        if f.type == "int":
            values[f.name] = conf.getint(SECTION, f.name)
        elif f.type == "float":
            values[f.name] = conf.getfloat(SECTION, f.name)
        elif f.type == "bool":
            values[f.name] = conf.getboolean(SECTION, f.name)
        else:
            values[f.name] = conf.get(SECTION, f.name)
    return Settings(**values)


ARRIVALS = ("storage_queue", "service_bus", "listing")


def arrivals_queue(settings: Settings) -> str:
    """The queue Event Grid writes the blob-created events to."""
    return settings.arrivals_queue or f"{settings.container}-arrivals"


def arrivals_conn_id(settings: Settings) -> str:
    if settings.arrivals_conn_id:
        return settings.arrivals_conn_id
    return settings.wasb_conn_id if settings.arrivals == "storage_queue" else "azure_service_bus_default"


def pool_slots(settings: Settings) -> int:
    """How many chunks score at once: the scoring pool's slots, counting deferred tasks (on Azure
    ML, chunks with a job in flight: a node's worth running and one waiting for each node)."""
    if settings.scoring_pool_slots:
        return settings.scoring_pool_slots
    if settings.backend == "azureml":
        return settings.azureml_pool_slots or 2 * settings.azureml_max_nodes
    return 1  # one chunk at a time on the machine that scores it


def scoring_queue(settings: Settings) -> str:
    """The Celery queue the chunk tasks go to: ``scoring_queue``, else Airflow's default queue."""
    from airflow.configuration import conf

    return settings.scoring_queue or conf.get("operators", "default_queue")
