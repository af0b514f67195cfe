"""VideoRun: one processing run of one video, as every step sees it."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.claims import OutputClaims
from vidstyle.pipeline.identity import OutputSpec, Video, current_video
from vidstyle.pipeline.layout import Layout, WorkArea
from vidstyle.pipeline.ledger import FAILED, SUPERSEDED, Ledger
from vidstyle.pipeline.params import JobParams
from vidstyle.pipeline.settings import Settings

log = logging.getLogger(__name__)


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
            current = current_video(self.store, self.params.video_blob)
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

    def release_output(self) -> None:
        """Give back the claim on the result (vidstyle.pipeline.claims), if this run holds it."""
        if OutputClaims(self.store, self.layout).release(self.outputs["video"], self.run_id):
            log.info("gave back the claim on %s", self.outputs["video"])

    def record_failure(self, where: str, error: str) -> None:
        """The ledger keeps the failure (unless the run already ended as superseded); the claim on
        the result goes back; the work blobs stay for diagnosis."""
        entry = self.ledger.get(self.video.video_id) or {}
        if entry.get("runs", {}).get(self.run_id, {}).get("status") != SUPERSEDED:
            self.record(FAILED, error=f"{where}: {error}"[:2000])
        self.release_output()
