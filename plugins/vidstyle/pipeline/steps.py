"""The steps of one video's processing run, as plain functions of a VideoRun.

The DAG file wires these into tasks; keeping them here keeps the DAG readable and lets each
step be called (and tested) on its own. Only small summaries travel through XCom; pieces,
segments, timestamps and audio travel through the run's work area in blob storage.

  start    pin the exact content version; check the model and backend before any work
  split    read the source's packets, plan chunks on its keyframes, cut each chunk's piece
  extract_audio  the source audio as an MP4 track on the result's timeline
  (chunks) each chunk's piece decoded, stylized and encoded into a segment, in parallel
  stitch   segments joined by stream copy with the audio, the result checked against the source
  publish  manifest and preview beside the result; the ledger marks the video done
  cleanup  the run's work area removed
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from scoring.chunk import PREVIEW_NAME, RESULT_NAME, SEGMENT_NAME, Encoding
from vidstyle.media import audio, joining, probe
from vidstyle.media.chunks import Chunk
from vidstyle.media.cutting import Cutter, Geometry
from vidstyle.pipeline import manifest as manifests
from vidstyle.pipeline.backends import ChunkTask, backend_class, get_backend
from vidstyle.pipeline.backends.base import JOB_FILE
from vidstyle.pipeline.claims import Holder, OutputClaims
from vidstyle.pipeline.errors import BadInput
from vidstyle.pipeline.identity import current_video
from vidstyle.pipeline.ledger import RUNNING, SUCCEEDED, SUPERSEDED
from vidstyle.pipeline.params import check_params
from vidstyle.pipeline.plan import Plan
from vidstyle.pipeline.run import VideoRun

log = logging.getLogger(__name__)

def start(run: VideoRun) -> dict:
    """Pin the exact content version this run was created for and record it in the ledger."""
    check_params(run.params, run.settings)
    try:
        video = run.video
        if not video.etag:  # the blob holds another version now (see VideoRun.video)
            current = current_video(run.store, video.blob)
            run.record(SUPERSEDED, error=f"replaced by a newer upload (version {current.version}, "
                                         f"{current.last_modified}) before this run started")
            raise BadInput(f"{video.blob} now holds a newer upload (version {current.version}, uploaded "
                           f"{current.last_modified}); this run was for version {video.version}, which is gone. "
                           "The newer version is a video of its own with its own run.")
        get_backend(run.params.backend).preflight(run.params.style, run.settings)
    except (FileNotFoundError, ValueError) as exc:
        if isinstance(exc, BadInput):
            raise
        raise BadInput(str(exc)) from exc
    run.record(RUNNING, error=None)
    log.info("processing %s (id %s, version %s, %d bytes) into %s", video.blob, video.video_id, video.version,
             video.size, run.outputs["video"])
    return video.to_dict()


def claim_output(run: VideoRun, is_running: Callable[[str], bool]) -> Holder | None:
    """Claim the result's path for this run; the run holding it when another one does."""
    holder = OutputClaims(run.store, run.layout).acquire(run.outputs["video"], run.run_id, run.video.blob,
                                                         is_running)
    if holder:
        log.info("%s is being written by run %s (for %s, since %s); waiting for it to end", run.outputs["video"],
                 holder.run_id, holder.video, holder.since)
    else:
        log.info("claimed %s for this run", run.outputs["video"])
    return holder


def hold_claim(run: VideoRun, is_running: Callable[[str], bool]) -> None:
    """Before writing the result: this run holds its claim. A run that failed gave it back; cleared
    and resumed past claim_output, it takes it again, or stops if another run now writes there."""
    if holder := OutputClaims(run.store, run.layout).acquire(run.outputs["video"], run.run_id, run.video.blob,
                                                             is_running):
        raise RuntimeError(f"run {holder.run_id} (for {holder.video}, since {holder.since}) now writes "
                           f"{run.outputs['video']}; this run gave its claim back when it failed: clear it from "
                           "claim_output to take its turn")


def split(run: VideoRun) -> dict:
    """Read the source's packets, plan its chunks, cut and upload every chunk's folder."""
    params, settings, area = run.params, run.settings, run.area
    with run.scratch() as tmp:
        source = run.source(tmp)
        chunk_frames = params.chunk_frames or backend_class(params.backend).chunk_frames(settings)
        try:
            info, index = probe.probe(source, max_gop=2 * chunk_frames)
        except probe.MediaError as exc:
            raise BadInput(f"{run.video.blob}: {exc}") from exc
        if info.frames > settings.max_frames:
            raise BadInput(f"{run.video.blob}: {info.frames} frames exceeds the limit of {settings.max_frames}")
        geometry = Geometry.of(info, params.output_height)
        encoding = Encoding(crf=params.crf, preset=settings.x264_preset, encoder=settings.encoder,
                            frame_rate=info.frame_rate, sar=geometry.sar)

        def emit(index: int, name: str, path: Path) -> None:
            run.store.upload(path, area.chunk_file(index, "in", name))
            path.unlink()

        cutter = Cutter(source, info, index, run.video.blob, chunk_frames, geometry, encoding, tmp / "chunks", emit,
                        settings.mezzanine_crf)
        try:
            chunks = cutter.run()
        except probe.MediaError as exc:
            raise BadInput(f"{run.video.blob}: {exc}") from exc
    plan = Plan.of(info, geometry, chunks)
    run.store.write_json(area.plan, plan.to_json(), indent=None)
    width, height = info.upright_size
    log.info("%s: %d frames at %s fps (%s), %.3f s, %dx%d%s -> %dx%d, audio: %s; %s mode (%s): %d chunks "
             "of about %d frames", run.video.blob, info.frames, info.frame_rate,
             "constant" if info.constant_rate else "variable", float(info.duration), width, height,
             f" rotated {info.rotation}" if info.rotation else "", *geometry.size,
             info.audio.codec if info.audio else "none", info.mode, info.mode_reason, len(chunks), chunk_frames)
    return {"source": info.summary() | {"output_size": list(geometry.size)}, "chunks": chunk_tasks(run, chunks),
            "storage": run.store.traffic()}


def load_plan(run: VideoRun) -> Plan:
    return Plan.from_json(run.store.read_json(run.area.plan))


def chunk_tasks(run: VideoRun, chunks: list[Chunk]) -> list[dict]:
    """One work item per chunk for the mapped scoring task: the backend's ChunkTask fields."""
    options = backend_class(run.params.backend).options(run.settings)
    return [ChunkTask(conn_id=run.settings.wasb_conn_id, container=run.settings.container,
                      video_blob=run.video.blob, video_id=run.vid, chunk_index=c.index, chunk_label=c.label,
                      frames=c.frames, input_dir=run.area.chunk_dir(c.index, "in"),
                      output_dir=run.area.chunk_dir(c.index, "out"), model=run.params.style,
                      flicker_every=run.settings.flicker_every, **options).to_dict()
            | {"backend": run.params.backend} for c in chunks]


def extract_audio(run: VideoRun) -> dict:
    plan = load_plan(run)
    with run.scratch() as tmp:
        out = tmp / "audio.m4a"
        try:
            how = audio.extract_audio(run.source(tmp), out, plan.origin)
        except probe.MediaError as exc:
            raise BadInput(f"{run.video.blob}: {exc}") from exc
        run.store.upload(out, run.area.audio)
    log.info("audio (%s) %s on the result's timeline", plan.source.audio.codec,
             "copied" if how == "copy" else "re-encoded to AAC (MP4 cannot carry it)")
    return {"how": how, "storage": run.store.traffic()}


def chunk_results(run: VideoRun, plan: Plan) -> list[dict]:
    """Every chunk's result.json, checked against the plan: nothing missing, nothing short."""
    results, problems = [], []
    for chunk in plan.chunks:
        try:
            result = run.store.read_json(run.area.chunk_file(chunk.index, "out", RESULT_NAME))
        except FileNotFoundError:
            problems.append(f"{chunk.label}: no result")
            continue
        if result.get("frames") != chunk.frames:
            problems.append(f"{chunk.label}: {result.get('frames')} frames back, {chunk.frames} sent")
        job = run.store.read_json_versioned(run.area.chunk_file(chunk.index, "out", JOB_FILE))[0]  # remote only
        results.append(result | {"chunk": chunk.index, "label": chunk.label, "start": chunk.start, "end": chunk.end}
                       | ({"azureml": job} if job else {}))
    if problems:
        raise RuntimeError(f"video {run.video.blob}: " + "; ".join(problems))
    return results


def stitch(run: VideoRun, is_running: Callable[[str], bool]) -> dict:
    """Join the segments by stream copy with the audio; prove the result against the source; upload it."""
    hold_claim(run, is_running)
    plan = load_plan(run)
    info = plan.source
    results = chunk_results(run, plan)
    segments = joining.segments(plan.chunks, info.pts, info.durations[-1], info.tb, plan.video_offset)
    with run.scratch() as tmp:
        def fetch(i: int) -> Path:
            return run.store.download(run.area.chunk_file(i, "out", SEGMENT_NAME), tmp / f"segment-{i:05d}.mp4")

        track = run.store.download(run.area.audio, tmp / "audio.m4a") if info.audio else None
        final = tmp / "result.mp4"
        joining.join(segments, fetch, track, final)
        report = joining.check_result(
            [p * info.tb for p in info.pts], (info.pts[-1] + info.durations[-1]) * info.tb, plan.geometry.size,
            (Fraction(info.audio.start), Fraction(info.audio.end)) if info.audio else None, final)
        run.store.upload(final, run.outputs["video"])
        size = final.stat().st_size
    log.info("stitched %d segments by stream copy: %d frames, %.3f s, timestamps equal to the source's%s; wrote "
             "wasb://%s/%s", len(segments), report["frames"], report["duration"],
             f", audio within {1000 * float(joining.AUDIO_TOLERANCE):.0f} ms" if report["audio"] else "",
             run.settings.container, run.outputs["video"])
    middle = info.frames // 2  # the chunk that holds it wrote the before/after preview
    return report | {"bytes": size, "blob": run.outputs["video"], "storage": run.store.traffic(),
                     "preview_chunk": next(c.index for c in plan.chunks if c.start <= middle < c.end),
                     "chunks": [{k: r[k] for k in manifests.CHUNK_FIGURES if k in r} for r in results]}


def publish(run: VideoRun, split_info: dict, audio_info: dict | None, stitched: dict) -> dict:
    """The manifest and the before/after preview beside the result; the ledger marks it done."""
    outputs = run.outputs
    with run.scratch() as tmp:
        preview = run.area.chunk_file(stitched["preview_chunk"], "out", PREVIEW_NAME)
        run.store.upload(run.store.download(preview, tmp / PREVIEW_NAME), outputs["preview"])
    manifest = manifests.build(run, split_info, audio_info, stitched)
    manifests.log_figures(manifest)
    run.store.write_json(outputs["manifest"], manifest)
    run.record(SUCCEEDED, outputs=outputs, error=None)
    run.release_output()
    return manifest


def cleanup(run: VideoRun) -> int:
    if run.params.keep_work:
        log.info("keep_work is set: leaving %s", run.area.root)
        return 0
    removed = run.store.delete_prefix(run.area.root)
    log.info("removed %d work blobs under %s", removed, run.area.root)
    return removed
