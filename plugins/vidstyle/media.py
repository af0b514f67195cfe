"""Video in, frames out, and back: ffmpeg through ffmpeg-python argument lists (no shell).

Frame timing comes from the decoded frames themselves, so 29.97 fps and variable frame rate
sources come back with the same timestamps, and the frame count is checked at every step.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import ffmpeg

# Audio codecs an MP4 can carry as they are; anything else is re-encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}
# Frame-to-frame jitter under this still counts as constant frame rate (container rounding).
CFR_TOLERANCE_S = 0.0005


class MediaError(ValueError):
    """The input is not a video we can process; the message says why."""


@dataclass
class VideoInfo:
    width: int
    height: int
    codec: str
    frames: int
    timestamps: list[float] = field(repr=False)  # seconds, from the first frame, presentation order
    frame_rate: str  # nominal rate as a fraction string, e.g. "30000/1001"
    constant_rate: bool
    duration: float  # first frame to end of last frame
    has_audio: bool
    audio_codec: str | None
    audio_offset: float  # seconds to shift the extracted audio to line up with frame 0

    @property
    def fps(self) -> float:
        return float(Fraction(self.frame_rate))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> VideoInfo:
        return cls(**data)


def _ffmpeg_error(exc: ffmpeg.Error) -> str:
    tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
    return " | ".join(tail) or str(exc)


def _run(stream, what: str) -> None:
    try:
        stream.run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise MediaError(f"{what} failed: {_ffmpeg_error(exc)}") from exc


def probe(path: Path) -> VideoInfo:
    """Streams plus the timestamp of every decoded video frame (one full decode pass)."""
    try:
        meta = ffmpeg.probe(str(path), select_streams="v:0",
                            show_entries="frame=best_effort_timestamp_time,duration_time")
        streams = ffmpeg.probe(str(path))["streams"]
    except ffmpeg.Error as exc:
        raise MediaError(f"not a readable video ({_ffmpeg_error(exc)})") from exc
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    if video is None:
        raise MediaError("no video stream")
    stamps = [float(f["best_effort_timestamp_time"]) for f in meta.get("frames", [])
              if f.get("best_effort_timestamp_time") not in (None, "N/A")]
    if not stamps:
        raise MediaError("the video stream has no decodable frames")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    rate = _nominal_rate(video, stamps)
    t0 = stamps[0]
    rel = [round(t - t0, 6) for t in stamps]
    deltas = [b - a for a, b in itertools.pairwise(rel)]
    if any(d <= 0 for d in deltas):
        raise MediaError("frame timestamps are not increasing; the file is damaged")
    step = 1 / float(rate)
    last = float(meta["frames"][-1].get("duration_time") or 0) or (deltas[-1] if deltas else step)
    fmt_start = float(meta.get("format", {}).get("start_time") or t0)
    return VideoInfo(
        width=int(video["width"]), height=int(video["height"]), codec=video.get("codec_name", "?"),
        frames=len(rel), timestamps=rel, frame_rate=str(rate),
        constant_rate=all(abs(d - step) < CFR_TOLERANCE_S for d in deltas),
        duration=round(rel[-1] + last, 6), has_audio=audio is not None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_offset=round(fmt_start - t0, 6),
    )


def _nominal_rate(video: dict, stamps: list[float]) -> Fraction:
    for key in ("r_frame_rate", "avg_frame_rate"):
        num, _, den = str(video.get(key, "0/0")).partition("/")
        if den and int(den) and int(num):
            rate = Fraction(int(num), int(den))
            if 0 < rate <= 1000:
                return rate
    if len(stamps) > 1 and stamps[-1] > stamps[0]:
        return Fraction((len(stamps) - 1) / (stamps[-1] - stamps[0])).limit_denominator(1001)
    return Fraction(25)


def extract_audio(path: Path, out: Path) -> None:
    """First audio stream, stream-copied into Matroska (which takes any codec): no re-encode."""
    _run(ffmpeg.input(str(path)).output(str(out), map="0:a:0", acodec="copy", vn=None)
         .overwrite_output(), "audio extraction")


def split_frames(path: Path, out_dir: Path, expected: int, height: int = 0) -> list[str]:
    """Every decoded frame as a lossless PNG named by its index; no frame dropped or duplicated."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = ffmpeg.input(str(path)).video
    if height:
        stream = stream.filter("scale", -2, height, flags="lanczos")
    _run(stream.output(str(out_dir / "%08d.png"), fps_mode="passthrough", start_number=0,
                       compression_level=1).overwrite_output(), "frame split")
    names = sorted(p.name for p in out_dir.glob("*.png"))
    if len(names) != expected:
        raise MediaError(f"frame split produced {len(names)} frames, probe counted {expected}")
    return names


def write_concat(frames_dir: Path, names: list[str], info: VideoInfo) -> Path:
    """An ffconcat list giving every frame its source duration (exact for VFR)."""
    stamps = info.timestamps
    ends = [*stamps[1:], info.duration]
    lines = ["ffconcat version 1.0"]
    for name, start, end in zip(names, stamps, ends, strict=True):
        # framerate 90000 gives the image demuxer a fine time base, so durations are not
        # rounded to its default 1/25 s.
        lines += [f"file '{name}'", "option framerate 90000", f"duration {end - start:.6f}"]
    path = frames_dir / "frames.ffconcat"
    path.write_text("\n".join(lines) + "\n")
    return path


def stitch(frames_dir: Path, names: list[str], info: VideoInfo, out: Path, crf: int = 18,
           preset: str = "medium") -> None:
    """Encode frames to H.264 with the source's timing; exactly ``len(names)`` frames."""
    if len(names) != info.frames:
        raise MediaError(f"stitch got {len(names)} frames for a {info.frames}-frame video")
    concat = write_concat(frames_dir, names, info)
    opts = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": crf, "preset": preset,
            "frames:v": len(names), "movflags": "+faststart"}
    if info.constant_rate:
        opts |= {"r": info.frame_rate, "fps_mode": "cfr"}
    else:
        opts |= {"fps_mode": "passthrough", "video_track_timescale": 90000}
    src = ffmpeg.input(str(concat), f="concat", safe=0).video
    # x264 with yuv420p needs even sides.
    src = src.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
    _run(src.output(str(out), **opts).overwrite_output(), "stitch")


def merge_audio(video: Path, audio: Path, out: Path, codec: str | None, offset: float) -> None:
    v = ffmpeg.input(str(video))
    a = ffmpeg.input(str(audio), itsoffset=offset) if abs(offset) > 1e-3 else ffmpeg.input(str(audio))
    acodec = "copy" if codec in MP4_AUDIO else "aac"
    extra = {} if acodec == "copy" else {"audio_bitrate": "192k"}
    _run(ffmpeg.output(v.video, a.audio, str(out), vcodec="copy", acodec=acodec,
                       movflags="+faststart", **extra).overwrite_output(), "audio merge")


def preview(before: Path, after: Path, out: Path, height: int = 360) -> None:
    """Side-by-side before/after PNG of one frame."""
    left = ffmpeg.input(str(before)).filter("scale", -2, height)
    right = ffmpeg.input(str(after)).filter("scale", -2, height)
    _run(ffmpeg.filter([left, right], "hstack").output(str(out), vframes=1).overwrite_output(), "preview")


def summary(path: Path) -> dict:
    """Frame count, duration and audio presence of a finished file, for checks and manifests."""
    info = probe(path)
    return {"frames": info.frames, "duration": info.duration, "frame_rate": info.frame_rate,
            "has_audio": info.has_audio, "width": info.width, "height": info.height}
