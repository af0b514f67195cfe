"""Command line: ``python -m scoring stylize --model NAME --input IN --output OUT``.

The same command runs on a worker (local backend), inside an Azure ML job, or on a laptop.
IN is a frame tar, or a folder of frame tars and/or loose images; OUT mirrors it. The last
line printed is ``RESULT {json}`` so a caller can read the figures without parsing logs.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

from scoring.checkpoint import ModelLoadError, builtin_models, load_model
from scoring.engine import RunStats, Scorer, auto_batch_size, pick_device, stylize_stream
from scoring.frames import FolderFrameWriter, TarFrameWriter, image_paths, read_folder, read_tar, tar_names


def _jobs(src: Path, dst: Path) -> list[tuple[str, Path, Path]]:
    """(kind, input, output) pairs: one per tar, plus one for the loose images of a folder."""
    if src.is_file():
        out = dst / src.name if dst.is_dir() else dst
        return [("tar", src, out)]
    if not src.is_dir():
        raise FileNotFoundError(f"input {src} does not exist")
    jobs = [("tar", p, dst / p.name) for p in sorted(src.glob("*.tar"))]
    if image_paths(src):
        jobs.append(("folder", src, dst))
    if not jobs:
        raise FileNotFoundError(f"input {src} holds no frame tars or images")
    return jobs


def _progress_printer(label: str, every_s: float):
    last = [0.0]

    def show(stats: RunStats, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < every_s and (total is None or stats.frames < total):
            return
        last[0] = now
        of = f"/{total} ({100 * stats.frames / total:.0f}%)" if total else ""
        print(f"{label}: {stats.frames}{of} frames, {stats.fps:.2f} frames/s", flush=True)

    return show


def cmd_stylize(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    torch.set_num_threads(args.threads) if args.threads else None
    try:
        model, info = load_model(args.model, device)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        scorer = Scorer(model, device, args.precision, compile=args.compile)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model {info.path.name} (width {info.width}, blocks {info.blocks}) on {device}, "
          f"{scorer.precision}{', compiled' if scorer.compiled else ''}", flush=True)
    total, outputs = RunStats(), {}
    for kind, src, dst in _jobs(Path(args.input), Path(args.output)):
        if kind == "tar":
            frames, count, writer = read_tar(src), len(tar_names(src)), TarFrameWriter(dst)
        else:
            count = len(image_paths(src))
            frames, writer = read_folder(src), FolderFrameWriter(dst)
        batch = args.batch_size or auto_batch_size(device, functools.partial(frames_shape, kind, src), info.width)
        stats = stylize_stream(
            scorer, frames, writer.write, batch_size=batch, total=count,
            progress=_progress_printer(src.name, args.log_every), png_level=args.png_level,
        )
        writer.close()
        if stats.frames != count:
            print(f"error: {src}: {count} frames in, {stats.frames} out", file=sys.stderr)
            return 1
        outputs[dst.name] = {"frames": stats.frames, "first": stats.names[0] if stats.names else None,
                             "last": stats.names[-1] if stats.names else None}
        total.frames += stats.frames
        total.seconds += stats.seconds
        total.model_seconds += stats.model_seconds
    result = {
        "frames": total.frames, "seconds": round(total.seconds, 3), "fps": round(total.fps, 3),
        "model_seconds": round(total.model_seconds, 3), "device": str(device), "model": info.path.name,
    }
    if args.result:
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(json.dumps(result | {"outputs": outputs}, indent=2))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def frames_shape(kind: str, src: Path) -> tuple[int, int]:
    """Height and width of the first frame (for sizing batches)."""
    from scoring.frames import decode_image

    _, data = next(iter(read_tar(src) if kind == "tar" else read_folder(src)))
    h, w, _ = decode_image(data).shape
    return h, w


def cmd_preview(args: argparse.Namespace) -> int:
    """Before and after, side by side: how a model looks on a photo of your own."""
    import numpy as np
    from PIL import Image

    from scoring.transformer_net import stylize_batch

    try:
        model, _ = load_model(args.model)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with Image.open(args.image) as img:
        photo = np.array(img.convert("RGB"))
    with torch.inference_mode():
        styled = stylize_batch(model, torch.from_numpy(photo)[None])[0].numpy()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([photo, styled], axis=1)).save(args.output)
    print(args.output)
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    for name, path in builtin_models().items():
        print(f"{name}\t{path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scoring", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stylize", help="stylize a frame tar or a folder of frames")
    st.add_argument("--model", required=True, help="built-in model name or checkpoint path")
    st.add_argument("--input", required=True, help="frame tar, or folder of tars and/or images")
    st.add_argument("--output", required=True, help="output tar or folder")
    st.add_argument("--batch-size", type=int, default=0, help="frames per forward pass (0: automatic)")
    st.add_argument("--precision", default="auto", help="auto (GPU fp16, CPU fp32), fp32, bf16, fp16")
    st.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    st.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    st.add_argument("--png-level", type=int, choices=range(10), default=0, metavar="0-9",
                    help="zlib level of the output PNGs: 0 stores them (fastest, about 2x the bytes)")
    st.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    st.add_argument("--result", help="also write the summary as JSON to this file")
    st.add_argument("--log-every", type=float, default=5.0, help="seconds between progress lines")
    st.set_defaults(func=cmd_stylize)
    pv = sub.add_parser("preview", help="before/after image of one photo")
    pv.add_argument("--model", required=True)
    pv.add_argument("--image", required=True)
    pv.add_argument("--output", required=True)
    pv.set_defaults(func=cmd_preview)
    sub.add_parser("models", help="list built-in models").set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
