"""Command line: ``python -m scoring stylize --model NAME --input IN --output OUT``.

The same command runs on a worker (local backend), inside an Azure ML job, or on a laptop.
IN is a chunk folder (``chunk.json`` and the piece it names, as the pipeline's split writes
them): OUT then receives ``segment.mp4``, the chunk's frames stylized and encoded with the
source's timing, and the before/after ``preview.png`` when the chunk holds the video's
preview frame. IN may also be a folder of images: OUT then gets one PNG per image.
The last line printed is ``RESULT {json}`` so a caller can read the figures without parsing logs.

Exit codes: 0 done; 2 the input or the model cannot be used (retrying will not help);
1 anything else (a retry may help: a lost GPU, a full disk).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from scoring import gpu_check
from scoring.chunk import EXIT_BAD_INPUT
from scoring.flicker_figures import DEFAULT_EVERY

if TYPE_CHECKING:  # torch loads when a command runs, not when its options are listed
    from scoring.engine import RunStats, Scorer


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


def _folder_bytes(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def stylize_chunk(args: argparse.Namespace, scorer: Scorer, model_width: int) -> dict:
    """A chunk folder in, an encoded segment (and maybe the preview) out."""
    from scoring.chunk import PREVIEW_NAME, SEGMENT_NAME, SPEC_NAME, ChunkSpec
    from scoring.engine import auto_batch_size, stylize_stream
    from scoring.flicker import FlickerMeter
    from scoring.video import SegmentWriter, read_chunk

    src, out = Path(args.input), Path(args.output)
    spec = ChunkSpec.load(src)
    out.mkdir(parents=True, exist_ok=True)
    writer = SegmentWriter(out / SEGMENT_NAME, spec)
    meter = FlickerMeter(every=args.flicker_every)
    before: dict[int, object] = {}  # source frames the writer needs: the preview's, flicker pairs'

    def frames():
        for i, frame in enumerate(read_chunk(src / spec.piece, spec)):
            if i == spec.preview or meter.wants(i):
                before[i] = frame
            yield i, frame

    def write(i: int, styled) -> None:
        writer.write(styled)
        source = before.pop(i, None)
        if source is not None:
            meter.add(i, source, styled)
        if i == spec.preview:
            save_preview(source, styled, out / PREVIEW_NAME)

    width, height = spec.model_size
    batch = args.batch_size or auto_batch_size(scorer.device, lambda: (height, width), model_width)
    try:
        stats = stylize_stream(scorer, frames(), write, batch_size=batch, total=spec.frames,
                               progress=_progress_printer(spec.label, args.log_every))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"frames": stats.frames, "seconds": stats.seconds, "model_seconds": stats.model_seconds,
            "encoder": writer.encoder, "batch_size": batch, "flicker": meter.summary(),
            "bytes_in": _folder_bytes(src / SPEC_NAME, src / spec.piece),
            "bytes_out": _folder_bytes(out / SEGMENT_NAME, out / PREVIEW_NAME)}


def stylize_images(args: argparse.Namespace, scorer: Scorer, model_width: int) -> dict:
    """A folder of images in, one PNG per image out (same names)."""
    from scoring.engine import stylize_stream
    from scoring.frames import FolderFrameWriter, image_paths, read_folder

    src = Path(args.input)
    count = len(image_paths(src))
    if not count:
        raise FileNotFoundError(f"input {src} holds no chunk.json and no images")
    writer = FolderFrameWriter(Path(args.output), args.png_level)
    batch = args.batch_size or 1
    stats = stylize_stream(scorer, read_folder(src), writer.write, batch_size=batch, total=count,
                           progress=_progress_printer(src.name, args.log_every))
    return {"frames": stats.frames, "seconds": stats.seconds, "model_seconds": stats.model_seconds,
            "batch_size": batch}


def save_preview(before, after, path: Path, height: int = 360) -> None:
    """Before and after, side by side, at a height fit for a manifest page."""
    import numpy as np
    from PIL import Image

    pair = Image.fromarray(np.concatenate([before, after], axis=1))
    pair.resize((max(2, round(pair.width * height / pair.height)), height), Image.LANCZOS).save(path)


def _compile_pays(src: Path, threshold: int) -> bool:
    """--compile on a chunk too small to win back the compile time runs eager, and says so."""
    from scoring.chunk import SPEC_NAME, ChunkSpec, ChunkSpecError
    from scoring.engine import compile_pays

    if not (src / SPEC_NAME).is_file():
        return True
    try:
        spec = ChunkSpec.load(src)
    except ChunkSpecError:
        return False  # reported when the chunk is read
    if compile_pays(spec.frames, *spec.model_size, threshold):
        return True
    print(f"not compiling: {spec.frames} frames at {spec.model_size[0]}x{spec.model_size[1]} are too few to "
          "win back the compile time", flush=True)
    return False


def cmd_stylize(args: argparse.Namespace, started: float) -> int:
    import torch

    from scoring.checkpoint import ModelLoadError, load_model
    from scoring.chunk import SPEC_NAME, ChunkSpecError
    from scoring.engine import COMPILE_PAYS_PIXELS, DeviceError, Scorer, pick_device
    from scoring.video import PieceError

    torch.set_num_threads(args.threads) if args.threads else None
    try:
        device = pick_device(args.device)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        model, info = load_model(args.model, device, sidecar=Path(args.sidecar) if args.sidecar else None)
        threshold = COMPILE_PAYS_PIXELS if args.compile_min_pixels is None else args.compile_min_pixels
        compile = args.compile and _compile_pays(Path(args.input), threshold)
        scorer = Scorer(model, device, args.precision, compile=compile)
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"model {info.path.name} (width {info.width}, blocks {info.blocks}) on {device}, "
          f"{scorer.precision}{', compiled' if scorer.compiled else ''}", flush=True)
    run = stylize_chunk if (Path(args.input) / SPEC_NAME).is_file() else stylize_images
    try:
        figures = run(args, scorer, info.width)
    except (ChunkSpecError, PieceError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    total = time.monotonic() - started
    result = figures | {
        "seconds": round(figures["seconds"], 3), "model_seconds": round(figures["model_seconds"], 3),
        "fps": round(figures["frames"] / figures["seconds"], 3) if figures["seconds"] else 0.0,
        # start-up (torch import, model load, compile) included: what a chunk task waits for
        "total_seconds": round(total, 3), "startup_seconds": round(total - figures["seconds"], 3),
        "process_started_at": round(time.time() - total, 3),  # wall clock: a remote job's start-up is measured from it
        "device": str(device), "model": info.path.name, "precision": scorer.precision, "compiled": scorer.compiled,
    }
    if args.result:
        Path(args.result).parent.mkdir(parents=True, exist_ok=True)
        Path(args.result).write_text(json.dumps(result, indent=2))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def cmd_preview(args: argparse.Namespace, started: float) -> int:
    """Before and after, side by side: how a model looks on a photo of your own."""
    import numpy as np
    from PIL import Image

    from scoring.checkpoint import ModelLoadError, load_model
    from scoring.transformer_net import stylize_image

    try:
        model, _ = load_model(args.model)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with Image.open(args.image) as img:
        photo = np.array(img.convert("RGB"))
    styled = stylize_image(model, photo)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([photo, styled], axis=1)).save(args.output)
    print(args.output)
    return 0


def cmd_flicker(args: argparse.Namespace, started: float) -> int:
    """Print the warping error of a styled video (or of each --model styling the source), the
    source's own (the flow's noise floor), and their ratio."""
    from scoring.checkpoint import ModelLoadError, load_model
    from scoring.flicker import measure_model, measure_videos, save_strip

    if (args.styled is None) == (not args.model):
        print("error: give either a styled video or --model (one or more) to style the source with", file=sys.stderr)
        return EXIT_BAD_INPUT
    results = {}
    try:
        if args.model:
            models = {ref: load_model(ref)[0] for ref in args.model}
            for ref, model in models.items():
                results[ref] = measure_model(model, Path(args.source), every=args.every)
            if args.strip:
                save_strip(Path(args.source), models, Path(args.strip), start=args.strip_start)
        else:
            results[args.styled] = measure_videos(Path(args.source), Path(args.styled), every=args.every)
    except (OSError, ValueError, ModelLoadError) as exc:  # PyAV's errors are OSErrors
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for name, result in results.items():
        if not result["pairs"]:
            print("error: fewer than two frames: nothing to compare", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"{name}: warping error {result['warping_error']:.6f} (source {result['source_warping_error']:.6f}, "
              f"ratio {result['ratio']}) over {result['pairs']} frame pairs of {result['frames']} frames")
    print("RESULT " + json.dumps(results[args.styled] if args.styled else results), flush=True)
    return 0


def cmd_models(_: argparse.Namespace, started: float) -> int:
    from scoring.builtins import builtin_models

    for name, path in builtin_models().items():
        print(f"{name}\t{path}")
    return 0


def add_stylize_arguments(st: argparse.ArgumentParser) -> None:
    st.add_argument("--model", required=True, help="built-in model name or checkpoint path")
    st.add_argument("--sidecar", help="the checkpoint's JSON sidecar, when it is not beside it (a remote job's input)")
    st.add_argument("--input", required=True, help="chunk folder (chunk.json + piece) or folder of images")
    st.add_argument("--output", required=True, help="output folder")
    st.add_argument("--batch-size", type=int, default=0, help="frames per forward pass (0: automatic)")
    st.add_argument("--precision", default="auto",
                    help="auto (GPU fp16; CPU bf16 where native, else int8 residual blocks when compiled, else "
                         "fp32), fp32, bf16, fp16, int8 (CPU, compiled)")
    st.add_argument("--compile", action="store_true",
                    help="compile the model (a CPU's fp32/int8: a cached AOTInductor package; else torch.compile; "
                         "falls back to eager), for a chunk of at least --compile-min-pixels")
    st.add_argument("--compile-min-pixels", type=int, default=None, metavar="N",
                    help="frames x width x height from which compiling pays (default: the engine's, 20 M pixels, "
                         "about 90 frames at 640x360; 0 compiles any chunk)")
    st.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (a GPU asked for must be usable)")
    st.add_argument("--png-level", type=int, choices=range(10), default=1, metavar="0-9",
                    help="zlib level of output PNGs, for a folder of images (0 stores them)")
    st.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    st.add_argument("--result", help="also write the summary as JSON to this file")
    st.add_argument("--log-every", type=float, default=5.0, help="seconds between progress lines")
    st.add_argument("--flicker-every", type=int, default=DEFAULT_EVERY, metavar="N",
                    help="measure flicker on the pair (i, i+1) of every N-th frame of a chunk (0: off)")


def add_flicker_arguments(fl: argparse.ArgumentParser) -> None:
    fl.add_argument("source", help="the source video: its optical flow is the reference")
    fl.add_argument("styled", nargs="?", help="the styled video (same frames)")
    fl.add_argument("--model", action="append",
                    help="instead of a styled video: style the source with this model (name or path); repeatable")
    fl.add_argument("--strip", help="with --model: also save consecutive frames, source and each model's, as a PNG")
    fl.add_argument("--strip-start", type=int, default=0, help="the strip's first frame")
    fl.add_argument("--every", type=int, default=1, metavar="N", help="sample the pair (i, i+1) of every N-th frame")


def add_preview_arguments(pv: argparse.ArgumentParser) -> None:
    pv.add_argument("--model", required=True)
    pv.add_argument("--image", required=True)
    pv.add_argument("--output", required=True)


Command = Callable[[argparse.Namespace, float], int]
# name -> (help, options, what runs): ``python -m scoring`` and ``vidstyle`` offer the same commands.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {
    "stylize": ("stylize a chunk folder (video) or a folder of images", add_stylize_arguments, cmd_stylize),
    "flicker": ("warping error (flicker) of a styled video against its source", add_flicker_arguments, cmd_flicker),
    "preview": ("before/after image of one photo", add_preview_arguments, cmd_preview),
    "models": ("list built-in models", lambda p: None, cmd_models),
    "gpu-check": ("the scorer on this node's GPU in one go: benchmark, a 1080p chunk, NVENC (--cpu: the plumbing)",
                  gpu_check.add_arguments, gpu_check.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scoring", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (summary, add_arguments, run) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        add_arguments(command)
        command.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args, time.monotonic() if started is None else started)
