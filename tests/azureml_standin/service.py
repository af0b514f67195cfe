"""A stand-in for Azure Machine Learning's job service, offline: an HTTP service of its own.

It takes jobs as azure-ai-ml serializes them for the REST API (``job._to_rest_object()``),
walks each through the service's statuses in the service's order (NotStarted, Preparing: the
image build, Queued: waiting for a node, Running, Finalizing, then Completed, Failed or
Canceled; NotResponding, Paused, a requeue and CancelRequested on the way when asked), and by
default really runs it: the datastore inputs are downloaded from
Azurite, the job's own command line is run (split as a shell would, without one) with the
placeholders filled in, and the outputs are uploaded, as Azure ML does in download/upload
mode. ``nodes`` jobs run at once; the rest wait Queued, as on a cluster at its node limit.
Each job keeps when it was created, started on a node (Running) and ended, and its error with
the service's category (UserError, SystemError), as Azure ML's run history does. It also keeps
the workspace's assets (environments, compute, datastores) that clients of other processes
registered, with a compute's provisioning state and errors.

Tests steer it with rules (``POST /rules``): a rule matches a job by its tags and attempt
number and says what the job does instead of running ("fail" as a preempted node would,
"build_fails" in Preparing, "succeed" at once without running, "hang" until released,
"not_responding" or "pause" for a while, "requeue" once after it ran, "exit2" like the scorer
refusing its input), how long it prepares
and queues, or how slowly it is cancelled. It runs inside the test process (a thread) or as a
process of its own (``python -m tests.azureml_standin.service --port N``) that every Airflow
process, the triggerer included, talks to: the jobs outlive the Airflow processes.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATASTORE_URI = re.compile(r"^azureml://datastores/(?P<store>[^/]+)/paths/(?P<path>.*)$")
ENDED = ("Completed", "Failed", "Canceled")


class Job:
    def __init__(self, name: str, body: dict) -> None:
        self.name, self.body = name, body
        self.on_end = lambda: None
        self.props = body["properties"]
        self.status, self.transitions = "NotStarted", ["NotStarted"]
        self.error, self.error_code, self.reads = "", None, 0
        self.created = time.time()
        self.started: float | None = None
        self.ended: float | None = None
        self.proc: subprocess.Popen | None = None
        self.released = threading.Event()
        self.cancel = threading.Event()
        self.rule: dict = {}

    @property
    def tags(self) -> dict:
        return self.props.get("tags") or {}

    @property
    def attempt(self) -> int:
        return int(self.name.rsplit("-", 1)[-1]) if self.name.rsplit("-", 1)[-1].isdigit() else 1

    def set(self, status: str) -> None:
        if self.status in ENDED:
            return
        self.status = status
        self.transitions.append(status)
        if status == "Running" and self.started is None:  # the run history's start: on a node
            self.started = time.time()
        if status in ENDED:
            self.ended = time.time()
            self.on_end()

    def view(self) -> dict:
        return {"name": self.name, "status": self.status, "tags": self.tags, "transitions": self.transitions,
                "error": self.error, "error_code": self.error_code, "reads": self.reads, "created": self.created,
                "started": self.started,
                "ended": self.ended,
                "compute": self.props.get("computeId"), "environment": self.props.get("environmentId"),
                "command": self.props.get("command"), "inputs": self.props.get("inputs"),
                "outputs": self.props.get("outputs"), "studio_url": f"https://ml.azure.com/runs/{self.name}?standin"}


class JobService:
    """The jobs, their lifecycles and the rules that steer them."""

    def __init__(self, datastores: dict[str, tuple[str, str]], nodes: int = 4, step: float = 0.05,
                 python: str = sys.executable, app_dir: Path = ROOT) -> None:
        self.datastores = datastores  # datastore name -> (wasb connection id, container)
        self.nodes, self.step = nodes, step
        # What a node runs the job's command with: the scoring image's Python and its PYTHONPATH
        # (by default this checkout's; the installed-package test gives the image's replica).
        self.python, self.app_dir = python, app_dir
        self.jobs: dict[str, Job] = {}
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.rules: list[dict] = []
        self.lock = threading.Lock()
        self.node_free = threading.Semaphore(nodes)
        # Jobs asked for and not yet ended or being cancelled, now and at most: what the
        # pipeline has in flight (a cancelled job's node is freed by the service, not by it).
        self.in_flight = self.max_in_flight = 0
        self.counted: set[str] = set()
        self.assets: dict[str, dict] = {}  # "kind/key" -> what a client registered (and tests set)
        self.threads: list[threading.Thread] = []

    def _settled(self, job: Job) -> None:
        with self.lock:
            if job.name in self.counted:
                self.counted.discard(job.name)
                self.in_flight -= 1

    # -- the API -----------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        name = body["name"]
        with self.lock:
            if name in self.jobs:
                raise ValueError(f"job {name} already exists")  # the service refuses to redefine a job
            job = self.jobs[name] = Job(name, body)
            job.on_end = lambda: self._settled(job)
            self.submitted.append(name)
            self.counted.add(name)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            job.rule = next((r for r in self.rules if _matches(r, job)), {})
        thread = threading.Thread(target=self._lifecycle, args=(job,), daemon=True)
        self.threads.append(thread)
        thread.start()
        return job.view()

    def get(self, name: str) -> dict | None:
        job = self.jobs.get(name)
        if job is None:
            return None
        job.reads += 1  # how often a client looked: the test knows when a trigger has started
        return job.view()

    def cancel(self, name: str) -> dict | None:
        job = self.jobs.get(name)
        if job is None:
            return None
        with self.lock:
            self.cancelled.append(name)
            job.set("CancelRequested")
            job.cancel.set()
        self._settled(job)
        if job.proc and job.proc.poll() is None:
            job.proc.terminate()
        delay = float(job.rule.get("cancel_seconds", 0.3))  # Azure ML takes a while to stop a job
        threading.Timer(delay, lambda: job.set("Canceled")).start()
        return job.view()

    def release(self, name: str) -> None:
        self.jobs[name].released.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every job still going and wait for its lifecycle: nothing writes after the test."""
        for job in list(self.jobs.values()):
            job.cancel.set()
            if job.proc and job.proc.poll() is None:
                job.proc.terminate()
        for thread in self.threads:
            thread.join(timeout)

    def add_rule(self, rule: dict) -> None:
        self.rules.append(rule)

    def state(self) -> dict:
        return {"submitted": self.submitted, "cancelled": self.cancelled, "max_in_flight": self.max_in_flight,
                "jobs": {n: j.view() for n, j in self.jobs.items()}}

    # -- what the service does -------------------------------------------------------------------
    def _wait(self, job: Job, seconds: float) -> bool:
        """Sleep, unless cancelled: False when the job was cancelled meanwhile."""
        return not job.cancel.wait(seconds)

    def _fail(self, job: Job, error: str, code: str) -> None:
        job.error, job.error_code = error, code
        job.set("Failed")

    def _lifecycle(self, job: Job) -> None:
        rule, behaviour = job.rule, job.rule.get("behaviour", "run")
        job.set("Preparing")  # the image build and environment set-up, before any node
        if not self._wait(job, float(rule.get("prepare_seconds", self.step))):
            return
        if behaviour == "build_fails":
            return self._fail(job, rule.get("error", "Image build failed: the Dockerfile's RUN step returned 1"),
                              rule.get("code", "UserError"))
        for visit in range(2 if behaviour == "requeue" else 1):
            job.set("Queued")
            if behaviour == "pause" and not visit:
                job.set("Paused")
                if not self._wait(job, float(rule.get("for_seconds", 3600))):
                    return
                job.set("Queued")
            wait = rule.get("requeue_seconds" if visit else "queue_seconds", self.step)
            if not self._wait(job, float(wait)):
                return
            while not self.node_free.acquire(timeout=0.05):  # no node free: stays Queued
                if job.cancel.is_set():
                    return
            try:
                if behaviour == "requeue" and not visit:  # the node lost; the service puts it back in the queue
                    job.set("Running")
                    if not self._wait(job, float(rule.get("for_seconds", self.step))):
                        return
                    continue
                self._on_node(job, rule)
            finally:
                self.node_free.release()

    def _on_node(self, job: Job, rule: dict) -> None:
        job.set("Running")
        if not self._wait(job, self.step):
            return
        behaviour = rule.get("behaviour", "run")
        if behaviour == "fail":
            return self._fail(job, rule.get("error", "Execution failed: the node was preempted (low priority)"),
                              rule.get("code", "SystemError"))
        if behaviour == "succeed":  # ends well at once, running nothing (for tests of the states alone)
            job.set("Finalizing")
            job.set("Completed")
            return
        if behaviour == "not_responding":
            job.set("NotResponding")
            if not self._wait(job, float(rule.get("for_seconds", 3600))):
                return
            job.set("Running")  # it came back, as the service says it can
        if behaviour == "hang":
            while not job.released.wait(0.05):
                if job.cancel.is_set():
                    return
        self._execute(job, exit_code=2 if behaviour == "exit2" else None)

    def _store(self, uri: str):
        from vidstyle.hooks.blob_store import BlobStore  # WasbHook: the connection comes from the environment

        m = DATASTORE_URI.match(uri)
        conn_id, container = self.datastores[m["store"]]
        return BlobStore(conn_id, container), m["path"]

    def _execute(self, job: Job, exit_code: int | None) -> None:
        props = job.props
        with tempfile.TemporaryDirectory(prefix="standin-azureml-") as tmp:
            values = {}
            for name, item in (props.get("inputs") or {}).items():
                store, path = self._store(item["uri"])
                if item["jobInputType"] == "uri_folder":
                    local = Path(tmp, "inputs", name)
                    for blob in store.list(path):
                        store.download(blob.name, local / blob.name[len(path):])
                else:
                    local = store.download(path, Path(tmp, "inputs", name, Path(path).name))
                values[f"inputs.{name}"] = str(local)
            for name in props.get("outputs") or {}:
                Path(tmp, "outputs", name).mkdir(parents=True)
                values[f"outputs.{name}"] = str(Path(tmp, "outputs", name))
            command = re.sub(r"\$\{\{(\w+\.\w+)\}\}", lambda m: shlex.quote(values[m[1]]), props["command"])
            argv = shlex.split(command)
            if exit_code is not None:  # the scorer refusing its input, without running it
                refuse = f"import sys; print('error: bad input', file=sys.stderr); sys.exit({exit_code})"
                argv = ["python", "-c", refuse]
            with self.lock:
                if job.status != "Running" or job.cancel.is_set():
                    return
                # As in the scoring image: the scorer on PYTHONPATH, the job in a directory of its own.
                job.proc = subprocess.Popen(
                    [self.python, *argv[1:]], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    env={"PYTHONPATH": str(self.app_dir), "PATH": "/usr/bin:/bin",
                         **(props.get("environmentVariables") or {})})
            out, _ = job.proc.communicate()
            if job.cancel.is_set():
                return  # stopped by a cancel: Canceled, not Failed
            if job.proc.returncode != 0:
                # Azure ML's words for a non-zero exit (UserError, "exited with status code N").
                return self._fail(job, f"Execution failed. User process 'python' exited with status code "
                                       f"{job.proc.returncode}. Please check log file 'user_logs/std_log.txt'. "
                                       f"{out[-300:]}", "UserError")
            for name, item in (props.get("outputs") or {}).items():
                store, path = self._store(item["uri"])
                for file in sorted(Path(tmp, "outputs", name).rglob("*")):
                    if file.is_file():
                        store.upload(file, path + file.relative_to(Path(tmp, "outputs", name)).as_posix())
        job.set("Finalizing")
        job.set("Completed")


def _matches(rule: dict, job: Job) -> bool:
    return all(job.tags.get(k) == v for k, v in rule.get("tags", {}).items()) and rule.get(
        "attempt", job.attempt) == job.attempt


class Handler(BaseHTTPRequestHandler):
    service: JobService

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if parts == ["state"]:
            return self._reply(200, self.service.state())
        if len(parts) == 3 and parts[0] == "assets":
            asset = self.service.assets.get(f"{parts[1]}/{parts[2]}")
            return self._reply(200, asset) if asset else self._reply(404, {"error": f"{parts[1]} {parts[2]} not found"})
        if len(parts) == 2 and parts[0] == "jobs":
            job = self.service.get(parts[1])
            return self._reply(200, job) if job else self._reply(404, {"error": f"job {parts[1]} not found"})
        self._reply(404, {"error": self.path})

    def do_POST(self) -> None:
        parts = self.path.strip("/").split("/")
        try:
            if parts == ["jobs"]:
                return self._reply(201, self.service.create(self._body()))
            if parts == ["rules"]:
                self.service.add_rule(self._body())
                return self._reply(200, {})
            if len(parts) == 3 and parts[0] == "assets":
                self.service.assets[f"{parts[1]}/{parts[2]}"] = self._body()
                return self._reply(200, {})
            if len(parts) == 3 and parts[0] == "jobs" and parts[2] in ("cancel", "release"):
                if parts[1] not in self.service.jobs:
                    return self._reply(404, {"error": f"job {parts[1]} not found"})
                result = self.service.cancel(parts[1]) if parts[2] == "cancel" else self.service.release(parts[1])
                return self._reply(200, result or {})
        except ValueError as exc:
            return self._reply(409, {"error": str(exc)})
        self._reply(404, {"error": self.path})


def serve(service: JobService, port: int = 0) -> ThreadingHTTPServer:
    """Serve ``service`` on 127.0.0.1 in a thread; the server's port is ``server.server_port``."""
    handler = type("BoundHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    p = argparse.ArgumentParser(description="The Azure ML stand-in as a process of its own")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--datastore", action="append", default=[], help="NAME=CONN_ID:CONTAINER")
    p.add_argument("--nodes", type=int, default=4)
    a = p.parse_args()
    stores = {n: tuple(v.split(":", 1)) for n, v in (d.split("=", 1) for d in a.datastore)}
    server = serve(JobService(stores, nodes=a.nodes), a.port)
    print(f"standin Azure ML on 127.0.0.1:{server.server_port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
