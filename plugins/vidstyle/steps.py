"""The steps of one video's processing run, as plain functions of a VideoRun.

The DAG file wires these into tasks; keeping them here keeps the DAG readable and lets each
step be called (and tested) on its own. Only small summaries travel through XCom; frames,
timestamps and audio travel through the work area in blob storage.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from vidstyle import frametar, media
from vidstyle.backends import BACKENDS, ChunkTask, get_backend
from vidstyle.blobs import BlobStore
from vidstyle.config import Settings
from vidstyle.layout import Chunk, Layout, Video, frame_name, plan_chunks
from vidstyle.ledger import FAILED, RUNNING, SUCCEEDED, Ledger

log = logging.getLogger(__name__)


class BadInput(ValueError):
    """The video itself is unusable: retrying cannot help."""


@dataclass(frozen=True)
class JobParams:
    video_blob: str
    style: str
    chunk_frames: int
    output_height: int
    crf: int
    output_prefix: str
    backend: str
    keep_work: bool


class VideoRun:
    def __init__(self, settings: Settings, params: JobParams, video: Video | None = None) -> None:
        self.settings, self.params = settings, params
        self.store = BlobStore(settings.wasb_conn_id, settings.container)
        self.layout = Layout(settings)
        self.ledger = Ledger(self.store, self.layout)
        self._video = video

    @property
    def video(self) -> Video:
        if self._video is None:
            self._video = self.store.video(self.params.video_blob)
        return self._video

    @property
    def vid(self) -> str:
        return self.video.video_id

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"vidstyle-{self.vid}-") as tmp:
            yield Path(tmp)

    def source(self, folder: Path) -> Path:
        suffix = Path(self.video.blob).suffix or ".video"
        return self.store.download(self.video.blob, folder / f"source{suffix}", etag=self.video.etag)


def start(run: VideoRun, run_id: str) -> dict:
    """Pin the exact content version this run processes and record it in the ledger."""
    if not run.params.video_blob.lower().endswith(run.settings.suffixes):
        raise BadInput(f"{run.params.video_blob}: not a video file name (expected {run.settings.video_suffixes})")
    try:
        video = run.video
        get_backend(run.params.backend).preflight(run.params.style, run.settings.wasb_conn_id)
    except (FileNotFoundError, ValueError) as exc:
        raise BadInput(str(exc)) from exc
    run.ledger.mark(video, RUNNING, run_id=run_id, style=run.params.style, error=None)
    log.info("processing %s (id %s, version %s, %d bytes)", video.blob, video.video_id, video.version, video.size)
    return video.to_dict()


def probe(run: VideoRun) -> dict:
    with run.scratch() as tmp:
        try:
            info = media.probe(run.source(tmp))
        except media.MediaError as exc:
            raise BadInput(f"{run.video.blob}: {exc}") from exc
    if info.frames > run.settings.max_frames:
        raise BadInput(f"{run.video.blob}: {info.frames} frames exceeds the limit of {run.settings.max_frames}")
    chunks = plan_chunks(info.frames, run.params.chunk_frames)
    run.store.write_json(run.layout.plan(run.vid), {"video": info.to_json(), "chunks": [c.to_dict() for c in chunks]})
    log.info("%s: %d frames at %s fps (%s), %.3f s, %dx%d, audio: %s; %d chunks of up to %d frames",
             run.video.blob, info.frames, info.frame_rate, "constant" if info.constant_rate else "variable",
             info.duration, info.width, info.height, info.audio_codec or "none", len(chunks), run.params.chunk_frames)
    return {"frames": info.frames, "frame_rate": info.frame_rate, "fps": round(info.fps, 4),
            "constant_rate": info.constant_rate, "duration": info.duration, "width": info.width,
            "height": info.height, "has_audio": info.has_audio, "audio_codec": info.audio_codec, "chunks": len(chunks)}


def load_plan(run: VideoRun) -> tuple[media.VideoInfo, list[Chunk]]:
    plan = run.store.read_json(run.layout.plan(run.vid))
    return media.VideoInfo.from_json(plan["video"]), [Chunk.from_dict(c) for c in plan["chunks"]]


def extract_audio(run: VideoRun) -> str:
    with run.scratch() as tmp:
        out = tmp / "audio.mka"
        media.extract_audio(run.source(tmp), out)
        run.store.upload(out, run.layout.audio(run.vid))
    return run.layout.audio(run.vid)


def split(run: VideoRun) -> list[dict]:
    """Decode every frame once, pack each chunk into one tar, upload; returns the chunk list."""
    info, chunks = load_plan(run)
    with run.scratch() as tmp:
        frames_dir = tmp / "frames"
        names = media.split_frames(run.source(tmp), frames_dir, info.frames, run.params.output_height)
        for chunk in chunks:
            tar = tmp / f"chunk-{chunk.index:05d}.tar"
            frametar.pack(frames_dir, names[chunk.start:chunk.end], tar)
            run.store.upload(tar, run.layout.chunk_frames(run.vid, chunk.index, "in"))
            tar.unlink()
            log.info("uploaded %s (%d frames)", chunk.label, chunk.frames)
    return [c.to_dict() for c in chunks]


def chunk_tasks(run: VideoRun, chunks: list[dict]) -> list[dict]:
    """One work item per chunk for the mapped scoring task: the backend's ChunkTask fields."""
    items, options = [], BACKENDS[run.params.backend].options(run.settings)
    for c in map(Chunk.from_dict, chunks):
        task = ChunkTask(
            conn_id=run.settings.wasb_conn_id, container=run.settings.container, video_blob=run.video.blob,
            video_id=run.vid, chunk_index=c.index, chunk_label=c.label, frames=c.frames,
            input_dir=run.layout.chunk_dir(run.vid, c.index, "in"),
            output_dir=run.layout.chunk_dir(run.vid, c.index, "out"), model=run.params.style,
            png_level=run.settings.styled_png_level, **options,
        )
        items.append(task.to_dict() | {"backend": run.params.backend})
    return items


def chunk_results(run: VideoRun) -> list[dict]:
    """Every chunk's result.json, checked against the plan: nothing missing, nothing short."""
    info, chunks = load_plan(run)
    results, problems = [], []
    for chunk in chunks:
        try:
            result = run.store.read_json(run.layout.chunk_result(run.vid, chunk.index))
        except FileNotFoundError:
            problems.append(f"{chunk.label}: no result")
            continue
        if result.get("frames") != chunk.frames:
            problems.append(f"{chunk.label}: {result.get('frames')} frames back, {chunk.frames} sent")
        results.append(result | {"chunk": chunk.index, "label": chunk.label, "start": chunk.start, "end": chunk.end})
    if problems:
        raise RuntimeError(f"video {run.video.blob}: " + "; ".join(problems))
    # The plan's chunks cover every frame once, so per-chunk counts account for the whole video.
    log.info("all %d chunks back, %d frames", len(results), info.frames)
    return results


def stitch(run: VideoRun) -> dict:
    info, chunks = load_plan(run)
    with run.scratch() as tmp:
        styled = tmp / "styled"
        names: list[str] = []
        for chunk in chunks:
            tar = run.store.download(run.layout.chunk_frames(run.vid, chunk.index, "out"), tmp / "chunk.tar")
            names += frametar.unpack(tar, styled)
        expected = [frame_name(i) for i in range(info.frames)]
        if names != expected:
            missing = sorted(set(expected) - set(names))[:5]
            raise RuntimeError(f"video {run.video.blob}: styled frames out of order or missing (missing: {missing})")
        started = time.perf_counter()
        media.stitch(styled, names, info, tmp / "stitched.mp4", crf=run.params.crf)
        encode_s = time.perf_counter() - started
        run.store.upload(tmp / "stitched.mp4", run.layout.stitched(run.vid))
        _make_preview(run, chunks, styled, tmp)
    log.info("stitched %d frames in %.1f s", len(names), encode_s)
    return {"frames": len(names), "encode_seconds": round(encode_s, 3)}


def _make_preview(run: VideoRun, chunks: list[Chunk], styled: Path, tmp: Path) -> None:
    middle = chunks[len(chunks) // 2]
    frame = frame_name((middle.start + middle.end - 1) // 2)
    source = tmp / "source-frames"
    run.store.download(run.layout.chunk_frames(run.vid, middle.index, "in"), tmp / "in.tar")
    frametar.unpack(tmp / "in.tar", source)
    media.preview(source / frame, styled / frame, tmp / "preview.png")
    run.store.upload(tmp / "preview.png", run.layout.work(run.vid) + "preview.png")


def merge_audio(run: VideoRun, has_audio: bool) -> dict:
    """Attach the source audio, check the result against the source, upload it."""
    info, _ = load_plan(run)
    outputs = run.layout.outputs(run.video.blob, run.params.style, run.params.output_prefix)
    with run.scratch() as tmp:
        video = run.store.download(run.layout.stitched(run.vid), tmp / "stitched.mp4")
        final = tmp / "final.mp4"
        if has_audio:
            audio = run.store.download(run.layout.audio(run.vid), tmp / "audio.mka")
            media.merge_audio(video, audio, final, info.audio_codec, info.audio_offset)
        else:
            shutil.copyfile(video, final)
        result = media.summary(final)
        check_result(run.video.blob, info, result)
        run.store.upload(final, outputs["video"])
    log.info("wrote wasb://%s/%s", run.settings.container, outputs["video"])
    return result | {"blob": outputs["video"]}


def check_result(blob: str, source: media.VideoInfo, result: dict) -> None:
    """Every frame in is a frame out; same duration within one frame; audio iff the source had it."""
    problems = []
    if result["frames"] != source.frames:
        problems.append(f"{result['frames']} frames out, {source.frames} in")
    if abs(result["duration"] - source.duration) > 1 / source.fps + 1e-3:
        problems.append(f"duration {result['duration']:.3f} s, source {source.duration:.3f} s")
    if result["has_audio"] != source.has_audio:
        problems.append("audio missing" if source.has_audio else "audio appeared in a silent video")
    if problems:
        raise RuntimeError(f"video {blob}: output check failed: " + "; ".join(problems))


def publish(run: VideoRun, run_id: str, probe_summary: dict, final: dict, results: list[dict],
            stitch_info: dict) -> dict:
    outputs = run.layout.outputs(run.video.blob, run.params.style, run.params.output_prefix)
    scored = sum(r["frames"] for r in results)
    busy = sum(r["seconds"] for r in results)
    manifest = {
        "video": run.video.to_dict(), "run_id": run_id, "params": asdict(run.params),
        "source": probe_summary, "output": final,
        "frames": final["frames"], "fps": probe_summary["fps"], "frame_rate": final["frame_rate"],
        "duration": final["duration"], "model": results[0].get("model") if results else run.params.style,
        "chunks": [{k: r.get(k) for k in ("chunk", "label", "start", "end", "frames", "seconds", "fps", "device")}
                   for r in results],
        "scoring": {"frames": scored, "chunk_seconds": round(busy, 3),
                    "frames_per_second": round(scored / busy, 3) if busy else None},
        "encode_seconds": stitch_info.get("encode_seconds"),
        "outputs": outputs,
    }
    with run.scratch() as tmp:
        preview = run.store.download(run.layout.work(run.vid) + "preview.png", tmp / "preview.png")
        run.store.upload(preview, outputs["preview"])
    run.store.write_json(outputs["manifest"], manifest)
    run.ledger.mark(run.video, SUCCEEDED, run_id=run_id, outputs=outputs, error=None)
    log.info("manifest wasb://%s/%s: %d frames, scoring %.2f frames/s over %d chunks", run.settings.container,
             outputs["manifest"], scored, manifest["scoring"]["frames_per_second"] or 0, len(results))
    return manifest


def cleanup(run: VideoRun) -> int:
    if run.params.keep_work:
        log.info("keep_work is set: leaving %s", run.layout.work(run.vid))
        return 0
    removed = run.store.delete_prefix(run.layout.work(run.vid))
    log.info("removed %d work blobs under %s", removed, run.layout.work(run.vid))
    return removed


def record_failure(run: VideoRun, run_id: str, where: str, error: str) -> None:
    """The ledger keeps the failure; the work blobs stay for diagnosis."""
    run.ledger.mark(run.video, FAILED, run_id=run_id, error=f"{where}: {error}"[:2000])
