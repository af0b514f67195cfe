"""Plan: what ``split`` decided for a run, kept as ``plan.json`` in its work area for the later steps."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from vidstyle.media.chunks import Chunk
from vidstyle.media.cutting import Geometry, output_time_base
from vidstyle.media.probe import SourceInfo


@dataclass
class Plan:
    source: SourceInfo
    geometry: Geometry
    origin: Fraction  # the source time that becomes 0 in the result (first frame, or audio if earlier)
    chunks: list[Chunk]

    @classmethod
    def of(cls, source: SourceInfo, geometry: Geometry, chunks: list[Chunk]) -> Plan:
        """The plan ``split`` makes: the result's clock starts at the first frame, or at the audio
        where it starts earlier (nothing heard is cut off)."""
        origin = min(source.start, Fraction(source.audio.start)) if source.audio else source.start
        return cls(source, geometry, origin, chunks)

    def to_json(self) -> dict:
        return {"source": self.source.to_json(), "geometry": asdict(self.geometry), "origin": str(self.origin),
                "chunks": [c.to_dict() for c in self.chunks]}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        g = data["geometry"]
        return cls(SourceInfo.from_json(data["source"]),
                   Geometry(tuple(g["model_size"]), tuple(g["size"]), g["sar"]), Fraction(data["origin"]),
                   [Chunk.from_dict(c) for c in data["chunks"]])

    @property
    def video_offset(self) -> Fraction:
        """Where the first frame sits in the result, in seconds (0 unless audio starts first), on the
        result's clock (a whole number of its ticks)."""
        tb = output_time_base(self.source)
        return round((self.source.start - self.origin) / tb) * tb
