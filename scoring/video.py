"""A chunk's video in and out with PyAV: exact frames from a piece, an H.264 segment back.

Decoding keeps exactly the frames the chunk spec selects, matched by presentation time (the
piece may start a few frames early, at the keyframe they depend on), and turns them upright
and to the model's size. Encoding gives every frame the spec's timestamp, so segments join
into a video with the source's timing. Both run in the caller's threads; PyAV releases the
GIL while it decodes, converts and encodes, so they overlap the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from scoring.chunk import ChunkSpec

log = logging.getLogger(__name__)

HARDWARE_ENCODERS = ("h264_nvenc",)  # tried in order by encoder "auto", before libx264
SOFTWARE_ENCODER = "libx264"
# The same video must give the same bytes. x264's frame threads decide by what has reached them
# when, so a fixed number of slices per frame keeps it parallel and the output the same on every
# run and machine. swscale's own threads made one run in seven differ (measured, 3 of 20 against
# 0 of 40 with one thread): colour conversion runs single-threaded, beside the model anyway.
X264_THREADS = {"threads": "4", "x264-params": "sliced-threads=1"}
SWSCALE_THREADS = 1


class PieceError(ValueError):
    """The piece does not hold the frames its spec names: the source is damaged."""


# FFmpeg's AVColorSpace tags -> swscale's matrices (BT.709, FCC, BT.470BG, SMPTE 170M, 240M, BT.2020).
_MATRICES = {1: Colorspace.ITU709, 4: Colorspace.FCC, 5: Colorspace.ITU601, 6: Colorspace.SMPTE170M,
             7: Colorspace.SMPTE240M, 9: Colorspace.BT2020, 10: Colorspace.BT2020}


def _source_colorspace(frame: av.VideoFrame) -> Colorspace:
    """The frame's own matrix; untagged frames get what players assume (BT.709 from 720 lines)."""
    tagged = _MATRICES.get(int(frame.colorspace or 2))
    return tagged or (Colorspace.ITU709 if frame.height >= 720 else Colorspace.ITU601)


def _source_range(frame: av.VideoFrame) -> ColorRange:
    return ColorRange.JPEG if int(frame.color_range or 0) == 2 else ColorRange.MPEG


def upright_rgb(frame: av.VideoFrame, spec: ChunkSpec) -> np.ndarray:
    """RGB24 of a decoded frame, scaled to the model's size and turned upright."""
    width, height = spec.model_size
    if spec.rotation in (90, 270):  # scale in the coded orientation, then turn
        width, height = height, width
    rgb = frame.reformat(width=width, height=height, format="rgb24", src_colorspace=_source_colorspace(frame),
                         src_color_range=_source_range(frame), dst_color_range=ColorRange.JPEG,
                         interpolation=Interpolation.LANCZOS if (width, height) != (frame.width, frame.height)
                         else Interpolation.BICUBIC, threads=SWSCALE_THREADS).to_ndarray()
    # A copy: the array is a view of the frame's pooled buffer, which the decoder reuses once the
    # frame is freed, while this frame still waits in the engine's queue.
    return np.array(np.rot90(rgb, spec.rotation // 90) if spec.rotation else rgb, order="C", copy=True)


def read_chunk(piece: Path, spec: ChunkSpec, threads: int = 0) -> Iterator[np.ndarray]:
    """The chunk's frames in display order, exactly those ``spec.select`` names."""
    wanted, i = spec.select_times, 0
    try:
        with av.open(str(piece)) as container:
            for frame in _selected(container, spec, wanted, threads):
                yield frame
                i += 1
    except av.FFmpegError as exc:
        at = float(wanted[min(i, len(wanted) - 1)])
        raise PieceError(f"{spec.label}: frame {spec.first_frame + i} ({at:.6f} s) did not decode "
                         f"({type(exc).__name__}: {exc}); the video is damaged there") from exc


def _selected(container: av.container.InputContainer, spec: ChunkSpec, wanted: list[Fraction],
              threads: int) -> Iterator[np.ndarray]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    tolerance = min(Fraction(spec.select_time_base), Fraction(stream.time_base)) / 2
    i = 0
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = frame.pts * Fraction(frame.time_base)
        if t < wanted[i] - tolerance:
            continue  # lead-in: decoded only because later frames refer to it
        if abs(t - wanted[i]) > tolerance:
            raise PieceError(f"{spec.label}: frame {spec.first_frame + i} ({float(wanted[i]):.6f} s) did not "
                             f"decode (next decoded frame: {float(t):.6f} s); the video is damaged there")
        yield upright_rgb(frame, spec)
        i += 1
        if i == len(wanted):
            return
    raise PieceError(f"{spec.label}: {len(wanted) - i} of {len(wanted)} frames did not decode (first missing: "
                     f"frame {spec.first_frame + i}, {float(wanted[i]):.6f} s); the video is damaged there")


def encoder_candidates(requested: str) -> list[str]:
    if requested == "auto":
        return [*HARDWARE_ENCODERS, SOFTWARE_ENCODER]
    if requested not in (*HARDWARE_ENCODERS, SOFTWARE_ENCODER):
        raise ValueError(f"encoder must be auto, {SOFTWARE_ENCODER} or {', '.join(HARDWARE_ENCODERS)}; "
                         f"got {requested!r}")
    return [requested]


def _encoder_options(name: str, crf: int, preset: str) -> dict[str, str]:
    if name == SOFTWARE_ENCODER:
        return {"crf": str(crf), "preset": preset, **X264_THREADS}
    # NVENC: constant quality at about the same visual level as x264's CRF, no bitrate cap.
    return {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": str(min(51, max(1, crf + 1))), "b": "0",
            "bf": "3", "spatial-aq": "1"}


class SegmentWriter:
    """Encodes upright RGB frames into ``path`` (MP4, H.264, yuv420p, BT.709) with the spec's timing."""

    def __init__(self, path: Path, spec: ChunkSpec) -> None:
        self.spec, self.path = spec, path
        self.time_base = Fraction(spec.time_base)
        pts = spec.pts
        self._durations = {p: b - p for p, b in zip(pts, [*pts[1:], pts[-1] + spec.last_duration], strict=True)}
        self._i = 0
        self.container = av.open(str(path), "w", format="mp4")
        self.stream, self.encoder = self._open_encoder()

    def _open_encoder(self) -> tuple[av.video.stream.VideoStream, str]:
        enc, failures = self.spec.encoding, []
        for name in encoder_candidates(enc.encoder):
            try:
                stream = self.container.add_stream(name, rate=Fraction(enc.frame_rate),
                                                   options=_encoder_options(name, enc.crf, enc.preset))
                ctx = stream.codec_context
                ctx.width, ctx.height = self.spec.size
                ctx.pix_fmt = "yuv420p"
                ctx.time_base = stream.time_base = self.time_base
                ctx.sample_aspect_ratio = Fraction(enc.sar)
                ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc = 1, 1, 1, 1  # TV range, BT.709
                ctx.open()  # a hardware encoder without its GPU or driver fails here
                return stream, name
            except (av.FFmpegError, ValueError) as exc:
                failures.append(f"{name}: {exc}")
                # add_stream cannot be undone: start the file again for the next candidate.
                self.container.close()
                self.container = av.open(str(self.path), "w", format="mp4")
        raise RuntimeError(f"{self.spec.label}: no H.264 encoder could be opened ({'; '.join(failures)})")

    def write(self, rgb: np.ndarray) -> None:
        if self._i >= len(self.spec.pts):
            raise PieceError(f"{self.spec.label}: more frames than the chunk has ({len(self.spec.pts)})")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        width, height = self.spec.size
        frame = frame.reformat(width=width, height=height, format="yuv420p", src_colorspace=Colorspace.ITU709,
                               dst_colorspace=Colorspace.ITU709, src_color_range=ColorRange.JPEG,
                               dst_color_range=ColorRange.MPEG, interpolation=Interpolation.BICUBIC,
                               threads=SWSCALE_THREADS)
        frame.pts, frame.time_base = self.spec.pts[self._i], self.time_base
        self._i += 1
        self._mux(self.stream.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            packet.duration = self._durations[packet.pts]  # the last frame shows as long as in the source
            self.container.mux(packet)

    def close(self) -> None:
        if self._i != len(self.spec.pts):
            self.container.close()
            raise PieceError(f"{self.spec.label}: {self._i} frames written, {len(self.spec.pts)} expected")
        self._mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        self.container.close()
        self.path.unlink(missing_ok=True)
