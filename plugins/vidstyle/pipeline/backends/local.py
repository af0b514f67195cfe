"""Score a chunk on the worker itself (CPU, or a local GPU when torch sees one).

The scorer runs as a child process with the same command line a remote job runs, which keeps
torch out of the worker's own memory and lets a killed task stop it.
"""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from scoring.builtins import builtin_model_names
from scoring.chunk import EXIT_BAD_INPUT, INPUT_FILES, OPTIONAL_OUTPUT_FILES, OUTPUT_FILES, RESULT_NAME
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.backends.base import ChunkTask, ComputeBackend, scorer_args
from vidstyle.pipeline.errors import ScorerRejected
from vidstyle.pipeline.models import AZUREML, PATH, WASB, ModelRef, require_stored_model
from vidstyle.pipeline.settings import Settings

log = logging.getLogger(__name__)


def fetch_model(ref: str, conn_id: str, folder: Path) -> str:
    """A ``wasb://container/path`` model is downloaded (with its sidecar); names and paths pass through."""
    model = ModelRef.parse(ref)
    if model.kind != WASB:
        return ref
    store = BlobStore(conn_id, model.container)
    path = store.download(model.blob, folder / Path(model.blob).name)
    if store.exists(model.sidecar_blob):
        store.download(model.sidecar_blob, path.with_suffix(".json"))
    return str(path)


class LocalBackend(ComputeBackend):
    name = "local"

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    @staticmethod
    def options(settings: Settings) -> dict:
        return {"batch_size": settings.local_batch_size, "precision": settings.local_precision,
                "compile": settings.local_compile}

    def preflight(self, ref: str, settings: Settings) -> None:
        model = ModelRef.parse(ref)
        if model.kind == WASB:
            require_stored_model(model, settings.wasb_conn_id)
        elif model.kind == PATH and not Path(ref).is_file():
            raise FileNotFoundError(f"model {ref!r}: no such file on the worker and not a built-in model "
                                    f"(built-ins: {', '.join(builtin_model_names()) or 'none'})")
        elif model.kind == AZUREML:
            raise ValueError(f"model {ref!r}: the local backend reads built-in models, wasb:// checkpoints and "
                             "files on the worker, not Azure ML datastores")

    def score(self, task: ChunkTask, run_id: str) -> dict:
        store = BlobStore(task.conn_id, task.container)
        with tempfile.TemporaryDirectory(prefix="vidstyle-chunk-") as tmp:
            tmp_path = Path(tmp)
            in_dir, out_dir = tmp_path / "in", tmp_path / "out"
            for name in INPUT_FILES:
                store.download(task.input_dir + name, in_dir / name)
            model = fetch_model(task.model, task.conn_id, tmp_path / "model")
            result_path = out_dir / RESULT_NAME
            args = scorer_args(task, model, str(in_dir), str(out_dir), str(result_path))
            self._run([sys.executable, *args], task, cwd=tmp_path)
            result = json.loads(result_path.read_text())
            if result["frames"] != task.frames:
                raise RuntimeError(f"scorer returned {result['frames']} frames, expected {task.frames}")
            # The result last: a chunk whose result.json is in place has all its output.
            for name in (*[n for n in OUTPUT_FILES if n != RESULT_NAME], *OPTIONAL_OUTPUT_FILES, RESULT_NAME):
                if (out_dir / name).is_file():
                    store.upload(out_dir / name, task.output_dir + name)
        return result

    def _run(self, cmd: list[str], task: ChunkTask, cwd: Path) -> None:
        log.info("%s: running %s", task.chunk_label, " ".join(cmd))
        tail: collections.deque[str] = collections.deque(maxlen=20)
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
        try:
            for line in self._proc.stdout:
                tail.append(line.rstrip())
                log.info("%s | %s", task.chunk_label, line.rstrip())
            rc = self._proc.wait()
        finally:
            # A timeout or kill of the task must not leave the scorer running on its own.
            self.cancel(task)
        if rc == EXIT_BAD_INPUT:
            raise ScorerRejected(f"scorer refused its input: {' / '.join(tail)[-800:]}")
        if rc != 0:
            raise RuntimeError(f"scorer exited with code {rc}: {' / '.join(tail)[-800:]}")

    def cancel(self, task: ChunkTask) -> None:
        if self._proc and self._proc.poll() is None:
            log.warning("%s: stopping the scorer (pid %s)", task.chunk_label, self._proc.pid)
            self._proc.terminate()
