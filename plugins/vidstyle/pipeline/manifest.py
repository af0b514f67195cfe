"""A finished video's manifest: frames and timing, the model, each chunk's figures, the bytes
moved in storage per stage, flicker, and what the Azure ML jobs took and cost."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

from scoring.flicker_figures import combine

if TYPE_CHECKING:
    from vidstyle.pipeline.run import VideoRun

log = logging.getLogger(__name__)

# What the manifest keeps of each chunk's result.
CHUNK_FIGURES = ("chunk", "label", "start", "end", "frames", "seconds", "total_seconds", "fps", "device", "encoder",
                 "bytes_in", "bytes_out", "model", "azureml", "flicker")


def storage_figures(split_info: dict, audio_info: dict | None, stitched: dict, source_bytes: int) -> dict:
    """Bytes read and written in storage by each stage, and their total against source + result."""
    chunks = stitched["chunks"]
    storage = {"split": split_info["storage"], "audio": (audio_info or {}).get("storage"),
               "chunks_in": sum(c["bytes_in"] or 0 for c in chunks),
               "chunks_out": sum(c["bytes_out"] or 0 for c in chunks),
               "stitch": stitched["storage"]}
    moved = sum(s["read"] + s["written"] for s in (storage["split"], storage["audio"], storage["stitch"]) if s)
    moved += storage["chunks_in"] + storage["chunks_out"]
    return storage | {"total": moved, "source_bytes": source_bytes, "result_bytes": stitched["bytes"],
                      "moved_per_source_and_result": round(moved / max(1, source_bytes + stitched["bytes"]), 2)}


def build(run: VideoRun, split_info: dict, audio_info: dict | None, stitched: dict) -> dict:
    chunks = stitched["chunks"]
    scored = sum(c["frames"] for c in chunks)
    busy = sum(c["seconds"] for c in chunks)
    manifest = {
        "video": run.video.to_dict(), "run_id": run.run_id, "params": asdict(run.params),
        "source": split_info["source"],
        "output": {k: v for k, v in stitched.items() if k not in ("chunks", "storage", "preview_chunk")},
        "frames": stitched["frames"], "fps": split_info["source"]["fps"], "frame_rate": stitched["frame_rate"],
        "duration": stitched["duration"], "model": chunks[0].get("model") if chunks else run.params.style,
        "chunks": chunks,
        "scoring": {"frames": scored, "chunk_seconds": round(busy, 3),
                    "frames_per_second": round(scored / busy, 3) if busy else None},
        "storage": storage_figures(split_info, audio_info, stitched, run.video.size), "outputs": run.outputs,
        "flicker": combine([c.get("flicker") for c in chunks]),
    }
    if remote := job_totals([c["azureml"] for c in chunks if c.get("azureml")]):
        manifest["azureml"] = remote
    return manifest


def log_figures(manifest: dict) -> None:
    """What ``publish`` says of a video: flicker, the Azure ML jobs' cost, the scoring rate and the bytes."""
    if f := manifest["flicker"]:
        log.info("flicker: warping error %.6f, the source's own %.6f (ratio %s) over %d frame pairs",
                 f["warping_error"], f["source_warping_error"], f["ratio"], f["pairs"])
    if remote := manifest.get("azureml"):
        log_cost(remote)
    storage = manifest["storage"]
    log.info("manifest wasb://%s/%s: %d frames, scoring %.2f frames/s over %d chunks; storage moved %.1f MiB "
             "(%.1fx source + result)", manifest["video"]["container"], manifest["outputs"]["manifest"],
             manifest["scoring"]["frames"],
             manifest["scoring"]["frames_per_second"] or 0, len(manifest["chunks"]), storage["total"] / 2**20,
             storage["moved_per_source_and_result"])


NODE_TIME = ("lower bounds: a job's node time runs from Running to its end; the node's boot before it and its idle "
             "tail after it (azureml_idle_seconds, shared by the jobs that reuse the node) are billed too")


def log_cost(t: dict) -> None:
    cost = f"at least {t['cost']:.4f} (azureml_prices)" if t["cost"] is not None else "unknown: set azureml_prices"
    log.info("Azure ML: %d jobs (%d of them retries) on %s: %.0f GPU-seconds, %.0f s on nodes (%.0f%% of the "
             "chunks' own jobs' time start-up), %.0f s before a node; estimated cost: %s", t["jobs"],
             t["retried_jobs"], t["vm_size"], t["gpu_seconds"] or 0, t["node_seconds"] or 0,
             100 * (t["startup_share"] or 0), t["queued_seconds"] or 0, cost)


def job_totals(jobs: list[dict]) -> dict | None:
    """A video's Azure ML jobs summed: node time is what is billed, per GPU and at the set price,
    the chunks' failed or cancelled earlier jobs included; ``None`` where a figure is unknown.
    ``startup_share`` is the final jobs' start-up over their own node time (the share that sizes
    chunks: an earlier job's time on a lost node is not start-up)."""
    if not jobs:
        return None
    retried = [e for j in jobs for e in j.get("earlier") or []]

    def total(key: str, of: list[dict], digits: int = 3) -> float | None:
        values = [j.get(key) for j in of]
        return None if any(v is None for v in values) else round(sum(values), digits)

    final_node, startup = total("node_seconds", jobs), total("startup_seconds", jobs)
    return {"jobs": len(jobs) + len(retried), "retried_jobs": len(retried), "vm_size": jobs[0]["vm_size"],
            "gpu_seconds": total("gpu_seconds", jobs + retried), "node_seconds": total("node_seconds", jobs + retried),
            "queued_seconds": total("queued_seconds", jobs + retried), "startup_seconds": startup,
            "startup_share": round(startup / final_node, 3) if final_node and startup is not None else None,
            "cost": total("cost", jobs + retried, 6), "figures": NODE_TIME,
            "still_ending": sum(1 for j in jobs + retried if j.get("still_ending"))}
