"""A corpus of odd but valid sources, made with ffmpeg from lavfi sources (argument lists, no
shell): the files phones, screen recorders, broadcast captures and quick ``ffmpeg -c copy`` jobs
make, which players play and pipelines often break on. Small clips, a second or two each.

Each case makes its file in a folder and names what the pipeline must do with it (README, "The
data path"): come out exact, or be refused at the split with the words given.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

SIZE = "96x64"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-nostdin", *args], check=True, timeout=120)


def video(seconds: float = 1.2, rate: str = "25") -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={rate}:duration={seconds}"]


def tone(seconds: float = 1.2, freq: int = 440, rate: int = 48000) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"]


X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "12"]


@functools.cache
def ffmpeg_encoders() -> frozenset[str]:
    """The encoders of the ffmpeg that makes the clips (the system's, as ``ffmpeg -encoders`` lists them)."""
    listing = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, check=True,
                             timeout=60).stdout
    # Lines like " V....D libx264   libx264 H.264 ...", after a " ------" rule.
    rows = listing.split(" ------", 1)[1].splitlines()
    return frozenset(parts[1] for parts in (row.split() for row in rows) if len(parts) > 1)


def pyav_decodes(name: str) -> bool:
    """Whether PyAV (which the pipeline reads every file with) has this decoder."""
    try:
        av.codec.Codec(name, "r")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # what it is, for the README's table
    make: Callable[[Path], Path]
    refused: str = ""  # words of the split's error; empty: must come out exact
    encoders: tuple[str, ...] = ("libx264", "aac")  # what the system ffmpeg needs to make it
    decoders: tuple[str, ...] = ("h264", "aac")  # what PyAV needs to read it

    def missing_tools(self) -> list[str]:
        """What this machine lacks to make or read the case (CI has all of it)."""
        return ([f"ffmpeg ({shutil.which('ffmpeg')}) has no {e} encoder"
                 for e in self.encoders if e not in ffmpeg_encoders()]
                + [f"PyAV {av.__version__} has no {d} decoder" for d in self.decoders if not pyav_decodes(d)])


# -- the makers ----------------------------------------------------------------------------------

def concat_rates(d: Path) -> Path:
    """Two clips of different rates joined by the concat demuxer with stream copy (the regression)."""
    parts = []
    for i, rate in enumerate(("24", "30")):
        parts.append(d / f"part{i}.mp4")
        ffmpeg(*video(0.8, rate), *tone(0.8), *X264, "-c:a", "aac", str(parts[-1]))
    (d / "list.txt").write_text("".join(f"file '{p.name}'\n" for p in parts))
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(d / "list.txt"), "-c", "copy", str(d / "joined.mp4"))
    return d / "joined.mp4"


def setts(expr: str, name: str) -> Callable[[Path], Path]:
    """Timestamps edited by the setts bitstream filter (no B-frames: pts = dts)."""
    def make(d: Path) -> Path:
        escaped = expr.replace(",", "\\,")  # commas separate filters in a bsf list
        ffmpeg(*video(1.2), *X264, "-bf", "0", "-bsf:v", f"setts=ts={escaped}", str(d / name))
        return d / name
    return make


def x264(name: str, *extra: str, pix_fmt: str = "yuv420p", audio: bool = True) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        ffmpeg(*video(1.2), *(tone(1.2) if audio else []), "-c:v", "libx264", "-preset", "veryfast",
               "-pix_fmt", pix_fmt, *extra, *(["-c:a", "aac"] if audio else []), str(d / name))
        return d / name
    return make


def encoded(name: str, *args: str, audio: list[str] | None = None) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        ffmpeg(*video(1.2), *(tone(1.2) if audio is not None else []), *args, *(audio or []), str(d / name))
        return d / name
    return make


def ts_offset(d: Path) -> Path:
    ffmpeg(*video(1.2), *tone(1.2), *X264, "-c:a", "aac", "-output_ts_offset", "10", str(d / "late.ts"))
    return d / "late.ts"


def ts_discontinuity(d: Path) -> Path:
    """Two recordings back to back in one TS (a capture restarted): timestamps start over."""
    for i in range(2):
        ffmpeg(*video(0.8), *X264, "-an", str(d / f"p{i}.ts"))
    (d / "joined.ts").write_bytes((d / "p0.ts").read_bytes() + (d / "p1.ts").read_bytes())
    return d / "joined.ts"


def edit_skip(d: Path) -> Path:
    """An MP4 cut by stream copy at a non-keyframe: its edit list skips the start of the GOP."""
    ffmpeg(*video(2), *tone(2), *X264, "-g", "25", "-c:a", "aac", str(d / "full.mp4"))
    ffmpeg("-ss", "0.5", "-i", str(d / "full.mp4"), "-c", "copy", str(d / "cut.mp4"))
    return d / "cut.mp4"


def edit_gap(d: Path) -> Path:
    """Video starting 0.4 s into the file (an empty edit first), audio from 0."""
    ffmpeg(*video(1.2), *X264, str(d / "v.mp4"))
    ffmpeg(*tone(1.6), "-c:a", "aac", str(d / "a.m4a"))
    ffmpeg("-itsoffset", "0.4", "-i", str(d / "v.mp4"), "-i", str(d / "a.m4a"), "-map", "0:v", "-map", "1:a",
           "-c", "copy", str(d / "gap.mp4"))
    return d / "gap.mp4"


def shifted(which: str) -> Callable[[Path], Path]:
    """Audio starting before (``video``: the video shifted later) or after the video."""
    def make(d: Path) -> Path:
        ffmpeg(*video(1.2), *X264, str(d / "v.mkv"))
        ffmpeg(*tone(1.2), "-c:a", "aac", str(d / "a.m4a"))
        inputs = (["-itsoffset", "0.3", "-i", str(d / "v.mkv"), "-i", str(d / "a.m4a")] if which == "video" else
                  ["-i", str(d / "v.mkv"), "-itsoffset", "0.3", "-i", str(d / "a.m4a")])
        ffmpeg(*inputs, "-map", "0:v", "-map", "1:a", "-c", "copy", str(d / f"{which}-late.mp4"))
        return d / f"{which}-late.mp4"
    return make


def two_audio(d: Path) -> Path:
    ffmpeg(*video(1.2), *tone(1.2, 440), *tone(1.2, 660), "-map", "0", "-map", "1", "-map", "2", *X264,
           "-c:a", "aac", str(d / "two-audio.mkv"))
    return d / "two-audio.mkv"


CASES = [
    Case("concat-rates", "24 and 30 fps clips joined by the concat demuxer with -c copy (MP4)", concat_rates),
    Case("setts-gap", "a 0.4 s gap in the timestamps (setts)", setts("if(gte(N,10),TS+400,TS)", "gap.mkv"),
         encoders=("libx264",), decoders=("h264",)),
    Case("setts-one-tick", "frames 1 ms apart mid-stream (setts)", setts("if(gte(N,10),TS-39,TS)", "tick.mkv"),
         encoders=("libx264",), decoders=("h264",)),
    Case("setts-jump-back", "timestamps that jump back mid-stream (setts)",
         setts("if(gte(N,10),TS-200,TS)", "back.mkv"), refused="share a timestamp", encoders=("libx264",),
         decoders=("h264",)),
    Case("setts-duplicate", "two frames with one presentation time (setts)",
         setts("if(eq(N,10),TS-40,TS)", "dup.mkv"), refused="share a timestamp", encoders=("libx264",),
         decoders=("h264",)),
    Case("ts-offset", "MPEG-TS starting at 10 s", ts_offset),
    Case("ts-discontinuity", "two MPEG-TS recordings back to back (timestamps start over)", ts_discontinuity,
         refused="timestamps go backwards", encoders=("libx264",), decoders=("h264",)),
    Case("edit-skip", "MP4 cut with -c copy mid-GOP: the edit list skips frames", edit_skip),
    Case("edit-gap", "MP4 whose video starts 0.4 s in (an empty edit)", edit_gap),
    Case("open-gop", "H.264 open GOP with B-frames", x264("open-gop.mkv", "-x264-params",
                                                          "open-gop=1:keyint=10:bframes=3")),
    Case("b-pyramid", "H.264 B-pyramid, 3 B-frames (MP4)", x264("pyramid.mp4", "-x264-params",
                                                              "b-pyramid=normal:bframes=3:keyint=12")),
    Case("hevc", "HEVC in MP4 (B-frames)", encoded("hevc.mp4", "-c:v", "libx265", "-preset", "ultrafast",
                                                  "-x265-params", "log-level=error:keyint=12", "-tag:v", "hvc1",
                                                  audio=["-c:a", "aac"]),
         encoders=("libx265", "aac"), decoders=("hevc", "aac")),
    Case("vp9-altref", "VP9 with alt-ref frames (WebM, Opus)",
         encoded("altref.webm", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-auto-alt-ref",
                 "1", "-lag-in-frames", "16", "-g", "12", audio=["-c:a", "libopus"]),
         encoders=("libvpx-vp9", "libopus"), decoders=("vp9", "opus")),
    Case("av1", "AV1 (SVT-AV1) in MP4", encoded("av1.mp4", "-c:v", "libsvtav1", "-preset", "12", "-g", "12",
                                                audio=["-c:a", "aac"]), encoders=("libsvtav1", "aac"),
         decoders=("libdav1d", "aac")),  # FFmpeg's own av1 decoder needs a GPU; dav1d decodes in software
    Case("mpeg2-interlaced", "interlaced MPEG-2 in MPEG-PS, MP2 audio (B-frames without timestamps)",
         encoded("interlaced.mpg", "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1", "-g", "12",
                 "-bf", "2", audio=["-c:a", "mp2"]), encoders=("mpeg2video", "mp2"), decoders=("mpeg2video", "mp2")),
    Case("mjpeg-avi", "Motion JPEG in AVI with PCM mono audio",
         encoded("mjpeg.avi", "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p",
                 audio=["-c:a", "pcm_s16le", "-ac", "1"]), encoders=("mjpeg", "pcm_s16le"),
         decoders=("mjpeg", "pcm_s16le")),
    Case("prores-mov", "ProRes 4:2:2 10-bit in MOV", encoded("prores.mov", "-c:v", "prores_ks", "-profile:v", "2",
                                                            audio=["-c:a", "pcm_s16le"]),
         encoders=("prores_ks", "pcm_s16le"), decoders=("prores", "pcm_s16le")),
    Case("ffv1-mkv", "FFV1 (lossless, intra-only) in Matroska", encoded("ffv1.mkv", "-c:v", "ffv1",
                                                                        audio=["-c:a", "flac"]),
         encoders=("ffv1", "flac"), decoders=("ffv1", "flac")),
    Case("h264-10bit", "H.264 10-bit", x264("ten.mkv", pix_fmt="yuv420p10le")),
    Case("h264-422", "H.264 4:2:2", x264("422.mkv", pix_fmt="yuv422p")),
    Case("h264-444", "H.264 4:4:4", x264("444.mp4", pix_fmt="yuv444p")),
    Case("audio-first", "audio starting 0.3 s before the video", shifted("video")),
    Case("audio-late", "audio starting 0.3 s after the video", shifted("audio")),
    Case("two-audio", "two audio streams (the first is kept)", two_audio),
]


def decoded_times(path: Path) -> list[Fraction]:
    """What ffmpeg decodes from a file: every frame's best-effort time, relative to the first."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base)
        times = [f.pts * tb for f in container.decode(stream) if f.pts is not None]
    return [t - times[0] for t in times]
