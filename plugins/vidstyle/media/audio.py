"""The source's audio as an MP4 audio track on the result's timeline, heard exactly as in the source.

Copied packet for packet when MP4 can carry the codec (AAC, MP3, Opus, FLAC, ALAC, AC-3,
E-AC-3), else re-encoded to AAC. Either way the samples a decoder must skip survive: the
encoder's priming as a negative first timestamp (MP4 writes it as the edit list's media
time), the end padding as a shortened last packet (the edit list's duration). Copying the
stream into Matroska, as this pipeline once did, dropped the edit list and put AAC audio
~23 ms late.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from vidstyle.media.probe import MP4_AUDIO, MediaError, open_input, skip_samples, stream_end

AAC_BITRATE_PER_CHANNEL = 96_000
AAC_MAX_BITRATE = 512_000
USUAL_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def extract_audio(source: Path, out: Path, origin: Fraction) -> str:
    """Write the first audio stream of ``source`` to ``out`` (MP4), moved so that ``origin`` (a
    time on the source's timeline, in seconds) is 0. Returns how: "copy" or "aac"."""
    with open_input(source) as inp, av.open(str(out), "w", format="mp4") as dst:
        stream = inp.streams.audio[0]
        try:
            if stream.codec_context.codec.canonical_name in MP4_AUDIO:
                _copy(inp, stream, dst, origin)
                return "copy"
            _encode(inp, stream, dst, origin)
            return "aac"
        except av.FFmpegError as exc:
            raise MediaError(f"the audio stream cannot be read ({type(exc).__name__}: {exc})") from exc


def _ticks(t: Fraction, rate: int) -> int:
    return round(t * rate)


def audio_packets(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                  origin: Fraction = Fraction(0)) -> Iterator[av.Packet]:
    """The stream's packets on a clock of samples (1/sample rate), ``origin`` (seconds) moved to 0,
    the last one cut to where the stream is last heard: its stated end (an MP4 edit list's) or
    else its padding (Matroska's discard padding). MP4 ends an audio track at its last packet's
    end, so that cut is what keeps the length exact."""
    rate, tb = stream.codec_context.sample_rate, Fraction(stream.time_base)
    stated_end = stream_end(stream, container.format.name.split(",")[0])
    for packet, last in _with_last(p for p in container.demux(stream) if p.size and p.pts is not None):
        start = packet.pts * tb
        duration = packet.duration * tb if packet.duration else Fraction(stream.codec_context.frame_size or 0, rate)
        if last:
            heard_until = stated_end * tb if stated_end else start + duration - Fraction(skip_samples(packet)[1], rate)
            duration = min(duration, heard_until - start)
        packet.pts = _ticks(start - origin, rate)
        packet.dts = packet.pts if packet.dts is None else _ticks(packet.dts * tb - origin, rate)
        packet.duration = max(1, _ticks(duration, rate))
        packet.time_base = Fraction(1, rate)
        yield packet


def _copy(inp: av.container.InputContainer, stream: av.audio.stream.AudioStream,
          dst: av.container.OutputContainer, origin: Fraction) -> None:
    out = dst.add_stream_from_template(stream)
    out.time_base = Fraction(1, stream.codec_context.sample_rate)  # samples: exact for every frame and trim
    for packet in audio_packets(inp, stream, origin):
        packet.stream = out
        dst.mux(packet)


def _encode(inp: av.container.InputContainer, stream: av.audio.stream.AudioStream,
            dst: av.container.OutputContainer, origin: Fraction) -> None:
    ctx = stream.codec_context
    layout = ctx.layout.name if ctx.channels <= 8 else "7.1"
    if "channels" in layout:  # unspecified order ("1 channels": PCM in AVI): the usual one for the count
        layout = USUAL_LAYOUTS[min(ctx.channels, 8)]
    out = dst.add_stream("aac", rate=ctx.sample_rate, layout=layout)
    out.bit_rate = min(AAC_MAX_BITRATE, AAC_BITRATE_PER_CHANNEL * min(ctx.channels, 8))
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=ctx.sample_rate,
                                  frame_size=out.codec_context.frame_size or 1024)
    offset = _ticks(origin, ctx.sample_rate)
    for frame in [*inp.decode(stream), None]:
        for chunk in resampler.resample(frame):
            chunk.pts = chunk.pts - offset if chunk.pts is not None else None
            for packet in out.encode(chunk):
                dst.mux(packet)
    for packet in out.encode(None):
        dst.mux(packet)


def _with_last(items: Iterator) -> Iterator[tuple[object, bool]]:
    """Each item with whether it is the last (a one-item lookahead)."""
    previous = next(items, None)
    if previous is None:
        raise MediaError("the audio stream has no packets")
    for item in items:
        yield previous, False
        previous = item
    yield previous, True
