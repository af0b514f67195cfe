"""Flicker as the warping error (scoring/flicker.py): real frames, real OpenCV flow, real videos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from scoring.flicker import FlickerMeter, combine, measure_videos, valid_mask
from tests.support import ROOT


def photo(width: int = 192, height: int = 128) -> np.ndarray:
    """A crop of a real photo: texture the flow can lock on to."""
    import skimage

    image = skimage.data.astronaut()
    return np.ascontiguousarray(image[100:100 + height, 150:150 + width])


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    """Near-lossless H.264 (4:4:4, QP 0): what goes in is what a reader gets back, to rounding."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    return path


def test_a_still_video_has_no_flicker(tmp_path):
    still = write_video(tmp_path / "still.mp4", [photo()] * 6)
    result = measure_videos(still, still)
    assert result["pairs"] == 5 and result["frames"] == 6
    assert result["warping_error"] < 1e-6 and result["source_warping_error"] < 1e-6


def test_a_known_flicker_gives_its_known_value(tmp_path):
    """Styled frames that alternate between two greys over a still source: every pixel of every
    pair differs by exactly that step, so the warping error is the step squared."""
    source = write_video(tmp_path / "source.mp4", [photo()] * 6)
    grey = [np.full_like(photo(), 100 if i % 2 == 0 else 140) for i in range(6)]
    styled = write_video(tmp_path / "styled.mp4", grey)
    result = measure_videos(source, styled)
    assert result["warping_error"] == pytest.approx((40 / 255) ** 2, rel=0.02)
    assert result["source_warping_error"] < 1e-6


def test_motion_is_followed_not_counted_as_flicker():
    """A pan: styled = source moved with it, so warping along the flow undoes the motion (an
    unwarped difference would be large)."""
    base = np.tile(photo(), (1, 2, 1))
    meter = FlickerMeter(every=1)
    frames = [np.ascontiguousarray(base[:, 3 * i: 3 * i + 192]) for i in range(6)]
    for i, f in enumerate(frames):
        meter.add(i, f, f)
    result = combine([meter.summary()])
    moved = np.mean((frames[0].astype(np.float32) / 255 - frames[1].astype(np.float32) / 255) ** 2)
    assert result["pairs"] == 5 and result["warping_error"] < moved / 20


def test_pixels_the_motion_uncovers_are_left_out():
    """A square moving over a still background: the background it uncovers has no match in the
    next frame, and the forward-backward check leaves it out."""
    flow_fwd = np.zeros((64, 64, 2), np.float32)
    flow_fwd[20:40, 20:40, 0] = 6  # the square moves right by 6 px
    flow_bwd = np.zeros_like(flow_fwd)
    flow_bwd[20:40, 26:46, 0] = -6
    mask = valid_mask(flow_fwd, flow_bwd)
    assert mask[5, 5] and mask[30, 30]  # still background, the square itself
    assert not mask[30, 41]  # background the square covers in the next frame: occluded
    assert not mask[30, 19]  # the square's edge: a motion boundary


def test_a_chunk_samples_every_nth_pair_and_chunks_combine_exactly():
    meter = FlickerMeter(every=4)
    for i in range(10):
        meter.add(i, photo(), photo())
    assert meter.summary()["pairs"] == 3  # (0, 1), (4, 5), (8, 9)
    assert [i for i in range(10) if meter.wants(i)] == [0, 1, 4, 5, 8, 9]
    parts = [{"every": 4, "pairs": 3, "styled_sum": 0.3, "source_sum": 0.03},
             {"every": 4, "pairs": 1, "styled_sum": 0.1, "source_sum": 0.01}, None]
    total = combine(parts)
    assert total["pairs"] == 4 and total["warping_error"] == pytest.approx(0.1)
    assert total["ratio"] == pytest.approx(10)
    assert FlickerMeter(every=0).wants(0) is False and combine([None]) is None


def test_the_command_compares_two_videos_and_refuses_different_lengths(tmp_path):
    source = write_video(tmp_path / "a.mp4", [photo()] * 4)
    shorter = write_video(tmp_path / "b.mp4", [photo()] * 3)
    run = [sys.executable, "-m", "scoring", "flicker"]
    done = subprocess.run([*run, str(source), str(source)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["pairs"] == 3 and result["warping_error"] < 1e-6
    done = subprocess.run([*run, str(source), str(shorter)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "differ in length" in done.stderr


def test_the_command_compares_models_on_a_source_and_draws_their_frames(tmp_path, tiny_model):
    from PIL import Image

    frames = [np.ascontiguousarray(np.tile(photo(), (1, 2, 1))[:, 4 * i: 4 * i + 192]) for i in range(5)]
    source = write_video(tmp_path / "pan.mp4", frames)
    strip = tmp_path / "strip.png"
    done = subprocess.run([sys.executable, "-m", "scoring", "flicker", str(source), "--model", str(tiny_model),
                           "--model", "pop-art", "--strip", str(strip)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert set(results) == {str(tiny_model), "pop-art"} and all(r["pairs"] == 4 for r in results.values())
    assert Image.open(strip).size == (4 * 270 + 3 * 4, 3 * 180 + 2 * 4)  # 4 frames; source and two models
