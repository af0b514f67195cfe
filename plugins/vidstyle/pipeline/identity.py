"""What a video is to the pipeline: one upload at one content version, and what a run makes of it.

A re-upload with new content is a new video (a new id, a new ledger entry, a new run); the same
bytes again are the same video. Ids are ASCII (Airflow run ids must be): a readable slug of the
name plus a hash of the container, the path and the version, so two names never collide.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from scoring.chunk import DEFAULT_CRF

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties

    from vidstyle.hooks.blob_store import BlobStore


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

    @classmethod
    def of_blob(cls, container: str, props: BlobProperties) -> Video:
        """The video a blob holds now, from its properties."""
        modified = props.last_modified.isoformat() if props.last_modified else ""
        return cls(container, props.name, content_version(props), modified, int(props.size or 0), str(props.etag))


def content_version(props: BlobProperties) -> str:
    """A blob's content version: its Content-MD5 where the store keeps one, else its ETag."""
    md5 = props.content_settings.content_md5 if props.content_settings else None
    return bytes(md5).hex() if md5 else str(props.etag).strip('"')


def find_videos(store: BlobStore, prefix: str, suffixes: tuple[str, ...]) -> list[Video]:
    """Every video under ``prefix`` (names ending in one of ``suffixes``, any case)."""
    return [Video.of_blob(store.container, p) for p in store.list(prefix) if p.name.lower().endswith(suffixes)]


def current_video(store: BlobStore, blob: str) -> Video:
    """The video ``blob`` holds now; FileNotFoundError when there is none."""
    return Video.of_blob(store.container, store.properties(blob))


@dataclass(frozen=True)
class OutputSpec:
    """What a run produces from a video: the parameters that change the result's bytes or place."""

    style: str
    output_height: int = 0
    crf: int = DEFAULT_CRF
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
