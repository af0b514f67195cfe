"""Flicker, measured as the warping error of Lai et al. 2018 ("Learning Blind Video Temporal
Consistency"): optical flow on the *source* frames t -> t+1 and back (OpenCV's DIS, offline, no
weights); styled frame t+1 warped back to t along that flow; the mean squared difference to
styled frame t (RGB in [0, 1]) over the pixels the forward-backward check of Ruder et al. 2016
keeps (not occluded, not on a motion boundary, not flowing out of the frame); averaged over
frame pairs. The same measure on the source frames is the flow's own noise floor, so
``styled / source`` says how much the styling adds.

    python -m scoring flicker SOURCE.mp4 STYLED.mp4       # any two videos of the same frames
    python -m scoring flicker SOURCE.mp4 --model pop-art  # how much a model flickers on a video

Flow and error run on frames scaled so that the longer side is at most ``FLOW_SIDE``: flicker
is a change of whole regions, and 1080p flow would cost ~9x as much (its pixels) for it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scoring.flicker_figures import DEFAULT_EVERY, FLOW_SIDE, combine

__all__ = ["DEFAULT_EVERY", "FlickerMeter", "combine", "measure_model", "measure_videos", "save_strip"]



def _flow_size(shape: tuple[int, ...], side: int = FLOW_SIDE) -> tuple[int, int]:
    h, w = shape[:2]
    scale = min(1.0, side / max(h, w))
    return max(8, round(w * scale)), max(8, round(h * scale))


def prepare(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 -> float32 RGB in [0, 1] at ``size`` (width, height)."""
    if (rgb.shape[1], rgb.shape[0]) != size:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb.astype(np.float32) / 255.0


def _gray(rgb01: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((rgb01 * 255.0 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY)


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def warp(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``frame`` sampled at x + flow(x): frame t+1 brought back to t along the flow t -> t+1."""
    xs, ys = _grid(*flow.shape[:2])
    return cv2.remap(frame, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _gradient_sq(channel: np.ndarray) -> np.ndarray:
    """|grad|^2 by central differences (numpy.gradient's, in OpenCV: ~10x faster)."""
    gx = cv2.Sobel(channel, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    gy = cv2.Sobel(channel, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    return gx * gx + gy * gy


def valid_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Ruder et al.'s rule: a pixel counts unless the backward flow does not undo the forward
    one (occluded), it sits on a motion boundary, or it flows out of the frame."""
    h, w = forward.shape[:2]
    xs, ys = _grid(h, w)
    u, v = cv2.split(forward)
    x, y = xs + u, ys + v
    bu, bv = cv2.split(cv2.remap(backward, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    fwd_sq = u * u + v * v
    occluded = (u + bu) ** 2 + (v + bv) ** 2 > 0.01 * (fwd_sq + bu * bu + bv * bv) + 0.5
    boundary = _gradient_sq(u) + _gradient_sq(v) > 0.01 * fwd_sq + 0.002
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return inside & ~occluded & ~boundary


class PairMeasure:
    """Warping errors of frame pairs; one DIS instance (not thread-safe: one per thread)."""

    def __init__(self) -> None:
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    Pair = tuple[np.ndarray, np.ndarray]

    def __call__(self, src: Pair, styled: Pair) -> tuple[float, float]:
        """(styled error, source error) of one pair; frames prepared at one size."""
        a, b = _gray(src[0]), _gray(src[1])
        forward, backward = self.dis.calc(a, b, None), self.dis.calc(b, a, None)
        mask = valid_mask(forward, backward)
        if not mask.any():
            return 0.0, 0.0

        keep = mask.view(np.uint8)

        def error(t: np.ndarray, t1: np.ndarray) -> float:
            diff = t - warp(t1, forward)
            return sum(cv2.mean(diff * diff, mask=keep)[:3]) / 3  # mean over kept pixels and channels
        return error(*styled), error(*src)


@dataclass
class FlickerMeter:
    """Samples the pairs (i, i+1), i a multiple of ``every``, of a stream of (index, source,
    styled) frames in order, holding at most one pair's frames."""

    every: int = DEFAULT_EVERY
    pairs: int = 0
    styled_sum: float = 0.0
    source_sum: float = 0.0
    _held: tuple | None = field(default=None, repr=False)
    _measure: PairMeasure | None = field(default=None, repr=False)

    def wants(self, i: int) -> bool:
        """Whether frame ``i`` is one end of a sampled pair."""
        return self.every > 0 and (i % self.every == 0 or (i - 1) % self.every == 0)

    def add(self, i: int, source: np.ndarray, styled: np.ndarray) -> None:
        if not self.wants(i):
            return
        starts, ends = i % self.every == 0, (i - 1) % self.every == 0
        size = _flow_size(styled.shape)
        now = (i, prepare(source, size), prepare(styled, size))
        if ends and self._held is not None and self._held[0] == i - 1:
            self._measure = self._measure or PairMeasure()
            styled_err, source_err = self._measure((self._held[1], now[1]), (self._held[2], now[2]))
            self.pairs += 1
            self.styled_sum += styled_err
            self.source_sum += source_err
        self._held = now if starts else None

    def summary(self) -> dict:
        """What a chunk reports: sums, so that chunks combine exactly."""
        return {"every": self.every, "pairs": self.pairs, "styled_sum": self.styled_sum,
                "source_sum": self.source_sum}


def _frames(path: Path) -> Iterator[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def measure_videos(source: Path, styled: Path, every: int = 1) -> dict:
    """The warping error of ``styled`` against the flow of ``source`` (two videos of the same
    frames, e.g. a video and its stylized result), pairs (i, i+1) for every ``every``-th i."""
    meter, frames = FlickerMeter(every=every), 0
    for i, (a, b) in enumerate(itertools.zip_longest(_frames(source), _frames(styled))):
        if a is None or b is None:
            raise ValueError(f"{source.name} and {styled.name} differ in length: one ends after {i} frames")
        meter.add(i, a, b)
        frames = i + 1
    result = combine([meter.summary()]) or {"warping_error": None, "source_warping_error": None, "ratio": None,
                                            "pairs": 0, "every": every}
    return result | {"frames": frames}


def measure_model(model: object, source: Path, every: int = 1) -> dict:
    """The warping error of ``model`` (a TransformerNet) styling ``source`` frame by frame."""
    from scoring.transformer_net import stylize_image

    meter, frames = FlickerMeter(every=every), 0
    for i, frame in enumerate(_frames(source)):
        if meter.wants(i):
            meter.add(i, frame, stylize_image(model, frame))
        frames = i + 1
    return (combine([meter.summary()]) or {"pairs": 0}) | {"frames": frames}


def save_strip(source: Path, models: dict[str, object], out: Path, start: int = 0, count: int = 4,
               height: int = 180) -> Path:
    """``count`` consecutive frames from ``start``: the source's row, then one row per model,
    each frame at ``height`` px: flicker is what changes along a row that the motion does not explain."""
    from PIL import Image

    from scoring.transformer_net import stylize_image

    frames = list(itertools.islice(_frames(source), start, start + count))
    rows = [frames, *([stylize_image(model, f) for f in frames] for model in models.values())]
    width = round(frames[0].shape[1] * height / frames[0].shape[0])
    tiles = [[cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in row] for row in rows]
    gap = 4
    sheet = np.full((len(rows) * (height + gap) - gap, count * (width + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            sheet[r * (height + gap): r * (height + gap) + height, c * (width + gap): c * (width + gap) + width] = tile
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out)
    return out
