"""A stand-in for azure.ai.ml's MLClient, offline, with the real client's interface.

``jobs`` has create_or_update / get / begin_cancel and walks a job through the service's
statuses (Queued, Preparing, Running, then Completed, Failed, Canceled or NotResponding). By
default a job really runs: its datastore inputs are downloaded from Azurite, the job's own
command line is run (split like a shell would, without one) with the placeholders filled in,
and the output folder is uploaded to its datastore path, as Azure ML does in download/upload
mode. ``compute``, ``environments`` and ``datastores`` keep what provision sends (a compute
round-tripped through the REST model, so reads look like the service's).
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from vidstyle.blobs import BlobStore

ROOT = Path(__file__).resolve().parents[1]
DATASTORE_URI = re.compile(r"^azureml://datastores/(?P<store>[^/]+)/paths/(?P<path>.*)$")


@dataclass
class FakeJob:
    name: str
    status: str
    spec: Any  # what was submitted (an azure.ai.ml Command)
    error: str = ""
    studio_url: str = ""
    transitions: list[str] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)  # a "hang" job waits on it


class FakePoller:
    def result(self, timeout: float | None = None) -> None:
        return None

    def wait(self, timeout: float | None = None) -> None:
        return None

    def done(self) -> bool:
        return True


class FakeJobs:
    """``behaviour(job) -> str``: "run" (the real command), "fail", "hang" or "not_responding"."""

    def __init__(self, containers: dict[str, tuple[str, str]], behaviour: Callable[[Any], str] = lambda job: "run"):
        self.containers = containers  # datastore name -> (wasb conn id, container)
        self.behaviour = behaviour
        self.jobs: dict[str, FakeJob] = {}
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._runs_operations = SimpleNamespace(get_run_details=self._run_details)

    # -- the client's interface ------------------------------------------------------------
    def create_or_update(self, job: Any) -> FakeJob:
        from azure.ai.ml.entities import Command

        assert isinstance(job, Command), type(job)
        job._to_job()._to_rest_object()  # the real serializer accepts it
        with self._lock:
            if job.name in self.jobs:  # the service refuses to redefine an existing job
                raise AssertionError(f"job {job.name} submitted twice")
            self.jobs[job.name] = fake = FakeJob(job.name, "Queued", job,
                                                 studio_url=f"https://ml.azure.com/runs/{job.name}?wsid=fake")
            self.submitted.append(job.name)
        threading.Thread(target=self._lifecycle, args=(fake,), daemon=True).start()
        return copy.copy(fake)

    def get(self, name: str) -> FakeJob:
        with self._lock:
            if name not in self.jobs:
                raise ResourceNotFoundError(f"job {name} not found")
            return copy.copy(self.jobs[name])

    def begin_cancel(self, name: str) -> FakePoller:
        with self._lock:
            job = self.jobs[name]
            self.cancelled.append(name)
            self._set(job, "CancelRequested")
            proc = self._procs.get(name)
        if proc and proc.poll() is None:
            proc.terminate()
        with self._lock:
            self._set(job, "Canceled")
        return FakePoller()

    def _run_details(self, name: str) -> Any:
        error = self.jobs[name].error
        as_dict = {"error": {"code": "UserError", "message": error}} if error else {}
        return SimpleNamespace(error=SimpleNamespace(as_dict=lambda: as_dict) if error else None)

    # -- what the service does ---------------------------------------------------------------
    def _set(self, job: FakeJob, status: str) -> None:
        if job.status not in ("Completed", "Failed", "Canceled"):
            job.status = status
            job.transitions.append(status)

    def wait_until(self, name: str, status: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while self.get(name).status != status:
            assert time.time() < deadline, f"{name} is {self.get(name).status}, not {status}"
            time.sleep(0.05)

    def release(self, name: str) -> None:
        """Let a "hang" job go on to run for real."""
        self.jobs[name].hold.set()

    def _lifecycle(self, job: FakeJob) -> None:
        behaviour = self.behaviour(job.spec)
        for status in ("Preparing", "Running"):
            time.sleep(0.05)
            with self._lock:
                self._set(job, status)
        if behaviour == "fail":
            job.error = "Execution failed: CUDA error: out of memory (fake)"
            with self._lock:
                self._set(job, "Failed")
            return
        if behaviour == "not_responding":
            with self._lock:
                self._set(job, "NotResponding")
            return
        if behaviour == "hang":
            while not job.hold.wait(0.05):
                if job.status != "Running":
                    return
        self._execute(job)

    def _store(self, uri: str) -> tuple[BlobStore, str]:
        m = DATASTORE_URI.match(uri)
        assert m, f"not a datastore URI: {uri}"
        conn_id, container = self.containers[m["store"]]
        return BlobStore(conn_id, container), m["path"]

    def _execute(self, job: FakeJob) -> None:
        spec = job.spec
        with tempfile.TemporaryDirectory(prefix="fake-azureml-") as tmp:
            values = {}
            for name, item in spec.inputs.items():
                store, path = self._store(item.path)
                if item.type == "uri_folder":
                    local = Path(tmp, "inputs", name)
                    for blob in store.list(path):
                        store.download(blob.name, local / blob.name[len(path):])
                else:
                    local = store.download(path, Path(tmp, "inputs", name, Path(path).name))
                values[f"inputs.{name}"] = str(local)
            for name in spec.outputs:
                Path(tmp, "outputs", name).mkdir(parents=True)
                values[f"outputs.{name}"] = str(Path(tmp, "outputs", name))
            command = re.sub(r"\$\{\{(\w+\.\w+)\}\}", lambda m: shlex.quote(values[m[1]]), spec.command)
            argv = shlex.split(command)
            assert argv[0] == "python", argv
            with self._lock:
                if job.status != "Running":
                    return
                # As in the scoring image: the scorer on PYTHONPATH, the job in a directory of its own.
                proc = self._procs[job.name] = subprocess.Popen(
                    [sys.executable, *argv[1:]], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **spec.environment_variables})
            out, _ = proc.communicate()
            if proc.returncode != 0:
                job.error = f"Execution failed: exit code {proc.returncode}: {out[-500:]}"
                with self._lock:
                    self._set(job, "Failed")
                return
            for name, item in spec.outputs.items():
                store, path = self._store(item.path)
                for file in sorted(Path(tmp, "outputs", name).rglob("*")):
                    if file.is_file():
                        store.upload(file, path + file.relative_to(Path(tmp, "outputs", name)).as_posix())
        with self._lock:
            self._set(job, "Finalizing")
            self._set(job, "Completed")


class FakeAssets:
    """compute / environments / datastores: get and create_or_update."""

    def __init__(self, kind: str) -> None:
        self.kind, self.items, self.writes = kind, {}, []

    def _key(self, name: str, version: str | None = None) -> str:
        return f"{name}:{version}" if version else name

    def get(self, name: str, version: str | None = None) -> Any:
        key = self._key(name, version)
        if key not in self.items:
            raise ResourceNotFoundError(f"{self.kind} {key} not found")
        return self.items[key]

    def create_or_update(self, entity: Any) -> Any:
        # A compute comes back as the service describes it (tier and idle time mapped both ways).
        stored = type(entity)._load_from_rest(entity._to_rest_object()) if self.kind == "compute" else entity
        version = getattr(entity, "version", None) if self.kind == "environments" else None
        self.items[self._key(entity.name, version)] = stored
        self.writes.append(entity)
        return stored

    def begin_create_or_update(self, entity: Any) -> Any:
        stored = self.create_or_update(entity)
        return SimpleNamespace(result=lambda timeout=None: stored)


class FakeMLClient:
    def __init__(self, containers: dict[str, tuple[str, str]], behaviour: Callable[[Any], str] = lambda job: "run"):
        self.jobs = FakeJobs(containers, behaviour)
        self.compute = FakeAssets("compute")
        self.environments = FakeAssets("environments")
        self.datastores = FakeAssets("datastores")
