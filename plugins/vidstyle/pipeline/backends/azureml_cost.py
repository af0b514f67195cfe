"""What one chunk's Azure ML job took and cost: time queued, time on a node (what is billed), the
start-up before its first frame, GPU-seconds, and at the installation's prices, money."""

from __future__ import annotations

import json
import time

from vidstyle.pipeline.settings import Settings

# GPUs per node of the sizes the pipeline is likely to run on (Azure's NC and ND series); others count as one.
GPUS = {"standard_nc4as_t4_v3": 1, "standard_nc8as_t4_v3": 1, "standard_nc16as_t4_v3": 1,
        "standard_nc64as_t4_v3": 4, "standard_nc6s_v3": 1, "standard_nc12s_v3": 2, "standard_nc24s_v3": 4,
        "standard_nc24ads_a100_v4": 1, "standard_nc48ads_a100_v4": 2, "standard_nc96ads_a100_v4": 4,
        "standard_nd96asr_v4": 8, "standard_nd96amsr_a100_v4": 8, "standard_nc40ads_h100_v5": 1,
        "standard_nc80adis_h100_v5": 2}


def job_cost(times: dict, result: dict, job_name: str, settings: Settings, now: float | None = None) -> dict:
    """What one chunk's job took: time before a node (its image build and the queue), time on the
    node from Running to its end (what is billed, at least), the part of that before the scorer
    stylized its first frame (container start, data download, model load, compile), GPU-seconds,
    and at the configured price, the cost. A job still ending (being cancelled) counts until
    ``now``; one that never got a node (cancelled or failed while queued) waited until its end."""
    created, started, ended = times["created"], times["started"], times["ended"]
    now = time.time() if now is None else now
    waited_until = started or ended or (now if created else None)
    queued = waited_until - created if created and waited_until else None
    if started:
        node = (ended or now) - started
    else:
        node = 0.0 if ended or created else None  # never on a node: nothing billed; no times at all: unknown
    # The scorer's own start-up (torch, model, compile) plus what the node did before it began.
    startup = None
    if started and result.get("process_started_at"):
        startup = max(0.0, result["process_started_at"] - started) + float(result.get("startup_seconds") or 0)
    gpus = GPUS.get(settings.azureml_vm_size.lower(), 1)
    price = prices(settings).get(settings.azureml_vm_size.lower())
    return {"job": job_name, "vm_size": settings.azureml_vm_size, "gpus": gpus,
            "queued_seconds": round(queued, 3) if queued is not None else None,
            "node_seconds": round(node, 3) if node is not None else None,
            "startup_seconds": round(startup, 3) if startup is not None else None,
            "gpu_seconds": round(node * gpus, 3) if node is not None else None,
            "cost": round(node / 3600 * price, 6) if node is not None and price is not None else None,
            **({"still_ending": True} if started and not ended else {})}


def prices(settings: Settings) -> dict[str, float]:
    """``azureml_prices`` (JSON: VM size -> price per node-hour), keys in lower case."""
    if not settings.azureml_prices.strip():
        return {}
    try:
        return {k.lower(): float(v) for k, v in json.loads(settings.azureml_prices).items()}
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"azureml_prices must be JSON like {{\"Standard_NC4as_T4_v3\": 0.15}}: {exc}") from exc
