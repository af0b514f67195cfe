"""Helpers the tests share: synthetic videos made with real ffmpeg, and chunk folders cut from them
as the pipeline's split cuts them."""

from __future__ import annotations

from pathlib import Path

from vidstyle.cli.stack import free_port  # noqa: F401  the tests' servers' ports: one copy, the package's

ROOT = Path(__file__).resolve().parents[1]


def make_video(path: Path, seconds: float = 1.0, size: str = "96x64", rate: str = "30000/1001",
               audio: bool = True, vfr: bool = False) -> Path:
    """A small synthetic video: moving test pattern, optional tone, optional variable frame rate."""
    import ffmpeg

    if vfr:
        # Two halves at different rates, joined: frame durations change mid-stream.
        parts = []
        for i, r in enumerate(("24", "60")):
            part = path.with_name(f"{path.stem}-part{i}.mkv")
            ffmpeg.input(f"testsrc2=size={size}:rate={r}", f="lavfi", t=seconds / 2).output(
                str(part), vcodec="libx264", pix_fmt="yuv420p").overwrite_output().run(quiet=True)
            parts.append(part)
        listing = path.with_name(f"{path.stem}-parts.txt")
        listing.write_text("".join(f"file '{p.name}'\n" for p in parts))
        ffmpeg.input(str(listing), f="concat", safe=0).output(str(path), c="copy").overwrite_output().run(quiet=True)
        return path
    streams = [ffmpeg.input(f"testsrc2=size={size}:rate={rate}", f="lavfi", t=seconds)]
    opts = {"vcodec": "libx264", "pix_fmt": "yuv420p", "t": seconds}
    if audio:
        streams.append(ffmpeg.input("sine=frequency=440:sample_rate=48000", f="lavfi", t=seconds))
        opts |= {"acodec": "aac"}
    ffmpeg.output(*streams, str(path), **opts).overwrite_output().run(quiet=True)
    return path


def cut_chunks(video: Path, folder: Path, chunk_frames: int = 1000, output_height: int = 0) -> list[Path]:
    """The chunk folders (chunk.json + piece.nut) the pipeline's split makes of ``video``."""
    import shutil

    from scoring.chunk import Encoding
    from vidstyle.media import probe as media
    from vidstyle.media.cutting import Cutter, Geometry

    info, index = media.probe(video, max_gop=2 * chunk_frames)
    geometry = Geometry.of(info, output_height)

    def emit(i: int, name: str, path: Path) -> None:
        (folder / f"{i}").mkdir(parents=True, exist_ok=True)
        shutil.move(path, folder / f"{i}" / name)

    chunks = Cutter(video, info, index, video.name, chunk_frames, geometry,
                    Encoding(frame_rate=info.frame_rate, sar=geometry.sar), folder / ".cut", emit).run()
    return [folder / f"{c.index}" for c in chunks]


def upload_with_event(store, path: Path, blob: str, settings=None) -> None:
    """Upload as a media team's tool would, and post the blob-created event Event Grid would write
    to the arrivals queue (Azurite emits none)."""
    from vidstyle.pipeline.arrivals import announce
    from vidstyle.pipeline.settings import load_settings

    store.upload(path, blob)
    announce(store, settings or load_settings(), blob)
