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

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from scoring import flicker
from scoring.chunk import PREVIEW_NAME, RESULT_NAME, SEGMENT_NAME, Encoding
from vidstyle import audio, joining, media
from vidstyle.backends import ChunkTask, backend_class, get_backend
from vidstyle.backends.base import JOB_FILE
from vidstyle.blobs import BlobStore
from vidstyle.claims import Holder, OutputClaims
from vidstyle.config import Settings
from vidstyle.cutting import Cutter, Geometry, output_time_base
from vidstyle.layout import Chunk, Layout, OutputSpec, Video, WorkArea
from vidstyle.ledger import FAILED, RUNNING, SUCCEEDED, SUPERSEDED, Ledger

log = logging.getLogger(__name__)


class BadInput(ValueError):
    """The video itself is unusable: retrying cannot help."""


@dataclass(frozen=True)
class JobParams:
    video_blob: str
    style: str
    chunk_frames: int | None  # None: the backend's default
    output_height: int
    crf: int
    output_prefix: str
    backend: str
    keep_work: bool
    video_version: str | None = None  # the content version the run was created for; None: the current one


class VideoRun:
    def __init__(self, settings: Settings, params: JobParams, run_id: str, video: Video | None = None) -> None:
        self.settings, self.params, self.run_id = settings, params, run_id
        self.store = BlobStore(settings.wasb_conn_id, settings.container)
        self.layout = Layout(settings)
        self.ledger = Ledger(self.store, self.layout)
        self._video = video

    @property
    def video(self) -> Video:
        """The version this run processes: the one it was created for, else what the blob holds.
        When the blob holds another version now, this is the pinned one, without the ETag that
        would let it be downloaded: ``start`` refuses it, and failures are recorded against it."""
        if self._video is None:
            current = self.store.video(self.params.video_blob)
            pinned = self.params.video_version
            self._video = current if pinned in (None, current.version) else Video(
                current.container, current.blob, pinned)
        return self._video

    @property
    def output_spec(self) -> OutputSpec:
        p = self.params
        return OutputSpec(p.style, p.output_height, p.crf, p.output_prefix)

    @property
    def is_default_output(self) -> bool:
        return self.output_spec == self.layout.default_output()

    @property
    def vid(self) -> str:
        return self.video.video_id

    @property
    def area(self) -> WorkArea:
        return self.layout.work(self.vid, self.run_id)

    @property
    def outputs(self) -> dict[str, str]:
        return self.layout.outputs(self.video.blob, self.output_spec)

    def record(self, status: str, **fields) -> dict:
        return self.ledger.record(self.video, self.run_id, status, self.output_spec, self.is_default_output, **fields)

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"vidstyle-{self.vid}-") as tmp:
            yield Path(tmp)

    def source(self, folder: Path) -> Path:
        suffix = Path(self.video.blob).suffix or ".video"
        return self.store.download(self.video.blob, folder / f"source{suffix}", etag=self.video.etag)


def check_params(params: JobParams, settings: Settings) -> None:
    """The rules the trigger form states in words, checked here with the same words (a JSON
    schema pattern would show users a raw regular expression)."""
    blob, prefix = params.video_blob, params.output_prefix
    if blob.startswith("/") or "\\" in blob or blob != blob.strip() or not blob.lower().endswith(settings.suffixes):
        raise BadInput(f"video_blob {blob!r}: give the path of a video file inside container {settings.container!r}, "
                       f"without a leading '/', ending in one of {settings.video_suffixes}")
    if prefix and (prefix.startswith("/") or not prefix.endswith("/") or "\\" in prefix):
        raise BadInput(f"output_prefix {prefix!r}: give a folder inside container {settings.container!r}, ending "
                       "with '/' and without a leading '/' (or leave it empty for the container's top)")


def start(run: VideoRun) -> dict:
    """Pin the exact content version this run was created for and record it in the ledger."""
    check_params(run.params, run.settings)
    try:
        video = run.video
        if not video.etag:  # the blob holds another version now (see VideoRun.video)
            current = run.store.video(video.blob)
            run.record(SUPERSEDED, error=f"replaced by a newer upload (version {current.version}, "
                                         f"{current.last_modified}) before this run started")
            raise BadInput(f"{video.blob} now holds a newer upload (version {current.version}, uploaded "
                           f"{current.last_modified}); this run was for version {video.version}, which is gone. "
                           "The newer version is a video of its own with its own run.")
        get_backend(run.params.backend).preflight(run.params.style, run.settings.wasb_conn_id)
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


def release_output(run: VideoRun) -> None:
    if OutputClaims(run.store, run.layout).release(run.outputs["video"], run.run_id):
        log.info("gave back the claim on %s", run.outputs["video"])


@dataclass
class Plan:
    """What split decided, as plan.json keeps it for the later steps."""

    source: media.SourceInfo
    geometry: Geometry
    origin: Fraction  # the source time that becomes 0 in the result (first frame, or audio if earlier)
    chunks: list[Chunk]

    def to_json(self) -> dict:
        return {"source": self.source.to_json(), "geometry": asdict(self.geometry), "origin": str(self.origin),
                "chunks": [c.to_dict() for c in self.chunks]}

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        g = data["geometry"]
        return cls(media.SourceInfo.from_json(data["source"]),
                   Geometry(tuple(g["model_size"]), tuple(g["size"]), g["sar"]), Fraction(data["origin"]),
                   [Chunk.from_dict(c) for c in data["chunks"]])

    @property
    def video_offset(self) -> Fraction:
        """Where the first frame sits in the result, in seconds (0 unless audio starts first), on the
        result's clock (a whole number of its ticks)."""
        tb = output_time_base(self.source)
        return round((self.source.start - self.origin) / tb) * tb


def split(run: VideoRun) -> dict:
    """Read the source's packets, plan its chunks, cut and upload every chunk's folder."""
    params, settings, area = run.params, run.settings, run.area
    with run.scratch() as tmp:
        source = run.source(tmp)
        chunk_frames = params.chunk_frames or backend_class(params.backend).chunk_frames(settings)
        try:
            info, index = media.probe(source, max_gop=2 * chunk_frames)
        except media.MediaError as exc:
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
        except media.MediaError as exc:
            raise BadInput(f"{run.video.blob}: {exc}") from exc
    origin = min(info.start, Fraction(info.audio.start)) if info.audio else info.start
    plan = Plan(info, geometry, origin, chunks)
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
        except media.MediaError as exc:
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


# What the manifest keeps of each chunk's result.
CHUNK_FIGURES = ("chunk", "label", "start", "end", "frames", "seconds", "total_seconds", "fps", "device", "encoder",
                 "bytes_in", "bytes_out", "model", "azureml", "flicker")


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
                     "chunks": [{k: r[k] for k in CHUNK_FIGURES if k in r} for r in results]}


def publish(run: VideoRun, split_info: dict, audio_info: dict | None, stitched: dict) -> dict:
    outputs, chunks = run.outputs, stitched["chunks"]
    scored = sum(c["frames"] for c in chunks)
    busy = sum(c["seconds"] for c in chunks)
    with run.scratch() as tmp:
        preview = run.area.chunk_file(stitched["preview_chunk"], "out", PREVIEW_NAME)
        run.store.upload(run.store.download(preview, tmp / PREVIEW_NAME), outputs["preview"])
    storage = {"split": split_info["storage"], "audio": (audio_info or {}).get("storage"),
               "chunks_in": sum(c["bytes_in"] or 0 for c in chunks),
               "chunks_out": sum(c["bytes_out"] or 0 for c in chunks),
               "stitch": stitched["storage"]}
    moved = sum(s["read"] + s["written"] for s in (storage["split"], storage["audio"], storage["stitch"]) if s)
    moved += storage["chunks_in"] + storage["chunks_out"]
    storage |= {"total": moved, "source_bytes": run.video.size, "result_bytes": stitched["bytes"],
                "moved_per_source_and_result": round(moved / max(1, run.video.size + stitched["bytes"]), 2)}
    manifest = {
        "video": run.video.to_dict(), "run_id": run.run_id, "params": asdict(run.params),
        "source": split_info["source"],
        "output": {k: v for k, v in stitched.items() if k not in ("chunks", "storage", "preview_chunk")},
        "frames": stitched["frames"], "fps": split_info["source"]["fps"], "frame_rate": stitched["frame_rate"],
        "duration": stitched["duration"], "model": chunks[0].get("model") if chunks else run.params.style,
        "chunks": chunks,
        "scoring": {"frames": scored, "chunk_seconds": round(busy, 3),
                    "frames_per_second": round(scored / busy, 3) if busy else None},
        "storage": storage, "outputs": outputs,
        "flicker": flicker.combine([c.get("flicker") for c in chunks]),
    }
    if manifest["flicker"]:
        f = manifest["flicker"]
        log.info("flicker: warping error %.6f, the source's own %.6f (ratio %s) over %d frame pairs",
                 f["warping_error"], f["source_warping_error"], f["ratio"], f["pairs"])
    if remote := job_totals([c["azureml"] for c in chunks if c.get("azureml")]):
        manifest["azureml"] = remote
        log_cost(remote)
    run.store.write_json(outputs["manifest"], manifest)
    run.record(SUCCEEDED, outputs=outputs, error=None)
    release_output(run)
    log.info("manifest wasb://%s/%s: %d frames, scoring %.2f frames/s over %d chunks; storage moved %.1f MiB "
             "(%.1fx source + result)", run.settings.container, outputs["manifest"], scored,
             manifest["scoring"]["frames_per_second"] or 0, len(chunks), moved / 2**20,
             storage["moved_per_source_and_result"])
    return manifest


def log_cost(t: dict) -> None:
    cost = f"{t['cost']:.4f} (azureml_prices)" if t["cost"] is not None else "unknown: set azureml_prices"
    log.info("Azure ML: %d jobs (%d of them retries) on %s: %.0f GPU-seconds, %.0f s on nodes (%.0f%% of it "
             "start-up), %.0f s queued; estimated cost: %s", t["jobs"], t["retried_jobs"], t["vm_size"],
             t["gpu_seconds"] or 0, t["node_seconds"] or 0, 100 * (t["startup_share"] or 0),
             t["queued_seconds"] or 0, cost)


def job_totals(jobs: list[dict]) -> dict | None:
    """A video's Azure ML jobs summed: node time is what is billed, per GPU and at the set price,
    the chunks' failed or cancelled earlier jobs included. ``None`` where a figure is unknown."""
    if not jobs:
        return None
    retried = [e for j in jobs for e in j.get("earlier") or []]

    def total(key: str, of: list[dict], digits: int = 3) -> float | None:
        values = [j.get(key) for j in of]
        return None if any(v is None for v in values) else round(sum(values), digits)

    node, startup = total("node_seconds", jobs + retried), total("startup_seconds", jobs)
    return {"jobs": len(jobs) + len(retried), "retried_jobs": len(retried), "vm_size": jobs[0]["vm_size"],
            "gpu_seconds": total("gpu_seconds", jobs + retried), "node_seconds": node,
            "queued_seconds": total("queued_seconds", jobs + retried), "startup_seconds": startup,
            "startup_share": round(startup / node, 3) if node and startup is not None else None,
            "cost": total("cost", jobs + retried, 6)}


def cleanup(run: VideoRun) -> int:
    if run.params.keep_work:
        log.info("keep_work is set: leaving %s", run.area.root)
        return 0
    removed = run.store.delete_prefix(run.area.root)
    log.info("removed %d work blobs under %s", removed, run.area.root)
    return removed


def record_failure(run: VideoRun, where: str, error: str) -> None:
    """The ledger keeps the failure (unless the run already ended as superseded); the claim on
    the result goes back; the work blobs stay for diagnosis."""
    entry = run.ledger.get(run.video.video_id) or {}
    if entry.get("runs", {}).get(run.run_id, {}).get("status") != SUPERSEDED:
        run.record(FAILED, error=f"{where}: {error}"[:2000])
    release_output(run)
