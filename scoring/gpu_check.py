"""``python -m scoring gpu-check`` (also ``vidstyle gpu-check``): what a GPU node does with the
scorer, in one go, in under 8 minutes, for the README's GPU figures.

Steps, each under a deadline (a step that hangs is stopped and named, never waited on):
1. the machine: torch, CUDA, the device, its memory;
2. the scoring benchmark on the device (fp16, automatic batch size), eager and compiled, each
   against the per-frame loop, with the deviation from fp32 and the peak GPU memory;
3. a 1080p chunk end to end through ``python -m scoring stylize``, with the decode, forward
   and encode rates;
4. whether NVENC opens in this FFmpeg, and the encoder the chunk took (and its fallback).

``--cpu`` runs every step on the CPU at a small size: the plumbing, where there is no GPU.
Exits 0 when every step ran, 2 when something it needs is missing (no CUDA device), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DEADLINES = {"machine": 60, "benchmark": 330, "chunk": 150, "nvenc": 30}  # seconds, < 8 min in all


class StepTimeout(RuntimeError):
    pass


class Missing(RuntimeError):
    """Something the check needs is not there (exit 2)."""


@contextlib.contextmanager
def deadline(seconds: float, step: str) -> Iterator[None]:
    """Stop ``step`` with StepTimeout after ``seconds`` (SIGALRM: the main thread)."""
    def expired(signum, frame):
        raise StepTimeout(f"step '{step}' did not finish in {seconds:.0f} s: stopped")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpu", action="store_true", help="everything but CUDA: the check's plumbing on the CPU")
    p.add_argument("--model", default="pop-art")
    p.add_argument("--json", type=Path, help="also write the figures here")


def machine(cpu: bool) -> dict:
    import torch

    figures = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available":
               torch.cuda.is_available()}
    if cpu:
        return figures | {"device": f"CPU, {torch.get_num_threads()} threads"}
    if not torch.cuda.is_available():
        raise Missing("no CUDA device: torch.cuda.is_available() is False (no GPU, no driver, or a CPU-only "
                      f"torch {torch.__version__}); --cpu runs the check's plumbing without one")
    props = torch.cuda.get_device_properties(0)
    return figures | {"device": props.name, "capability": f"{props.major}.{props.minor}",
                      "memory_gib": round(props.total_memory / 2**30, 1)}


def benchmark(a: argparse.Namespace, work: Path) -> dict:
    """The scoring benchmark, eager then compiled, as ``vidstyle benchmark`` runs it."""
    import torch

    from scoring import benchmark as bench

    size, frames = ("160x96", 8) if a.cpu else ("1920x1080", 96)
    figures = {}
    for compiled in (False, True):
        out = work / f"benchmark-{'compiled' if compiled else 'eager'}.json"
        args = ["--model", a.model, "--size", size, "--frames", str(frames), "--baseline-frames", "4" if a.cpu
                else "16", "--rounds", "1", "--device", "cpu" if a.cpu else "cuda", "--precision",
                "fp32" if a.cpu else "fp16", "--json", str(out), "--compile" if compiled else "--no-compile"]
        if torch.cuda.is_available() and not a.cpu:
            torch.cuda.reset_peak_memory_stats()
        bench.main(args)
        got = json.loads(out.read_text())
        if torch.cuda.is_available() and not a.cpu:
            got["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        figures["compiled" if compiled else "eager"] = {k: got[k] for k in (
            "resolution", "batch_size", "precision", "compiled", "baseline_fps", "ceiling_fps", "chunk_fps",
            "chunk_vs_baseline", "deviation_mean_255", "deviation_max_255") if k in got} | (
            {"peak_gpu_memory_mib": got["peak_gpu_memory_mib"]} if "peak_gpu_memory_mib" in got else {})
    return figures


def chunk(a: argparse.Namespace, work: Path) -> dict:
    """A chunk end to end through the scorer's command, with decode and encode rates beside it."""
    import av

    from scoring import benchmark as bench

    width, height, count = (160, 96, 8) if a.cpu else (1920, 1080, 96)
    folder = bench.make_chunk(bench.make_frames(count, width, height), work / "chunk")
    started = time.perf_counter()
    with av.open(str(folder / "piece.nut")) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = sum(1 for _ in c.decode(stream))
    decode_fps = decoded / (time.perf_counter() - started)
    args = argparse.Namespace(model=a.model, batch_size=0, precision="fp32" if a.cpu else "fp16",
                              device="cpu" if a.cpu else "cuda", compile=False)
    result = bench.run_chunk(args, folder, work / "chunk-out")
    return {"resolution": f"{width}x{height}", "frames": count, "decode_fps": round(decode_fps, 1),
            "chunk_fps": round(result["fps"], 2), "wall_seconds": round(result["wall_seconds"], 1),
            "encoder": result.get("encoder"), "batch_size": result.get("batch_size"),
            "precision": result.get("precision")}


def nvenc(chunk_figures: dict) -> dict:
    """Whether h264_nvenc opens here (one frame encoded), and what the chunk used."""
    import av
    import numpy as np

    try:
        ctx = av.codec.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 256, 144, "yuv420p", "1/25"
        ctx.open()
        frame = av.VideoFrame.from_ndarray(np.zeros((144, 256, 3), np.uint8), format="rgb24").reformat(
            format="yuv420p")
        ctx.encode(frame)
        available, why = True, "opens and encodes"
    except Exception as exc:  # any way NVENC fails is the answer here
        available, why = False, f"{type(exc).__name__}: {exc}"
    used = chunk_figures.get("encoder")
    return {"nvenc_available": available, "nvenc": why, "chunk_encoder": used,
            "chunk_fell_back": used not in (None, "h264_nvenc")}


def run(a: argparse.Namespace, started: float | None = None) -> int:
    report: dict = {"date": time.strftime("%Y-%m-%d"), "mode": "cpu plumbing" if a.cpu else "gpu"}
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        steps = [("machine", lambda: machine(a.cpu)), ("benchmark", lambda: benchmark(a, work)),
                 ("chunk", lambda: chunk(a, work)), ("nvenc", lambda: nvenc(report.get("chunk", {})))]
        for name, step in steps:
            print(f"[gpu-check] {name} ...", flush=True)
            began = time.monotonic()
            try:
                with deadline(DEADLINES[name], name):
                    report[name] = step()
            except Missing as exc:
                print(f"[gpu-check] {name}: {exc}", file=sys.stderr, flush=True)
                report[name] = {"error": str(exc)}
                status = 2
                break
            except Exception as exc:  # a step's failure is reported, the others still run
                print(f"[gpu-check] {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
                status = 1
            else:
                print(f"[gpu-check] {name} ({time.monotonic() - began:.0f} s): {json.dumps(report[name])}",
                      flush=True)
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    print("GPU-CHECK " + json.dumps(report), flush=True)
    return status
