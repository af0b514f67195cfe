"""Where everything lives in blob storage.

One container holds (prefixes configurable, see docs/concepts.md, "Storage layout"):
  incoming/<path>                               videos dropped by users (never modified)
  work/<video_id>/<run>/plan.json               the split's plan: every frame's time, the chunks
  work/<video_id>/<run>/audio.m4a               the source audio on the result's timeline
  work/<video_id>/<run>/chunks/<NNNNN>/in/      chunk.json and piece.nut: what a chunk decodes
  work/<video_id>/<run>/chunks/<NNNNN>/out/     segment.mp4 (its frames, stylized), result.json
  outputs/<path>.<style>.mp4                    the result, with .manifest.json and .preview.png
  state/videos/<video_id>.json                  ledger: which content was processed, how it ended

Each run of a video works in a folder of its own (``<run>``, a hash of the Airflow run id), so
two runs of one video never read or delete each other's files.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from vidstyle.pipeline.identity import OutputSpec, slug
from vidstyle.pipeline.models import model_stem
from vidstyle.pipeline.settings import Settings


def run_key(run_id: str) -> str:
    """A short, fixed-length, path-safe name for an Airflow run id."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WorkArea:
    """One run's folder of intermediate files."""

    root: str  # ends with "/"

    @property
    def plan(self) -> str:
        return self.root + "plan.json"

    @property
    def audio(self) -> str:
        return self.root + "audio.m4a"

    def chunk_dir(self, index: int, side: str) -> str:
        """A chunk's input ("in") or output ("out") folder: what a remote job mounts."""
        return self.root + f"chunks/{index:05d}/{side}/"

    def chunk_file(self, index: int, side: str, name: str) -> str:
        return self.chunk_dir(index, side) + name


@dataclass(frozen=True)
class Layout:
    settings: Settings

    def video_work(self, video_id: str) -> str:
        """Every run's work area of one video lives under this."""
        return f"{self.settings.work_prefix}{video_id}/"

    def work(self, video_id: str, run_id: str) -> WorkArea:
        return WorkArea(f"{self.video_work(video_id)}{run_key(run_id)}/")

    def state(self, video_id: str) -> str:
        return f"{self.settings.state_prefix}videos/{video_id}.json"

    def outputs(self, blob: str, spec: OutputSpec) -> dict[str, str]:
        """Result paths mirror the input path under the output prefix, tagged with the style and
        any non-default height or quality: different outputs of one video never share a name."""
        rel = blob[len(self.settings.input_prefix):] if blob.startswith(self.settings.input_prefix) else blob
        stem = slug(model_stem(spec.style), 32)
        base = f"{spec.output_prefix}{posixpath.splitext(rel)[0]}.{stem}{spec.variant}"
        return {"video": base + ".mp4", "manifest": base + ".manifest.json", "preview": base + ".preview.png"}

    def default_output(self, style: str | None = None) -> OutputSpec:
        """The output the watcher and the sweep produce: the installation's style and prefix."""
        return OutputSpec(style or self.settings.default_style, output_prefix=self.settings.output_prefix)

    def claim(self, output_blob: str) -> str:
        """The blob a run holds while it writes ``output_blob`` (see vidstyle.pipeline.claims)."""
        return f"{self.settings.state_prefix}claims/{hashlib.sha256(output_blob.encode()).hexdigest()[:32]}.json"
