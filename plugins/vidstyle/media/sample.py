"""A sample video the project makes itself: a slow pan across the photos bundled with
scikit-image, with a soundtrack, at 29.97 fps. No download needed.

    vidstyle sample out.mp4 --seconds 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import ffmpeg

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")


def _canvas(height: int, out: Path) -> Path:
    """The photos side by side at one height: the strip the camera pans over."""
    import skimage  # only the demo needs it
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    tiles = []
    for name in PHOTOS:
        img = Image.open(folder / name).convert("RGB")
        tiles.append(img.resize((round(img.width * height / img.height), height), Image.LANCZOS))
    strip = Image.new("RGB", (sum(t.width for t in tiles), height))
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width
    strip.save(out)
    return out


def make_sample_video(out: Path, seconds: float = 4.0, width: int = 640, height: int = 360,
                      fps: str = "30000/1001", audio: bool = True) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        canvas = _canvas(height, Path(tmp) / "strip.png")
        video = (ffmpeg.input(str(canvas), loop=1, framerate=fps, t=seconds)
                 .filter("crop", width, height, f"(iw-{width})*t/{seconds}", 0))
        streams = [video]
        if audio:
            # A soft A-major chord with a slow tremolo: easy to hear that audio survived.
            expr = ("0.25*(sin(2*PI*220*t)+0.8*sin(2*PI*277.18*t)+0.6*sin(2*PI*329.63*t))"
                    "*(0.6+0.4*sin(2*PI*1.5*t))")
            streams.append(ffmpeg.input(f"aevalsrc={expr}:s=48000:d={seconds}", f="lavfi"))
        opts = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": 18, "r": fps, "t": seconds}
        if audio:
            opts |= {"acodec": "aac", "audio_bitrate": "128k"}
        ffmpeg.output(*streams, str(out), **opts).overwrite_output().run(capture_stdout=True, capture_stderr=True)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="the video file to write (MP4)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--no-audio", action="store_true", help="leave the soundtrack out")


def run(a: argparse.Namespace) -> int:
    print(make_sample_video(a.out, a.seconds, a.width, a.height, audio=not a.no_audio))
    return 0
