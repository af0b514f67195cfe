"""What a source video holds, read exactly: every frame's presentation time, keyframes, audio span.

Reading demuxes every packet (no decoding, so it costs I/O, not pixels) and decodes one frame
for what only a decoded frame tells (rotation, colour). Times stay integer ticks of the
stream's own time base throughout, so 29.97 fps and variable frame rate survive exactly.

Two ways to cut a source into chunks follow from it (``SourceInfo.mode``):
- ``copy``: each chunk gets the source's own packets, cut by stream copy at a keyframe; the
  common case, costing no decoding here.
- ``transcode``: the split decodes the video once and re-encodes each chunk's frames (nearly
  losslessly) into a piece of its own. For sources whose packets cannot be cut exactly: no
  timestamps on some packets, AVI (whose timestamps are decode order, not display order),
  duplicate timestamps, or keyframes so far apart that a cut chunk would have to decode far
  more than its own frames.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av

# Audio codecs an MP4 carries as they are; anything else is re-encoded to AAC.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})
# Containers whose packet timestamps are decode order even with B-frames.
UNTIMED_FORMATS = frozenset({"avi"})
CFR_TOLERANCE = Fraction(1, 2000)  # frame-to-frame jitter still called constant rate (container rounding)


class MediaError(ValueError):
    """The input is not a video we can process; the message says why."""


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


@dataclass
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    layout: str
    start: str  # presented start, seconds as an exact fraction string ("-13/2000")
    end: str  # presented end, the same way

    @property
    def copyable(self) -> bool:
        return self.codec in MP4_AUDIO


@dataclass
class SourceInfo:
    """A source video as the split plans it. Times are ticks of ``time_base`` (absolute)."""

    container: str
    codec: str
    width: int  # coded, before rotation
    height: int
    rotation: int  # degrees the decoded frames turn to stand upright: 0, 90, 180, 270
    sar: str
    pix_fmt: str
    frame_rate: str  # nominal, as a fraction string
    time_base: str
    pts: list[int] = field(repr=False)  # every frame, display order
    durations: list[int] = field(repr=False)  # how long each frame shows
    keyframes: list[int] = field(repr=False)  # display indices of keyframes (where chunks may begin)
    longest_gop: int = 0  # most frames between two keyframes
    mode: str = "copy"  # or "transcode" (see the module doc)
    mode_reason: str = ""
    audio: AudioInfo | None = None

    @property
    def frames(self) -> int:
        return len(self.pts)

    @property
    def tb(self) -> Fraction:
        return Fraction(self.time_base)

    @property
    def start(self) -> Fraction:
        return self.pts[0] * self.tb

    @property
    def duration(self) -> Fraction:
        return (self.pts[-1] + self.durations[-1] - self.pts[0]) * self.tb

    @property
    def upright_size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)

    @property
    def constant_rate(self) -> bool:
        step = 1 / Fraction(self.frame_rate)
        return all(abs(d * self.tb - step) <= CFR_TOLERANCE for d in self.durations[:-1])

    def summary(self) -> dict:
        """The small part that travels through XCom and into the manifest."""
        width, height = self.upright_size
        return {"frames": self.frames, "frame_rate": self.frame_rate, "fps": round(float(Fraction(self.frame_rate)), 4),
                "constant_rate": self.constant_rate, "duration": round(float(self.duration), 6), "width": width,
                "height": height, "rotation": self.rotation, "codec": self.codec, "container": self.container,
                "longest_gop": self.longest_gop, "mode": self.mode, "mode_reason": self.mode_reason,
                "has_audio": self.audio is not None, "audio_codec": self.audio.codec if self.audio else None}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SourceInfo:
        audio = AudioInfo(**data["audio"]) if data.get("audio") else None
        return cls(**(data | {"audio": audio}))


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:  # cover art is not the video
            return stream
    raise MediaError("no video stream")


def open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"not a readable video ({_error(exc)})") from exc


@dataclass
class PacketIndex:
    """The video packets in decode order: what cutting by stream copy works from."""

    pts: list[int | None]
    key: list[bool]
    shown: list[int]  # display index of each packet; -1 for one the edit list discards

    def __post_init__(self) -> None:
        self.position = [0] * sum(1 for d in self.shown if d >= 0)  # display index -> decode position
        for i, d in enumerate(self.shown):
            if d >= 0:
                self.position[d] = i
        self.key_positions = [i for i, k in enumerate(self.key) if k]

    def decode_range(self, start: int, end: int) -> tuple[int, int]:
        """Packets (decode positions ``[first, last]``) a copy cut needs for frames ``[start, end)``.

        It begins at the last keyframe before the first packet needed whose own frame is not
        shown after the chunk's first: frames shown before an open-GOP keyframe but decoded
        after it refer to the GOP before, so a chunk starting with them starts a keyframe earlier."""
        needed = self.position[start:end]
        first, last = min(needed), max(needed)
        first_pts = self.pts[self.position[start]]
        k = bisect.bisect_right(self.key_positions, first) - 1
        while k > 0 and (self.pts[self.key_positions[k]] or 0) > first_pts:
            k -= 1
        if k < 0:
            raise MediaError("the video does not begin with a keyframe: its first frames cannot be decoded")
        return self.key_positions[k], last


def probe(path: Path, max_gop: int) -> tuple[SourceInfo, PacketIndex]:
    """Everything the split needs; ``max_gop``: longest keyframe distance still cut by copy."""
    with open_input(path) as container:
        stream = video_stream(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        # AVI stamps packets in decode order: their dts are the frame slots, the pts meaningless.
        untimed = container.format.name.split(",")[0] in UNTIMED_FORMATS
        try:
            packets = [(p.dts if untimed else p.pts, p.is_keyframe, p.is_discard, p.duration, p.dts)
                       for p in container.demux(stream) if p.size]
        except av.FFmpegError as exc:
            raise MediaError(f"the video stream cannot be read ({_error(exc)})") from exc
        if not packets:
            raise MediaError("the video stream has no frames")
        name = container.format.name.split(",")[0]
        info, index = _timing(name, stream, packets, stream_end(stream, name))
        _read_first_frame(path, info)
        info.audio = audio_info(path) if audio is not None else None
    info.mode, info.mode_reason = _mode(info, packets, max_gop)
    return info, index


def _timing(container_name: str, stream: av.video.stream.VideoStream, packets: list[tuple],
            end: int | None) -> tuple[SourceInfo, PacketIndex]:
    """Frames are the packets the demuxer does not mark discarded (an edit list's cut), by pts."""
    shown = [(pts, dur) for pts, _, discard, dur, _ in packets if not discard]
    if not shown:
        raise MediaError("no frame of the video stream is shown (the edit list cuts them all)")
    timed = all(pts is not None for pts, _ in shown)
    if timed:
        order = sorted(range(len(shown)), key=lambda i: shown[i][0])
        pts = [shown[i][0] for i in order]
    else:  # placeholders until the transcode decodes the real ones
        order, pts = list(range(len(shown))), list(range(len(shown)))
    rank = [0] * len(order)
    for r, i in enumerate(order):
        rank[i] = r
    display = iter(rank)
    shown_at = [-1 if discard else next(display) for _, _, discard, _, _ in packets]
    keyframes = sorted(shown_at[i] for i, (_, key, discard, _, _) in enumerate(packets) if key and not discard)
    rate = _nominal_rate(stream, pts)
    durations = [b - a for a, b in itertools.pairwise(pts)]
    # The last frame shows until the stream's stated end, else for its own packet's duration.
    last = (end - pts[-1] if timed and end and end > pts[-1] else shown[order[-1]][1]) or \
        (durations[-1] if durations else round(1 / (rate * Fraction(stream.time_base))))
    ctx = stream.codec_context
    index = PacketIndex(pts=[p[0] for p in packets], key=[p[1] for p in packets], shown=shown_at)
    return SourceInfo(
        container=container_name, codec=ctx.codec.canonical_name, width=ctx.width, height=ctx.height, rotation=0,
        sar=str(stream.sample_aspect_ratio or Fraction(1)), pix_fmt=str(ctx.pix_fmt), frame_rate=str(rate),
        time_base=str(Fraction(stream.time_base)), pts=pts, durations=[*durations, max(1, last)],
        keyframes=keyframes or [0],
        longest_gop=max(b - a for a, b in itertools.pairwise([*(keyframes or [0]), len(pts)])),
    ), index


def _nominal_rate(stream: av.video.stream.VideoStream, pts: list[int]) -> Fraction:
    for rate in (stream.base_rate, stream.average_rate, stream.guessed_rate):
        if rate and 0 < rate <= 1000:
            return Fraction(rate)
    if len(pts) > 1 and pts[-1] > pts[0]:
        return (Fraction(len(pts) - 1) / ((pts[-1] - pts[0]) * Fraction(stream.time_base))).limit_denominator(1001)
    return Fraction(25)


def _read_first_frame(path: Path, info: SourceInfo) -> None:
    """Rotation and a first decode: a stream that cannot decode its first frame is refused here."""
    with open_input(path) as container:
        stream = video_stream(container)
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise MediaError(f"the video stream does not decode ({_error(exc)})") from exc
    if frame is None:
        raise MediaError("the video stream has no decodable frames")
    info.rotation = int(frame.rotation or 0) % 360
    if info.rotation % 90:
        raise MediaError(f"rotation by {info.rotation} degrees is not supported (only multiples of 90)")
    info.pix_fmt, info.width, info.height = str(frame.format.name), frame.width, frame.height


def _mode(info: SourceInfo, packets: list[tuple], max_gop: int) -> tuple[str, str]:
    shown = [p[0] for p in packets if not p[2]]
    if info.container in UNTIMED_FORMATS:
        return "transcode", f"{info.container} timestamps follow decode order, not display order"
    if any(p is None for p in shown):
        return "transcode", "some frames carry no timestamp"
    if len(set(shown)) != len(shown):
        return "transcode", "some frames share a timestamp"
    dts = [p[4] for p in packets if p[4] is not None]
    back = next((i for i, (a, b) in enumerate(itertools.pairwise(dts), 1) if b <= a), None)
    if back is not None:  # a muxer refuses such packets (stream-copy joins of clips at other rates)
        return "transcode", f"decode timestamps go backwards at packet {back}"
    if info.longest_gop > max_gop:
        return "transcode", f"keyframes up to {info.longest_gop} frames apart (cut by copy up to {max_gop})"
    return "copy", f"keyframes at most {info.longest_gop} frames apart"


# -- audio -----------------------------------------------------------------------------------

def skip_samples(packet: av.Packet) -> tuple[int, int]:
    """(samples to drop at the start, at the end) of an audio packet: encoder priming, padding."""
    if not packet.has_sidedata("skip_samples"):
        return 0, 0
    data = bytes(packet.get_sidedata("skip_samples"))
    return int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")


def audio_info(path: Path) -> AudioInfo:
    """The first audio stream and the span it is heard over (priming and padding trimmed)."""
    start, end = audio_span(path)
    with open_input(path) as container:
        ctx = container.streams.audio[0].codec_context
        return AudioInfo(codec=ctx.codec.canonical_name, sample_rate=ctx.sample_rate, channels=ctx.channels,
                         layout=ctx.layout.name, start=str(start), end=str(end))


def audio_span(path: Path) -> tuple[Fraction, Fraction]:
    """When the first audio stream is first and last heard, in seconds on the file's timeline.

    From the packets alone: the first packet's time plus the samples the decoder skips there
    (AAC and Opus priming), to the stream's stated end (an MP4 edit list's) or else the last
    packet's end less its padding (Matroska's discard padding)."""
    with open_input(path) as container:
        stream = container.streams.audio[0]
        tb, rate = Fraction(stream.time_base), stream.codec_context.sample_rate
        stated_end = stream_end(stream, container.format.name.split(",")[0])
        first = last = None
        try:
            for packet in container.demux(stream):
                if not packet.size or packet.pts is None:
                    continue
                first = first or packet
                last = packet
        except av.FFmpegError as exc:
            raise MediaError(f"the audio stream cannot be read ({_error(exc)})") from exc
    if first is None:
        raise MediaError("the audio stream has no packets")
    frame_size = stream.codec_context.frame_size or 0
    last_duration = last.duration * tb if last.duration else Fraction(frame_size, rate)
    start = first.pts * tb + Fraction(skip_samples(first)[0], rate)
    end = stated_end * tb if stated_end else last.pts * tb + last_duration - Fraction(skip_samples(last)[1], rate)
    return start, end


# Containers whose stated stream durations are written, not guessed: MP4 and MOV (the edit
# list's). Elsewhere (MPEG-TS, MPEG-PS) FFmpeg estimates a duration from the bit rate.
STATED_DURATIONS = frozenset({"mov"})


def stream_end(stream: av.stream.Stream, container: str = "mov") -> int | None:
    """When the container says the stream stops showing (ticks), if it says: an MP4's edit list
    does; a packet's own duration there counts in decode order, not display order."""
    if container in STATED_DURATIONS and stream.duration and stream.start_time is not None:
        return stream.start_time + stream.duration
    return None


def video_times(path: Path) -> tuple[list[Fraction], Fraction]:
    """Presentation times of every shown frame of a finished file, and when its last one ends."""
    with open_input(path) as container:
        stream = video_stream(container)
        tb = Fraction(stream.time_base)
        shown = sorted((p.pts, p.duration) for p in container.demux(stream) if p.size and not p.is_discard)
        end = stream_end(stream, container.format.name.split(",")[0])
    if not shown:
        raise MediaError("no video frames")
    return [pts * tb for pts, _ in shown], (end if end else shown[-1][0] + shown[-1][1]) * tb
