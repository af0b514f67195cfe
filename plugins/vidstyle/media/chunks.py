"""Where a video's chunks begin and end: contiguous, covering every frame, on keyframes when they can."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidstyle.media.probe import SourceInfo


@dataclass(frozen=True)
class Chunk:
    index: int  # 0-based
    count: int  # chunks in the video
    start: int  # first frame, 0-based
    end: int  # one past the last frame

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def label(self) -> str:
        return f"chunk {self.index + 1}/{self.count}, frames {self.start}-{self.end - 1}"

    def to_dict(self) -> dict:
        return asdict(self) | {"label": self.label}

    @classmethod
    def from_dict(cls, data: dict) -> Chunk:
        return cls(data["index"], data["count"], data["start"], data["end"])


def plan_chunks(frames: int, chunk_frames: int) -> list[Chunk]:
    """Contiguous chunks covering every frame; the remainder gets a chunk of its own."""
    if frames < 1 or chunk_frames < 1:
        raise ValueError(f"need frames >= 1 and chunk_frames >= 1, got {frames} and {chunk_frames}")
    starts = range(0, frames, chunk_frames)
    return [Chunk(i, len(starts), s, min(s + chunk_frames, frames)) for i, s in enumerate(starts)]


def keyframe_chunks(info: SourceInfo, chunk_frames: int) -> list[Chunk]:
    """Chunks of about ``chunk_frames``, each ending where a keyframe begins the next (within half
    a chunk either way; exactly at ``chunk_frames`` where no keyframe is that close). A source
    cut by transcoding has no keyframes to respect: plain chunks of ``chunk_frames``."""
    if info.mode != "copy":
        return plan_chunks(info.frames, chunk_frames)
    bounds, keys, half = [0], info.keyframes, chunk_frames // 2
    while bounds[-1] + chunk_frames < info.frames:
        target = bounds[-1] + chunk_frames
        lo = bisect.bisect_right(keys, bounds[-1] + half)
        hi = bisect.bisect_right(keys, min(target + half, info.frames - 1))
        near = keys[lo:hi]
        bounds.append(min(near, key=lambda k: (abs(k - target), k)) if near else target)
    bounds.append(info.frames)
    return [Chunk(i, len(bounds) - 1, s, e) for i, (s, e) in enumerate(itertools.pairwise(bounds))]
