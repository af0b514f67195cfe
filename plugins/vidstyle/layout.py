"""Where everything lives in blob storage, and how videos and chunks are named.

One container holds (prefixes configurable, see README "Storage layout"):
  incoming/<path>                               videos dropped by users (never modified)
  work/<video_id>/<run>/plan.json               the split's plan: every frame's time, the chunks
  work/<video_id>/<run>/audio.m4a               the source audio on the result's timeline
  work/<video_id>/<run>/chunks/<n>/in/          chunk.json and piece.nut: what a chunk decodes
  work/<video_id>/<run>/chunks/<n>/out/         segment.mp4 (its frames, stylized), result.json
  outputs/<path>.<style>.mp4                    the result, with .manifest.json and .preview.png
  state/videos/<video_id>.json                  ledger: which content was processed, how it ended

Each run of a video works in a folder of its own (``<run>``, a hash of the Airflow run id), so
two runs of one video never read or delete each other's files.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime

from vidstyle.config import Settings


def slug(text: str, limit: int = 48) -> str:
    """ASCII for ids (Airflow run ids are ASCII): accents dropped, other scripts left out. Only a
    readable prefix: every id also carries a hash of the full name, so ids never collide."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-").lower()
    return s[:limit].strip("-") or "video"


@dataclass(frozen=True)
class Video:
    """A video blob at one content version: a re-upload with new content is a new Video."""

    container: str
    blob: str
    version: str  # Content-MD5 when the store has one, else the ETag
    last_modified: str = ""
    size: int = 0
    etag: str = ""  # pins downloads to these exact bytes (not part of the identity)

    @property
    def video_id(self) -> str:
        digest = hashlib.sha256(f"{self.container}\n{self.blob}\n{self.version}".encode()).hexdigest()
        stem = posixpath.splitext(posixpath.basename(self.blob))[0]
        return f"{slug(stem)}-{digest[:10]}"

    @property
    def arrival(self) -> str:
        """When this version was uploaded, compact UTC (in run ids: the processing order)."""
        if not self.last_modified:
            return "00000000T000000"
        return datetime.fromisoformat(self.last_modified).strftime("%Y%m%dT%H%M%S")

    @property
    def run_id(self) -> str:
        return f"video__{self.arrival}__{self.video_id}"

    def to_dict(self) -> dict:
        return asdict(self) | {"video_id": self.video_id}

    @classmethod
    def from_dict(cls, data: dict) -> Video:
        return cls(**{k: data[k] for k in ("container", "blob", "version", "last_modified", "size", "etag")
                      if k in data})


@dataclass(frozen=True)
class OutputSpec:
    """What a run produces from a video: the parameters that change the result's bytes or place."""

    style: str
    output_height: int = 0
    crf: int = 18
    output_prefix: str = "outputs/"

    @property
    def key(self) -> str:
        """Readable and unique: the style, plus every parameter that is not the default."""
        parts = [self.style]
        if self.output_height:
            parts.append(f"{self.output_height}p")
        if self.crf != OutputSpec.crf:
            parts.append(f"crf{self.crf}")
        if self.output_prefix != OutputSpec.output_prefix:
            parts.append(f"in {self.output_prefix}")
        return " ".join(parts)

    @property
    def variant(self) -> str:
        """The result's name tag after the style: empty for the source's height and the default CRF."""
        tags = ([f"{self.output_height}p"] if self.output_height else []) + (
            [f"crf{self.crf}"] if self.crf != OutputSpec.crf else [])
        return "".join(f".{t}" for t in tags)

    def to_dict(self) -> dict:
        return asdict(self)


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


def run_key(run_id: str) -> str:
    """A short, fixed-length, path-safe name for an Airflow run id."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WorkArea:
    """One run's folder of intermediate files."""

    root: str  # ends with "/"

    @property
    def plan(self) -> str:
        return self.root + "plan.json"

    @property
    def audio(self) -> str:
        return self.root + "audio.m4a"

    def chunk_dir(self, index: int, side: str) -> str:
        """A chunk's input ("in") or output ("out") folder: what a remote job mounts."""
        return self.root + f"chunks/{index:05d}/{side}/"

    def chunk_file(self, index: int, side: str, name: str) -> str:
        return self.chunk_dir(index, side) + name


@dataclass(frozen=True)
class Layout:
    settings: Settings

    def video_work(self, video_id: str) -> str:
        """Every run's work area of one video lives under this."""
        return f"{self.settings.work_prefix}{video_id}/"

    def work(self, video_id: str, run_id: str) -> WorkArea:
        return WorkArea(f"{self.video_work(video_id)}{run_key(run_id)}/")

    def state(self, video_id: str) -> str:
        return f"{self.settings.state_prefix}videos/{video_id}.json"

    def outputs(self, blob: str, spec: OutputSpec) -> dict[str, str]:
        """Result paths mirror the input path under the output prefix, tagged with the style and
        any non-default height or quality: different outputs of one video never share a name."""
        rel = blob[len(self.settings.input_prefix):] if blob.startswith(self.settings.input_prefix) else blob
        style_name = posixpath.splitext(posixpath.basename(spec.style.rstrip("/")))[0]
        base = spec.output_prefix + posixpath.splitext(rel)[0] + "." + slug(style_name, 32) + spec.variant
        return {"video": base + ".mp4", "manifest": base + ".manifest.json", "preview": base + ".preview.png"}

    def default_output(self, style: str | None = None) -> OutputSpec:
        """The output the watcher and the sweep produce: the installation's style and prefix."""
        return OutputSpec(style or self.settings.default_style, output_prefix=self.settings.output_prefix)

    def claim(self, output_blob: str) -> str:
        """The blob a run holds while it writes ``output_blob`` (see vidstyle.claims)."""
        return f"{self.settings.state_prefix}claims/{hashlib.sha256(output_blob.encode()).hexdigest()[:32]}.json"
