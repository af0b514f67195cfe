"""The chunk contract: what the split step writes beside a chunk's piece and a scorer reads.

A chunk's input folder holds ``chunk.json`` (a ChunkSpec) and the piece it names: a short
video, either the source's own packets cut by stream copy (starting at a keyframe, possibly a
few frames before the chunk's first) or, for sources that cannot be cut that way, a
near-lossless re-encode of exactly the chunk's frames. The scorer decodes the piece, keeps
exactly the frames ``select`` lists (by presentation time), stylizes them and encodes a
segment whose frames carry ``pts``: the source's own timing, relative to the segment's start.
The stitch step joins the segments by stream copy, so every number here is exact: integer
ticks of an exact time base, never floats.

Pure Python: the Airflow side writes it, a scorer on any machine reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

# A chunk's input folder ("in"): the spec and the piece it names.
SPEC_NAME = "chunk.json"
PIECE_NAME = "piece.nut"
INPUT_FILES = (SPEC_NAME, PIECE_NAME)
# Its output folder ("out"): the segment and its figures (written last: a folder whose result is
# in place is complete), and the before/after image from the chunk holding the middle frame.
SEGMENT_NAME = "segment.mp4"
RESULT_NAME = "result.json"
PREVIEW_NAME = "preview.png"
OUTPUT_FILES = (SEGMENT_NAME, RESULT_NAME)
OPTIONAL_OUTPUT_FILES = (PREVIEW_NAME,)
# The scorer's exit code for inputs it cannot use (a bad model, a damaged piece): retrying will not help.
EXIT_BAD_INPUT = 2
DEFAULT_CRF = 18  # H.264 quality of a result unless a run says otherwise: visually lossless
ROTATIONS = (0, 90, 180, 270)


class ChunkSpecError(ValueError):
    """A chunk.json that does not describe a chunk the scorer can produce."""


@dataclass(frozen=True)
class Encoding:
    """How the segment is encoded; identical for every chunk of a video, so segments join."""

    crf: int = DEFAULT_CRF
    preset: str = "medium"
    encoder: str = "auto"  # auto: the GPU's hardware H.264 encoder when there is one, else libx264
    frame_rate: str = "30000/1001"  # nominal rate, for the encoder's rate control only
    sar: str = "1/1"


@dataclass(frozen=True)
class ChunkSpec:
    video: str  # the source's blob path, for messages
    label: str  # "chunk 3/12, frames 480-719"
    first_frame: int  # global index of the chunk's first frame
    piece: str  # file name of the piece, in the same folder
    select_time_base: str  # time base of ``select``
    select: list[int]  # presentation times of the frames to keep, in display order
    time_base: str  # time base of ``pts`` and of the segment
    pts: list[int]  # each kept frame's time in the segment (the first is 0)
    last_duration: int  # how long the last frame shows, in ``time_base``
    rotation: int  # degrees to turn decoded frames so they stand upright (0, 90, 180, 270)
    model_size: tuple[int, int]  # (width, height) frames are stylized at, upright
    size: tuple[int, int]  # (width, height) of the segment: model_size rounded to even sides
    encoding: Encoding = field(default_factory=Encoding)
    preview: int | None = None  # index in this chunk of the frame for the before/after image

    def __post_init__(self) -> None:
        problems = []
        if not self.select or len(self.select) != len(self.pts):
            problems.append(f"{len(self.select)} frames to select but {len(self.pts)} timestamps")
        if any(b <= a for a, b in zip(self.pts, self.pts[1:], strict=False)) or (self.pts and self.pts[0] != 0):
            problems.append("segment timestamps must start at 0 and increase")
        if self.rotation not in ROTATIONS:
            problems.append(f"rotation {self.rotation} is not one of {ROTATIONS}")
        if any(v % 2 for v in self.size) or min(self.size) < 2:
            problems.append(f"segment size {self.size} must have even sides")
        if self.preview is not None and not 0 <= self.preview < len(self.pts):
            problems.append(f"preview frame {self.preview} is outside the chunk")
        if problems:
            raise ChunkSpecError(f"{self.label}: bad chunk spec: " + "; ".join(problems))

    @property
    def frames(self) -> int:
        return len(self.select)

    @property
    def select_times(self) -> list[Fraction]:
        tb = Fraction(self.select_time_base)
        return [p * tb for p in self.select]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ChunkSpec:
        data = json.loads(text)
        data["encoding"] = Encoding(**data.get("encoding", {}))
        data["model_size"], data["size"] = tuple(data["model_size"]), tuple(data["size"])
        return cls(**data)

    @classmethod
    def load(cls, folder: Path) -> ChunkSpec:
        path = folder / SPEC_NAME
        if not path.is_file():
            raise ChunkSpecError(f"{folder}: no {SPEC_NAME}")
        try:
            return cls.from_json(path.read_text())
        except (TypeError, KeyError, ValueError) as exc:
            if isinstance(exc, ChunkSpecError):
                raise
            raise ChunkSpecError(f"{path}: not a chunk spec ({type(exc).__name__}: {exc})") from exc


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 in 4:2:0 needs even sides: an odd side grows by one pixel (scaled, never padded)."""
    return width + width % 2, height + height % 2
