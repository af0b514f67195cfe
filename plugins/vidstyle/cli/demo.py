"""``vidstyle demo``: the whole pipeline on a sample video it makes itself.

A slow pan over the photos bundled with scikit-image, with a chord as soundtrack (``vidstyle
sample``), through ``vidstyle run``: local Airflow, Azurite, local scoring. The stylized video,
its manifest and a before/after preview land in ``out/``; the last line printed is the video's path.
"""

from __future__ import annotations

import argparse
import sys

from vidstyle.cli import local
from vidstyle.cli import run as run_command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=4.0, help="the sample's length (made once, kept in out/)")
    run_command.add_run_options(p)


def run(a: argparse.Namespace) -> int:
    from vidstyle.media.sample import make_sample_video

    out = a.out or local.home() / "out"
    sample = out / "sample.mp4"
    if not sample.is_file():
        make_sample_video(sample, seconds=a.seconds)
    print(f"[demo] sample video: {sample}", file=sys.stderr, flush=True)
    return run_command.run(argparse.Namespace(**vars(a), video=sample))
