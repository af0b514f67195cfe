"""Score a chunk on the worker itself (CPU, or a local GPU when torch sees one).

The scorer runs as a child process with the same command line a remote job runs, which keeps
torch out of the worker's own memory and lets a killed task stop it.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from vidstyle.backends.base import (
    EXIT_BAD_INPUT,
    INPUT_FILES,
    OPTIONAL_OUTPUT_FILES,
    OUTPUT_FILES,
    ChunkTask,
    ComputeBackend,
    ScorerRejected,
    scorer_args,
)
from vidstyle.blobs import BlobStore, parse_wasb, require_blob
from vidstyle.config import Settings

SCORING_ROOT = Path(__file__).resolve().parents[3]  # the folder that holds scoring/


def fetch_model(ref: str, conn_id: str, folder: Path) -> str:
    """A ``wasb://container/path`` model is downloaded; names and local paths pass through."""
    if not (parsed := parse_wasb(ref)):
        return ref
    container, blob = parsed
    store = BlobStore(conn_id, container)
    path = store.download(blob, folder / Path(blob).name)
    sidecar = str(Path(blob).with_suffix(".json"))
    if store.exists(sidecar):
        store.download(sidecar, path.with_suffix(".json"))
    return str(path)


# As scoring.checkpoint.CHECKPOINT_SUFFIXES; read here without importing torch into Airflow.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".model")


def builtin_model_names() -> list[str]:
    folder = SCORING_ROOT / "scoring" / "models"
    return sorted(p.stem for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)


class LocalBackend(ComputeBackend):
    name = "local"

    @staticmethod
    def options(settings: Settings) -> dict:
        return {"batch_size": settings.local_batch_size, "precision": settings.local_precision,
                "compile": settings.local_compile}

    def preflight(self, ref: str, conn_id: str) -> None:
        if parse_wasb(ref):
            require_blob(ref, conn_id)
        elif ref not in builtin_model_names() and not Path(ref).expanduser().is_file():
            raise FileNotFoundError(f"model {ref!r}: no such file on the worker and not a built-in model "
                                    f"(built-ins: {', '.join(builtin_model_names()) or 'none'})")

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def score(self, operator: Any, context: Any, task: ChunkTask) -> dict:
        store = BlobStore(task.conn_id, task.container)
        with tempfile.TemporaryDirectory(prefix="vidstyle-chunk-") as tmp:
            tmp_path = Path(tmp)
            in_dir, out_dir = tmp_path / "in", tmp_path / "out"
            for name in INPUT_FILES:
                store.download(task.input_dir + name, in_dir / name)
            model = fetch_model(task.model, task.conn_id, tmp_path / "model")
            result_path = out_dir / "result.json"
            args = scorer_args(task, model, str(in_dir), str(out_dir), str(result_path))
            self._run([sys.executable, *args], operator, task)
            result = json.loads(result_path.read_text())
            if result["frames"] != task.frames:
                raise RuntimeError(f"scorer returned {result['frames']} frames, expected {task.frames}")
            # The result last: a chunk whose result.json is in place has all its output.
            for name in (*[n for n in OUTPUT_FILES if n != "result.json"], *OPTIONAL_OUTPUT_FILES, "result.json"):
                if (out_dir / name).is_file():
                    store.upload(out_dir / name, task.output_dir + name)
        return result

    def _run(self, cmd: list[str], operator: Any, task: ChunkTask) -> None:
        path = os.pathsep.join(filter(None, [str(SCORING_ROOT), os.environ.get("PYTHONPATH")]))
        env = os.environ | {"PYTHONPATH": path}
        operator.log.info("%s: running %s", task.chunk_label, " ".join(cmd))
        tail: collections.deque[str] = collections.deque(maxlen=20)
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=env, cwd=SCORING_ROOT)
        try:
            for line in self._proc.stdout:
                tail.append(line.rstrip())
                operator.log.info("%s | %s", task.chunk_label, line.rstrip())
            rc = self._proc.wait()
        finally:
            # A timeout or kill of the task must not leave the scorer running on its own.
            self.cancel(operator, task)
        if rc == EXIT_BAD_INPUT:
            raise ScorerRejected(f"scorer refused its input: {' / '.join(tail)[-800:]}")
        if rc != 0:
            raise RuntimeError(f"scorer exited with code {rc}: {' / '.join(tail)[-800:]}")

    def cancel(self, operator: Any, task: ChunkTask) -> None:
        if self._proc and self._proc.poll() is None:
            operator.log.warning("%s: stopping the scorer (pid %s)", task.chunk_label, self._proc.pid)
            self._proc.terminate()
