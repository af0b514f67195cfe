"""The Videos page's view of the ledger: videos newest first, a page at a time, and one video's
outputs with their results' figures.

Listing the ledger's prefix gives every entry's name and creation time (when the pipeline first
saw that upload) without reading any entry; only the entries on the page asked for are read.
Filters by state or style read entries from the cursor on until the page is full."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.identity import OutputSpec, Video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import FAILED, QUEUED, RUNNING, SUCCEEDED, SUPERSEDED, state_prefix
from vidstyle.pipeline.settings import Settings

DAG_ID = "video_stylize"
DONE = "done"
# The page's words for the ledger's states.
STATES = {QUEUED: QUEUED, RUNNING: RUNNING, SUCCEEDED: DONE, FAILED: FAILED, SUPERSEDED: SUPERSEDED}
MODELS_PREFIX = "models/"  # where uploaded style checkpoints live in the container (README "Style models")


@dataclass(frozen=True)
class Page:
    videos: list[dict]
    next_cursor: int | None
    total: int  # entries in the ledger (unfiltered)


class Catalog:
    def __init__(self, store: BlobStore, settings: Settings) -> None:
        self.store, self.settings, self.layout = store, settings, Layout(settings)

    def _entry_names(self) -> list[str]:
        """Every ledger entry's blob, newest first by when the entry was created."""
        prefix = state_prefix(self.layout)
        blobs = [b for b in self.store.list(prefix) if b.name.endswith(".json") and "/" not in b.name[len(prefix):]]
        blobs.sort(key=lambda b: (b.creation_time or b.last_modified, b.name), reverse=True)
        return [b.name for b in blobs]

    def page(self, cursor: int = 0, limit: int = 20, state: str | None = None, style: str | None = None) -> Page:
        names = self._entry_names()
        found: list[dict] = []
        position = cursor
        while position < len(names) and len(found) < limit:
            entry = self.store.read_json_versioned(names[position])[0]
            position += 1
            if not entry or "runs" not in entry:
                continue  # an entry from before per-output records: nothing to show per output
            video = self.summary(entry)
            if matches(video, state, style):
                found.append(video)
        return Page(found, position if position < len(names) else None, len(names))

    def get(self, video_id: str) -> dict | None:
        entry = self.store.read_json_versioned(self.layout.state(video_id))[0]
        return self.summary(entry, figures=True) if entry and "runs" in entry else None

    def summary(self, entry: dict, figures: bool = False) -> dict:
        video = Video.from_dict(entry["video"])
        outputs = [self.output(video, key, out, entry["runs"], figures) for key, out in entry["outputs"].items()]
        outputs.sort(key=lambda o: o["updated_at"] or "", reverse=True)
        return {"video_id": video.video_id, "blob": video.blob, "name": posixpath.basename(video.blob),
                "version": video.version, "arrived": video.last_modified, "size": video.size, "outputs": outputs}

    def output(self, video: Video, key: str, out: dict, runs: dict, figures: bool) -> dict:
        spec = OutputSpec(**out["params"])
        run_id = out.get("run_id")
        run = runs.get(run_id, {})
        state = STATES.get(out.get("status"), out.get("status") or QUEUED)
        paths = out.get("outputs") or self.layout.outputs(video.blob, spec)
        result = {"key": key, "style": spec.style, "output_height": spec.output_height, "crf": spec.crf,
                  "state": state, "run_id": run_id, "updated_at": out.get("updated_at"),
                  "started_at": run.get("started_at"), "seconds": _seconds(run, state), "error": out.get("error"),
                  "failure": failure_sentence(out.get("error")) if state == FAILED else None, "paths": paths}
        if state == RUNNING and run_id:
            result["chunks"] = self.chunk_progress(video.video_id, run_id)
        if figures and state == DONE:
            result["manifest"] = self._manifest(paths["manifest"])
        return result

    def chunk_progress(self, video_id: str, run_id: str) -> dict:
        """Chunks done of total, from the run's work area: each split chunk has its input folder,
        each scored one its result (no Airflow database needed)."""
        root = self.layout.work(video_id, run_id).root + "chunks/"
        names = [b.name for b in self.store.list(root)]
        return {"total": sum(n.endswith("/in/chunk.json") for n in names),
                "done": sum(n.endswith("/out/result.json") for n in names)}

    def _manifest(self, blob: str) -> dict | None:
        try:
            return self.store.read_json(blob)
        except FileNotFoundError:
            return None

    def styles(self) -> list[dict]:
        """Built-in styles and the checkpoints uploaded under ``models/`` in the container."""
        from scoring.builtins import builtin_model_names

        stored = [b.name for b in self.store.list(MODELS_PREFIX) if b.name.endswith(".pth")]
        return ([{"style": s, "label": s, "kind": "built-in"} for s in builtin_model_names()]
                + [{"style": f"wasb://{self.store.container}/{n}", "label": posixpath.basename(n), "kind": "uploaded"}
                   for n in sorted(stored)])


def matches(video: dict, state: str | None, style: str | None) -> bool:
    outputs = video["outputs"]
    return ((not state or any(o["state"] == state for o in outputs))
            and (not style or any(o["style"] == style for o in outputs)))


def _seconds(run: dict, state: str) -> float | None:
    """How long the run took (ended), or has taken so far (queued, running)."""
    start, end = run.get("started_at"), run.get("updated_at")
    if not start or not end or state not in (DONE, FAILED, SUPERSEDED):
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 1)


def failure_sentence(error: str | None) -> str | None:
    """The ledger's "task (chunk): cause" as one sentence: which task, which chunk, why."""
    if not error:
        return None
    where, sep, cause = error.partition(": ")
    if not sep:
        return f"The run failed: {error.strip()}"
    task, _, chunk = where.partition(" (")
    chunk = chunk.rstrip(")")
    if task.endswith("]") and "[" in task:  # a mapped task without a label: stylize_chunk[3]
        task, _, index = task[:-1].partition("[")
        chunk = f"chunk {index}"
    place = f"task {task}" + (f", {chunk}," if chunk else "")
    return f"Failed in {place} because {cause.strip().rstrip('.')}."
