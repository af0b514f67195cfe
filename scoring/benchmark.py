"""Benchmark: the reference per-frame loop vs. the pure-forward ceiling vs. a chunk as the pipeline runs it.

    vidstyle benchmark --model pop-art --size 640x360                # the pipeline's defaults
    vidstyle benchmark --model pop-art --size 640x360 --no-compile --precision fp32
    vidstyle benchmark --model pop-art --size 1920x1080 --device cuda  # on a GPU node

On the same frames and checkpoint, in one run:
  1. baseline: what the reference architecture does (JPEG files through PIL, batch 1, fp32,
     one frame at a time, each result written as a JPEG);
  2. ceiling: the model's forward pass alone at the chosen batch size and precision, on
     tensors already on the device;
  3. chunk: what a chunk task runs, ``python -m scoring stylize`` in its own process on a chunk
     folder (an H.264 piece, as the split cuts it, and its chunk.json) to an H.264 segment:
     process start-up, model load and compile included (``chunk_fps``), and its frames/s once
     running (``chunk_steady_fps``).
It prints frames/s for each, the ratios, the scorer's deviation from a plain fp32 per-frame
run (0-255 scale), the chunk process's peak memory, and the conditions. The three run in
interleaved rounds (``--rounds``, default 3) and each figure is its best round: on a shared
machine noise only ever slows a run down.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from scoring.checkpoint import load_model
from scoring.chunk import ChunkSpec, Encoding, even_size
from scoring.engine import Scorer, auto_batch_size, pick_device
from scoring.machine import cpu_name
from scoring.transformer_net import stylize_image

RATE = Fraction(30000, 1001)


def make_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """A pan across real photos (scikit-image's bundled ones), or gradients without it."""
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        tiles = [Image.open(folder / n).convert("RGB") for n in ("astronaut.png", "coffee.png", "chelsea.png")]
        tiles = [t.resize((round(t.width * height / t.height), height)) for t in tiles]
        strip = np.concatenate([np.asarray(t) for t in tiles], axis=1)
    except ImportError:
        yy, xx = np.mgrid[0:height, 0 : width * 3]
        strip = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    if strip.shape[1] < width:
        strip = np.asarray(Image.fromarray(strip).resize((width, height)))
    step = max(1, (strip.shape[1] - width) // max(1, count - 1))
    return [np.ascontiguousarray(strip[:, i * step: i * step + width]) for i in range(count)]


def reference_frame(model: torch.nn.Module, frame: np.ndarray) -> np.ndarray:
    """pytorch/examples' stylize for one frame: batch 1, fp32, no padding tricks."""
    x = torch.from_numpy(np.array(frame)).permute(2, 0, 1).float().unsqueeze(0)
    with torch.no_grad():
        y = model(x)[0]
    return y.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def run_baseline(model: torch.nn.Module, frames: list[np.ndarray], tmp: Path) -> float:
    src, dst = tmp / "jpg-in", tmp / "jpg-out"
    src.mkdir(exist_ok=True)
    dst.mkdir(exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(src / f"{i:06d}.jpg", quality=95)
    start = time.perf_counter()
    for path in sorted(src.iterdir()):
        with Image.open(path) as img:
            frame = np.asarray(img.convert("RGB"))
        Image.fromarray(reference_frame(model, frame)).save(dst / path.name, quality=95)
    return len(frames) / (time.perf_counter() - start)


def run_ceiling(scorer: Scorer, frames: list[np.ndarray], batch: int, repeats: int) -> float:
    x = torch.from_numpy(np.stack(frames[:batch])).to(scorer.device)
    scorer._forward(x)  # warm-up (and compilation)
    sync = torch.cuda.synchronize if scorer.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        scorer._forward(x)
    sync()
    return batch * repeats / (time.perf_counter() - start)


def make_chunk(frames: list[np.ndarray], folder: Path) -> Path:
    """A chunk folder as the split makes it: an H.264 piece (x264 at CRF 18, as a source would
    be) holding the frames at 29.97 fps, and the chunk.json that selects them all."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width, _ = frames[0].shape
    tb = Fraction(1, RATE.numerator)
    with av.open(str(folder / "piece.nut"), "w", format="nut", options={"avoid_negative_ts": "disabled"}) as out:
        stream = out.add_stream("libx264", rate=RATE, options={"crf": "18", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = *even_size(width, height), "yuv420p"
        stream.codec_context.time_base = stream.time_base = tb
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                width=stream.width, height=stream.height, format="yuv420p")
            frame.pts, frame.time_base = i * RATE.denominator, tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    pts = [i * RATE.denominator for i in range(len(frames))]
    spec = ChunkSpec(video="benchmark", label=f"chunk 1/1, frames 0-{len(frames) - 1}", first_frame=0,
                     piece="piece.nut", select_time_base=str(tb), select=pts, time_base=str(tb), pts=pts,
                     last_duration=RATE.denominator, rotation=0, model_size=(width, height),
                     size=even_size(width, height), encoding=Encoding(frame_rate=str(RATE)))
    (folder / "chunk.json").write_text(spec.to_json())
    return folder


def run_chunk(a: argparse.Namespace, chunk: Path, out: Path) -> dict:
    """``python -m scoring stylize`` on the chunk, in its own process, as the local backend runs it."""
    args = [sys.executable, "-m", "scoring", "stylize", "--model", a.model, "--input", str(chunk), "--output",
            str(out), "--batch-size", str(a.batch_size), "--precision", a.precision, "--device", a.device,
            "--result", str(out / "result.json"), "--log-every", "600", *(["--compile"] if a.compile else [])]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the chunk failed: {done.stderr[-2000:]}")
    result = json.loads((out / "result.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return result | {"wall_seconds": wall, "peak_rss_mib": peak}


def deviation(model: torch.nn.Module, scorer: Scorer, frames: list[np.ndarray]) -> tuple[float, int]:
    """Mean and max |scorer - fp32 per-frame reference| in 0-255 steps: the scorer's own numerics
    (precision, compile), before the segment's H.264 encode."""
    diffs = []
    for frame in frames:
        got = scorer(frame[None])[0]
        ref = stylize_image(model, frame)
        diffs.append(np.abs(got.astype(int) - ref.astype(int)))
    d = np.stack(diffs)
    return float(d.mean()), int(d.max())


def forward_only(a: argparse.Namespace, scorer: Scorer, frames: list[np.ndarray], batch: int) -> int:
    rounds = [run_ceiling(scorer, frames, batch, repeats=max(2, a.frames // batch)) for _ in range(max(1, a.rounds))]
    figures = {"resolution": a.size, "batch_size": batch, "precision": scorer.precision, "compiled": scorer.compiled,
               "ceiling_fps": round(max(rounds), 3), "rounds": [round(r, 3) for r in rounds]}
    print(json.dumps(figures))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="pop-art")
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    p.add_argument("--frames", type=int, default=240, help="frames in the chunk (the pipeline's default chunk)")
    p.add_argument("--baseline-frames", type=int, default=48, help="frames for the slow reference loop, each round")
    p.add_argument("--batch-size", type=int, default=0, help="0: the scorer's automatic choice (as the pipeline)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="as the pipeline's local_compile (default: on; chunks too small for it run eager)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds of all three; each figure is its best round (noise only slows)")
    p.add_argument("--forward-only", action="store_true",
                   help="measure only the model's forward pass (the ceiling), e.g. for the pipeline benchmark")
    p.add_argument("--json", help="also write the figures to this file")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoring.benchmark", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def run(a: argparse.Namespace) -> int:
    width, height = map(int, a.size.lower().split("x"))
    device = pick_device(a.device)
    model, info = load_model(a.model)  # fp32 on the CPU: the baseline's model
    scorer = Scorer(load_model(a.model)[0], device, a.precision, compile=a.compile)
    batch = a.batch_size or auto_batch_size(device, lambda: (height, width), info.width)
    frames = make_frames(a.frames, width, height)
    if a.forward_only:
        return forward_only(a, scorer, frames, batch)
    rounds: dict[str, list[float]] = {"baseline": [], "ceiling": [], "chunk": []}
    chunks = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        chunk = make_chunk(frames, tmp_path / "chunk")
        # Interleaved, so slow spells of a shared machine hit all three alike rather than one.
        for r in range(max(1, a.rounds)):
            rounds["baseline"].append(run_baseline(model, frames[: a.baseline_frames], tmp_path))
            rounds["ceiling"].append(run_ceiling(scorer, frames, batch, repeats=max(2, min(a.frames, 48) // batch)))
            chunks.append(run_chunk(a, chunk, tmp_path / f"out-{r}"))
            rounds["chunk"].append(a.frames / chunks[-1]["wall_seconds"])
        mean_dev, max_dev = deviation(model, scorer, frames[:4])
    best = max(chunks, key=lambda c: a.frames / c["wall_seconds"])
    baseline, ceiling = max(rounds["baseline"]), max(rounds["ceiling"])
    chunk_fps, steady = a.frames / best["wall_seconds"], max(c["fps"] for c in chunks)
    figures = {
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "device": torch.cuda.get_device_name(device)
        if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads",
        "model": f"{info.path.name} (width {info.width}, blocks {info.blocks})", "resolution": f"{width}x{height}",
        "frames": a.frames, "batch_size": best["batch_size"], "precision": best["precision"],
        "compiled": best["compiled"], "encoder": best["encoder"],
        "baseline_fps": round(baseline, 2), "ceiling_fps": round(ceiling, 2), "chunk_fps": round(chunk_fps, 2),
        "chunk_steady_fps": round(steady, 2), "chunk_startup_seconds": round(best["wall_seconds"] - best["seconds"], 1),
        "chunk_vs_baseline": round(chunk_fps / baseline, 2), "chunk_vs_ceiling": round(steady / ceiling, 3),
        "deviation_mean_255": round(mean_dev, 3), "deviation_max_255": max_dev,
        "chunk_peak_rss": f"{max(c['peak_rss_mib'] for c in chunks):.0f} MiB",
        "rounds": {k: [round(v, 2) for v in vs] for k, vs in rounds.items()},
    }
    width_col = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width_col}}  {value}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
