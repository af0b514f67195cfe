"""The result: the chunks' segments joined by stream copy, the audio beside them, and the proof.

No frame is decoded or encoded here: the segments' H.264 packets are written one after the
other with their timestamps moved to where each segment starts, and the audio track's
packets interleave with them. Cost grows with bytes, not pixels. ``check_result`` then reads
the finished file back and compares it with the source: every frame's timestamp, the size,
and when the audio is first and last heard relative to the first frame.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from vidstyle.media.audio import audio_packets
from vidstyle.media.probe import audio_span, open_input, video_stream, video_times

AUDIO_TOLERANCE = Fraction(1, 1000)  # audio offset and length must match the source within 1 ms
MOVIE_TIMESCALE = 90_000  # edit lists' own clock: an empty edit (a track starting late) stays exact to 11 µs


class JoinError(RuntimeError):
    """The segments do not form the video the plan describes."""


@dataclass(frozen=True)
class Segment:
    label: str
    offset: Fraction  # where the segment starts in the result, in seconds
    frames: int
    end: Fraction  # when its last frame stops showing (the next segment's offset, or the video's end)


def segments(chunks: list, pts: list[int], last_duration: int, time_base: Fraction,
             offset: Fraction) -> list[Segment]:
    """Where each chunk's segment sits in the result: the source's times, from its first frame."""
    starts = [(pts[c.start] - pts[0]) * time_base + offset for c in chunks]
    end = (pts[-1] + last_duration - pts[0]) * time_base + offset
    return [Segment(c.label, start, c.frames, stop) for c, start, stop in zip(chunks, starts, [*starts[1:], end],
                                                                              strict=True)]


def _ticks(t: Fraction, time_base: Fraction, label: str) -> int:
    ticks = t / time_base
    if ticks.denominator != 1:
        raise JoinError(f"{label}: its start ({float(t):.6f} s) is not a whole number of {time_base} ticks")
    return int(ticks)


def _video_packets(segments: list[Segment], fetch: Callable[[int], Path],
                   template: list) -> Iterator[tuple[Fraction, av.Packet]]:
    """Every segment's packets in order, moved to the segment's offset; one segment on disk at a time.
    The segments' own time base (MP4 may refine the one they were encoded in) is the result's."""
    last_dts, extradata, time_base = None, None, None
    for i, segment in enumerate(segments):
        path = fetch(i)
        with open_input(path) as container:
            stream = video_stream(container)
            ctx = stream.codec_context
            if extradata is None:
                extradata, time_base = ctx.extradata, Fraction(stream.time_base)
                template.append(stream)
                yield None  # the caller adds the output stream from the first segment's
            elif ctx.extradata != extradata or (ctx.width, ctx.height) != (template[0].width, template[0].height):
                raise JoinError(f"{segment.label}: its segment was encoded with other parameters than "
                                "the first chunk's (another encoder or size); re-run that chunk")
            if Fraction(stream.time_base) != time_base:
                raise JoinError(f"{segment.label}: segment time base {stream.time_base}, the first's {time_base}")
            shift, count = _ticks(segment.offset, time_base, segment.label), 0
            shows = _display_durations(path, _ticks(segment.end, time_base, segment.label) - shift)
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                # Each frame lasts until the next one shows (MP4 ends a track at the latest pts +
                # duration; read back, a packet's duration is its decode-order step instead).
                packet.duration = shows[packet.pts]
                packet.pts += shift
                packet.dts = packet.pts if packet.dts is None else packet.dts + shift
                if last_dts is not None and packet.dts <= last_dts:
                    packet.dts = last_dts + 1  # decode order only; presentation times stay exact
                    if packet.dts > packet.pts:
                        raise JoinError(f"{segment.label}: its first frames overlap the chunk before")
                last_dts = packet.dts
                count += 1
                yield packet.dts * time_base, packet
        path.unlink(missing_ok=True)
        if count != segment.frames:
            raise JoinError(f"{segment.label}: its segment holds {count} frames, the plan {segment.frames}")


def _display_durations(path: Path, end: int) -> dict[int, int]:
    """pts -> how long that frame shows, for one segment file; its last frame until ``end``."""
    with open_input(path) as container:
        pts = sorted(p.pts for p in container.demux(video_stream(container)) if p.size)
    return {p: b - p for p, b in zip(pts, [*pts[1:], end], strict=True)}


def _audio_packets(path: Path) -> Iterator[tuple[Fraction, av.Packet]]:
    with open_input(path) as container:
        stream = container.streams.audio[0]
        yield None, stream  # the caller adds the output stream from it
        for packet in audio_packets(container, stream):
            yield packet.dts * packet.time_base, packet


def join(segments: list[Segment], fetch: Callable[[int], Path], audio: Path | None, out: Path) -> None:
    """Write ``out``: the segments (``fetch(i)`` gives segment i's local file, deleted once used) and
    the audio track (an MP4 already on the result's timeline), interleaved by decode time."""
    with av.open(str(out), "w", format="mp4",
                 options={"movflags": "+faststart", "movie_timescale": str(MOVIE_TIMESCALE)}) as dst:
        template: list = []
        video = _video_packets(segments, fetch, template)
        next(video)
        video_out = dst.add_stream_from_template(template[0])
        video_out.time_base = template[0].time_base
        streams = [_tagged(video, video_out)]
        if audio is not None:
            packets = _audio_packets(audio)
            _, audio_in = next(packets)
            audio_out = dst.add_stream_from_template(audio_in)
            audio_out.time_base = Fraction(1, audio_in.codec_context.sample_rate)
            streams.append(_tagged(packets, audio_out))
        for _, _, packet, stream in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            packet.stream = stream
            dst.mux(packet)


def _tagged(packets: Iterator, stream) -> Iterator[tuple[Fraction, int, av.Packet, object]]:
    """(decode time, tie-breaker, packet, output stream): video before audio at equal times."""
    order = 0 if stream.type == "video" else 1
    for t, packet in packets:
        yield t, order, packet, stream


def check_result(source_times: list[Fraction], source_end: Fraction, size: tuple[int, int],
                 source_audio: tuple[Fraction, Fraction] | None, result: Path) -> dict:
    """Compare the finished file with the source; raise naming every difference. Returns its figures."""
    times, end = video_times(result)
    problems = []
    if len(times) != len(source_times):
        problems.append(f"{len(times)} frames out, {len(source_times)} in")
    elif [t - times[0] for t in times] != [t - source_times[0] for t in source_times]:
        bad = next(i for i, (a, b) in enumerate(zip(times, source_times, strict=True))
                   if a - times[0] != b - source_times[0])
        problems.append(f"frame {bad} is at {float(times[bad] - times[0]):.6f} s, in the source at "
                        f"{float(source_times[bad] - source_times[0]):.6f} s")
    if end - times[0] != source_end - source_times[0]:
        problems.append(f"lasts {float(end - times[0]):.6f} s, the source {float(source_end - source_times[0]):.6f} s")
    with open_input(result) as container:
        stream = video_stream(container)
        got_size = (stream.codec_context.width, stream.codec_context.height)
        has_audio = bool(container.streams.audio)
    if got_size != tuple(size):
        problems.append(f"size {got_size[0]}x{got_size[1]}, expected {size[0]}x{size[1]}")
    audio = None
    if has_audio != (source_audio is not None):
        problems.append("audio missing" if source_audio else "audio appeared in a silent video")
    elif source_audio:
        start, stop = audio_span(result)
        audio = {"offset": float(start - times[0]), "duration": float(stop - start),
                 "source_offset": float(source_audio[0] - source_times[0]),
                 "source_duration": float(source_audio[1] - source_audio[0])}
        if abs((start - times[0]) - (source_audio[0] - source_times[0])) > AUDIO_TOLERANCE:
            problems.append(f"audio starts {1000 * audio['offset']:.3f} ms from the first frame, in the source "
                            f"{1000 * audio['source_offset']:.3f} ms")
        if abs((stop - start) - (source_audio[1] - source_audio[0])) > AUDIO_TOLERANCE:
            problems.append(f"audio lasts {audio['duration']:.6f} s, in the source {audio['source_duration']:.6f} s")
    if problems:
        raise JoinError("output check failed: " + "; ".join(problems))
    return {"frames": len(times), "duration": float(end - times[0]), "width": got_size[0], "height": got_size[1],
            "has_audio": has_audio, "audio": audio,
            "frame_rate": str(_rate(times)) if len(times) > 1 else None}


def _rate(times: list[Fraction]) -> Fraction:
    """The result's rate as players report it: frames over the span, to a 1001 denominator."""
    span = times[-1] - times[0]
    steps = {b - a for a, b in itertools.pairwise(times)}
    rate = 1 / next(iter(steps)) if len(steps) == 1 else (len(times) - 1) / span
    return rate.limit_denominator(1001)

