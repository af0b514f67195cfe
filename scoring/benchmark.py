"""Benchmark: the reference per-frame loop vs. the pure-forward ceiling vs. our engine.

    python -m scoring.benchmark --model pop-art --size 640x360 --compile

On the same frames and checkpoint, in one run:
  1. baseline: what the reference architecture does (JPEG files through PIL, batch 1, fp32,
     one frame at a time, each result written as a JPEG);
  2. ceiling: the model's forward pass alone at the chosen batch size and precision, on
     tensors already on the device;
  3. engine: ``scoring.engine`` end to end, chunk tar of PNGs in, chunk tar of PNGs out.
It prints frames/s for each, engine/baseline, engine/ceiling, the engine's deviation from a
plain fp32 per-frame run (0-255 scale), peak memory, and the conditions. The three run in
interleaved rounds (``--rounds``, default 8) and each figure is its best round: on a shared
machine noise only ever slows a run, and many short interleaved rounds keep a slow spell from
favouring one of them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scoring.checkpoint import load_model
from scoring.engine import Scorer, auto_batch_size, pick_device, stylize_stream
from scoring.frames import TarFrameWriter, decode_image, encode_png, read_tar
from scoring.transformer_net import stylize_batch


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


def write_input(frames: list[np.ndarray], tar: Path) -> Path:
    """The engine's input as production hands it over: a chunk tar of lossless PNGs."""
    src = TarFrameWriter(tar)
    for i, f in enumerate(frames):
        src.write(f"{i:08d}.png", encode_png(f, level=1))  # deflated, as the frame split writes them
    src.close()
    return tar


def run_engine(scorer: Scorer, batch: int, tmp: Path, decode_threads: int = 2,
               png_level: int = 0) -> tuple[float, Path]:
    warm = TarFrameWriter(tmp / "warm.tar")
    stylize_stream(scorer, list(read_tar(tmp / "in.tar"))[:batch], warm.write, batch_size=batch)
    warm.close()
    out = TarFrameWriter(tmp / "out.tar")
    stats = stylize_stream(scorer, read_tar(tmp / "in.tar"), out.write, batch_size=batch,
                           decode_threads=decode_threads, png_level=png_level)
    out.close()
    return stats.fps, tmp / "out.tar"


def deviation(model: torch.nn.Module, frames: list[np.ndarray], out_tar: Path, sample: int) -> tuple[float, int]:
    """Mean and max |engine - fp32 per-frame reference| in 0-255 steps, on ``sample`` frames."""
    diffs = []
    outs = [decode_image(data) for _, data in read_tar(out_tar)]
    for frame, got in list(zip(frames, outs, strict=True))[:sample]:
        ref = stylize_batch(model, torch.from_numpy(frame)[None])[0].numpy()
        diffs.append(np.abs(got.astype(int) - ref.astype(int)))
    d = np.stack(diffs)
    return float(d.mean()), int(d.max())


def peak_memory(device: torch.device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    text = f"{rss:.0f} MiB host (peak RSS)"
    if device.type == "cuda":
        text += f", {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB GPU"
    return text


def forward_only(a: argparse.Namespace, scorer: Scorer, frames: list[np.ndarray], batch: int) -> int:
    rounds = [run_ceiling(scorer, frames, batch, repeats=max(2, a.frames // batch)) for _ in range(max(1, a.rounds))]
    figures = {"resolution": a.size, "batch_size": batch, "precision": scorer.precision, "compiled": scorer.compiled,
               "ceiling_fps": round(max(rounds), 3), "rounds": [round(r, 3) for r in rounds]}
    print(json.dumps(figures))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scoring.benchmark", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pop-art")
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    p.add_argument("--frames", type=int, default=24, help="frames per round")
    p.add_argument("--baseline-frames", type=int, default=0, help="frames for the slow baseline (0: all)")
    p.add_argument("--batch-size", type=int, default=0, help="0: the engine's automatic choice")
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--decode-threads", type=int, default=2, help="engine's PNG decode threads")
    p.add_argument("--png-level", type=int, choices=range(10), default=0, metavar="0-9",
                   help="zlib level of the engine's output PNGs (as `scoring stylize --png-level`)")
    p.add_argument("--rounds", type=int, default=8,
                   help="interleaved rounds of all three; each figure is its best round (noise only slows)")
    p.add_argument("--forward-only", action="store_true",
                   help="measure only the model's forward pass (the ceiling), e.g. for the pipeline benchmark")
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)

    width, height = map(int, a.size.lower().split("x"))
    device = pick_device(a.device)
    model, info = load_model(a.model)  # fp32 on the CPU: the baseline's model
    scorer = Scorer(load_model(a.model)[0], device, a.precision, compile=a.compile)
    batch = a.batch_size or auto_batch_size(device, lambda: (height, width), info.width)
    frames = make_frames(a.frames, width, height)
    if a.forward_only:
        return forward_only(a, scorer, frames, batch)
    rounds: dict[str, list[float]] = {"baseline": [], "ceiling": [], "engine": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        write_input(frames, tmp_path / "in.tar")
        # Interleaved, so slow spells of a shared machine hit all three alike rather than one.
        for _ in range(max(1, a.rounds)):
            rounds["baseline"].append(run_baseline(model, frames[: a.baseline_frames or None], tmp_path))
            rounds["ceiling"].append(run_ceiling(scorer, frames, batch, repeats=max(2, a.frames // batch)))
            engine_fps, out_tar = run_engine(scorer, batch, tmp_path, a.decode_threads, a.png_level)
            rounds["engine"].append(engine_fps)
        mean_dev, max_dev = deviation(model, frames, out_tar, sample=min(8, a.frames))
    baseline, ceiling, engine = (max(rounds[k]) for k in ("baseline", "ceiling", "engine"))
    figures = {
        "date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "model": f"{info.path.name} (width {info.width}, blocks {info.blocks})", "resolution": f"{width}x{height}",
        "frames": a.frames, "batch_size": batch, "precision": scorer.precision, "compiled": scorer.compiled,
        "output_png_level": a.png_level,
        "baseline_fps": round(baseline, 2), "ceiling_fps": round(ceiling, 2), "engine_fps": round(engine, 2),
        "engine_vs_baseline": round(engine / baseline, 2), "engine_vs_ceiling": round(engine / ceiling, 3),
        "deviation_mean_255": round(mean_dev, 3), "deviation_max_255": max_dev, "peak_memory": peak_memory(device),
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
