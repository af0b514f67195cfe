"""Cutting a source into chunks: where each begins and ends, and the piece each one decodes.

Every chunk becomes a folder: ``chunk.json`` (scoring.chunk.ChunkSpec) and ``piece.nut``.
One pass over the source writes all pieces, each finished piece handed to ``emit`` (which
uploads and deletes it), so local disk holds the source and at most a few pieces at once,
however long the video.

- copy mode: chunk boundaries sit on the source's keyframes nearest to every ``chunk_frames``
  (within half a chunk either way; exactly there when no keyframe is near). A piece is the
  source's packets from the keyframe a chunk's frames depend on to the last packet it
  shows, by stream copy: no decoding, no loss. NUT keeps every timestamp as it was.
- transcode mode: the video is decoded once, here, and every ``chunk_frames`` frames are
  re-encoded (x264, near-lossless) into a piece that starts with its own keyframe.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from scoring.chunk import PIECE_NAME, SPEC_NAME, ChunkSpec, Encoding, even_size
from scoring.video import SWSCALE_THREADS, X264_THREADS
from vidstyle.media.chunks import Chunk, keyframe_chunks, plan_chunks
from vidstyle.media.probe import UNTIMED_FORMATS, MediaError, PacketIndex, SourceInfo, open_input, video_stream

# NUT keeps every timestamp as given, and "disabled" stops it moving them all forward when the
# first decode time is negative (B-frames): the chunk finds its frames by their exact times.
PIECE_OPTIONS = {"avoid_negative_ts": "disabled"}
Emit = Callable[[int, str, Path], None]  # (chunk index, file name, local file): upload it, then delete it


@dataclass(frozen=True)
class Geometry:
    """Sizes after rotation and the run's ``output_height``; the segment's sides are even."""

    model_size: tuple[int, int]
    size: tuple[int, int]
    sar: str

    @classmethod
    def of(cls, info: SourceInfo, output_height: int = 0) -> Geometry:
        width, height = info.upright_size
        sar = Fraction(info.sar) if info.rotation in (0, 180) else 1 / Fraction(info.sar)
        if output_height and output_height != height:  # as ffmpeg's scale=-2:H: the stored aspect kept
            width, height = max(2, round(width * output_height / height / 2) * 2), output_height
        return cls((width, height), even_size(width, height), str(sar))


def output_time_base(info: SourceInfo) -> Fraction:
    """1/den of the source's time base: every source tick is a whole number of output ticks."""
    return Fraction(1, info.tb.denominator)


def to_output(info: SourceInfo, ticks: int) -> int:
    return ticks * info.tb.numerator


class Cutter:
    """Cuts one source into chunk folders (``chunk.json`` + ``piece.nut``), handing each file to ``emit``.

    After ``run()`` the source's ``pts`` and ``durations`` are the truth: in transcode mode they
    come from decoding (a container's own may be missing or in decode order)."""

    def __init__(self, source: Path, info: SourceInfo, index: PacketIndex, blob: str, chunk_frames: int,
                 geometry: Geometry, encoding: Encoding, folder: Path, emit: Emit, mezzanine_crf: int = 10) -> None:
        self.source, self.info, self.index, self.blob = source, info, index, blob
        self.chunk_frames, self.geometry, self.encoding = chunk_frames, geometry, encoding
        self.folder, self.emit, self.mezzanine_crf = folder, emit, mezzanine_crf

    def run(self) -> list[Chunk]:
        if self.info.mode == "copy":
            chunks = keyframe_chunks(self.info, self.chunk_frames)
            try:
                self._copy(chunks)
                return chunks
            except (av.FFmpegError, CopyCutError, ValueError) as exc:
                # What only the muxer (or reading the piece back) can tell: a source that
                # decodes is re-encoded per chunk instead of lost. Pieces already handed on are
                # written again under the same names.
                shutil.rmtree(self.folder, ignore_errors=True)
                self.info.mode = "transcode"
                self.info.mode_reason = f"the copy cut failed ({_reason(exc)}); re-encoded per chunk"
        select_time_base, select = self._transcode()
        chunks = plan_chunks(self.info.frames, self.chunk_frames)
        for chunk in chunks:
            self._emit_spec(chunk, select_time_base, select[: chunk.frames])
        return chunks

    def spec(self, chunk: Chunk, select_time_base: str, select: list[int]) -> ChunkSpec:
        info, preview = self.info, self.info.frames // 2  # the middle frame shows before and after
        pts = info.pts[chunk.start:chunk.end]
        return ChunkSpec(
            video=self.blob, label=chunk.label, first_frame=chunk.start, piece=PIECE_NAME,
            select_time_base=select_time_base, select=select, time_base=str(output_time_base(info)),
            pts=[to_output(info, p - pts[0]) for p in pts],
            last_duration=to_output(info, info.durations[chunk.end - 1]), rotation=info.rotation,
            model_size=self.geometry.model_size, size=self.geometry.size, encoding=self.encoding,
            preview=preview - chunk.start if chunk.start <= preview < chunk.end else None,
        )

    def _dir(self, index: int) -> Path:
        path = self.folder / f"chunk-{index:05d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _emit_spec(self, chunk: Chunk, select_time_base: str, select: list[int]) -> None:
        path = self._dir(chunk.index) / SPEC_NAME
        path.write_text(self.spec(chunk, select_time_base, select).to_json())
        self.emit(chunk.index, SPEC_NAME, path)

    def _copy(self, chunks: list[Chunk]) -> None:
        """One demux pass; each packet goes to every piece whose decode range holds it."""
        ranges = [self.index.decode_range(c.start, c.end) for c in chunks]
        pieces: dict[int, av.container.OutputContainer] = {}
        waiting = list(range(len(chunks)))[::-1]  # chunks whose first packet is still to come, next last
        with open_input(self.source) as container:
            stream = video_stream(container)
            position = -1
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                position += 1
                while waiting and ranges[waiting[-1]][0] == position:
                    i = waiting.pop()
                    pieces[i] = av.open(str(self._dir(i) / PIECE_NAME), "w", format="nut", options=PIECE_OPTIONS)
                    pieces[i].add_stream_from_template(stream)
                holders = [i for i in pieces if position <= ranges[i][1]]
                for n, i in enumerate(holders):  # muxing takes the packet over: others get a copy
                    pieces[i].mux(packet if n == len(holders) - 1 else _clone(packet))
                for i in [i for i in holders if ranges[i][1] == position]:
                    pieces.pop(i).close()
                    chunk = chunks[i]
                    _check_piece(self._dir(i) / PIECE_NAME, self.info.pts[chunk.start:chunk.end], self.info.tb,
                                 chunk.label)
                    self._emit_spec(chunk, self.info.time_base, self.info.pts[chunk.start:chunk.end])
                    self.emit(i, PIECE_NAME, self._dir(i) / PIECE_NAME)
        if pieces or waiting:
            raise MediaError(f"the video ended before chunk {min([*pieces, *waiting]) + 1}'s last frame")

    def _transcode(self) -> tuple[str, list[int]]:
        """Decode once; every ``chunk_frames`` frames become a piece as they come out of the decoder.
        Returns the pieces' time base and the piece timestamps of a chunk's frames (the same in
        every piece: each starts at 0)."""
        stamps: list[int] = []
        mezzanine: Mezzanine | None = None
        rate = Fraction(self.info.frame_rate)
        with open_input(self.source) as container:
            stream = video_stream(container)
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    chunk, n = divmod(len(stamps), self.chunk_frames)
                    if n == 0:
                        if mezzanine:
                            self._close_mezzanine(mezzanine, chunk - 1)
                        mezzanine = Mezzanine(self._dir(chunk) / PIECE_NAME, frame, rate, self.mezzanine_crf)
                    stamps.append(frame.pts if frame.pts is not None else -1)
                    mezzanine.write(frame)
            except av.FFmpegError as exc:
                raise MediaError(f"the video does not decode after frame {len(stamps)} "
                                 f"({type(exc).__name__}: {exc})") from exc
        if mezzanine is None:
            raise MediaError("the video stream has no decodable frames")
        self._close_mezzanine(mezzanine, (len(stamps) - 1) // self.chunk_frames)
        self.info.pts, self.info.durations = _decoded_timing(self.info, stamps, rate)
        return str(mezzanine.time_base), [mezzanine.pts(n) for n in range(self.chunk_frames)]

    def _close_mezzanine(self, mezzanine: Mezzanine, index: int) -> None:
        mezzanine.close()
        self.emit(index, PIECE_NAME, self._dir(index) / PIECE_NAME)


class CopyCutError(RuntimeError):
    """A stream-copied piece does not hold the frames or times the plan gives its chunk."""


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, CopyCutError) else f"{type(exc).__name__}: {exc}"


def _check_piece(path: Path, pts: list[int], tb: Fraction, label: str) -> None:
    """Read a piece back (packets only): every frame of its chunk is there, at its source time."""
    with open_input(path) as container:
        stream = video_stream(container)
        piece_tb = Fraction(stream.time_base)
        got = {round(p.pts * piece_tb / tb) for p in container.demux(stream) if p.size and p.pts is not None}
    missing = [p for p in pts if p not in got]
    if missing:
        raise CopyCutError(f"chunk {label}'s piece lacks {len(missing)} of its {len(pts)} frames, the first at "
                           f"{float(missing[0] * tb):.6f} s")


def _clone(packet: av.Packet) -> av.Packet:
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.duration, copy.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
    copy.is_keyframe = packet.is_keyframe
    return copy


class Mezzanine:
    """One chunk's frames re-encoded where they cannot be cut by copy: x264, its own keyframe first."""

    def __init__(self, path: Path, first: av.VideoFrame, rate: Fraction, crf: int) -> None:
        self.rate, self.count = rate, 0
        self.container = av.open(str(path), "w", format="nut", options=PIECE_OPTIONS)
        formats = {f.name for f in av.codec.Codec("libx264", "w").video_formats}
        self.stream = self.container.add_stream("libx264", rate=rate,
                                                options={"crf": str(crf), "preset": "veryfast", **X264_THREADS})
        ctx = self.stream.codec_context
        ctx.width, ctx.height = first.width, first.height
        ctx.pix_fmt = first.format.name if first.format.name in formats else "yuv420p"
        ctx.time_base = self.stream.time_base = self.time_base
        ctx.colorspace, ctx.color_range = first.colorspace, first.color_range  # the chunk converts as the source
        ctx.color_primaries, ctx.color_trc = first.color_primaries, first.color_trc

    @property
    def time_base(self) -> Fraction:
        return 1 / Fraction(self.rate.numerator)

    def pts(self, n: int) -> int:
        return n * self.rate.denominator

    def write(self, frame: av.VideoFrame) -> None:
        frame = frame.reformat(format=self.stream.codec_context.pix_fmt, threads=SWSCALE_THREADS)
        frame.pts, frame.time_base = self.pts(self.count), self.time_base
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def _decoded_timing(info: SourceInfo, stamps: list[int], rate: Fraction) -> tuple[list[int], list[int]]:
    """Decoded frames' times, in the order the decoder shows them. A container that stamps
    packets in decode order (AVI) has its frame slots (packet dts, which the probe read) as the
    times. Frames with no time are spaced at the nominal rate after the one before. Times that
    go backwards or repeat are refused: no order of the frames would be the source's."""
    step = round(1 / (rate * info.tb)) or 1
    if info.container in UNTIMED_FORMATS and len(info.pts) == len(stamps):
        stamps = info.pts
    elif all(s < 0 for s in stamps):
        stamps = [i * step for i in range(len(stamps))]
    elif any(s < 0 for s in stamps):
        filled: list[int] = []
        for s in stamps:
            filled.append(s if s >= 0 else (filled[-1] + step if filled else 0))
        stamps = filled
    for i, (a, b) in enumerate(itertools.pairwise(stamps), 1):
        if b == a:
            raise MediaError(f"frames {i - 1} and {i} share a timestamp ({float(a * info.tb):.6f} s): "
                             "the file is damaged")
        if b < a:
            raise MediaError(f"its timestamps go backwards: frame {i} is timed at {float(b * info.tb):.6f} s, "
                             f"before frame {i - 1} at {float(a * info.tb):.6f} s (a recording restarted "
                             "or files joined without fixing their times); remux it with new timestamps")
    durations = [b - a for a, b in itertools.pairwise(stamps)]
    # The last frame keeps its stated duration where the probe's times are these.
    stated = info.durations[-1] if info.pts and info.pts[-1] == stamps[-1] and len(info.pts) == len(stamps) else 0
    return stamps, [*durations, stated or step]
