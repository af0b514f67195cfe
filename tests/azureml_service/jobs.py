"""The job engine of the local Azure ML service (api.py is its REST front): what a workspace's
jobs do once submitted.

Each job walks through the service's statuses in the service's order (NotStarted, Preparing: the
image build, Queued: waiting for a node, Running, Finalizing, then Completed, Failed or
Canceled; NotResponding, Paused, a requeue and CancelRequested on the way when asked), and by
default really runs: the datastore inputs are downloaded from Azurite, the job's own command
line is run (split as a shell would, without one) with the placeholders filled in, and the
outputs are uploaded, as Azure ML does in download/upload mode. ``nodes`` jobs run at once;
the rest wait Queued, as on a cluster at its node limit; with ``quota_error`` set no node is
ever given (a subscription without the VM family's quota) and the compute reports the error.
Each job keeps when it was created, started on a node (Running) and ended, and its error with
the service's category (UserError, SystemError), as Azure ML's run history does.

Tests steer it with rules: a rule matches a job by its tags and attempt number and says what
the job does instead of running ("fail" as a preempted node would, "build_fails" in Preparing,
"succeed" at once without running, "not_responding" or "pause" until released, "requeue" once
after it ran, "exit2" like the scorer refusing its input, "timed": exactly ``score_seconds`` on
the node, for the benchmark, whose service also makes its nodes warm: each job's command in a
child forked from one process that imported the scorer), and ``hold``: the statuses in which
the job stays until the test releases it (each once; "Requeued" is the Queued after a requeue)
(``release(name)``), so a test that needs a job in a state holds it there instead of racing a
timer. ``entered[status]`` is an event set when the job reaches a status.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASTORE_URI = re.compile(r"^azureml://datastores/(?P<store>[^/]+)/paths/(?P<path>.*)$")
ENDED = ("Completed", "Failed", "Canceled")


class Job:
    def __init__(self, name: str, body: dict) -> None:
        self.name, self.body = name, body
        self.on_end = lambda: None
        self.props = body["properties"]
        self.status = "NotStarted"
        self.entered: dict[str, threading.Event] = {}
        self.error, self.error_code, self.reads = "", None, 0
        self.created = time.time()
        self.started: float | None = None
        self.ended: float | None = None
        self.proc: subprocess.Popen | None = None
        self.released = threading.Event()
        self.cancel = threading.Event()
        self.rule: dict = {}
        self.holds: set[str] = set()  # the statuses its rule holds it in, each once, until released

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
        self.event(status).set()
        if status == "Running" and self.started is None:  # the run history's start: on a node
            self.started = time.time()
        if status in ENDED:
            self.ended = time.time()
            self.on_end()

    def event(self, status: str) -> threading.Event:
        return self.entered.setdefault(status, threading.Event())

    def wait_for(self, status: str, timeout: float = 60.0) -> None:
        """Block until the job has reached ``status`` (an event, not a poll); fail after ``timeout``."""
        if not self.event(status).wait(timeout):
            raise AssertionError(f"job {self.name} is {self.status}; it never reached {status}")


class JobService:
    """The jobs, their lifecycles and the rules that steer them."""

    def __init__(self, datastores: dict[str, tuple[str, str]], nodes: int = 4, step: float = 0.05,
                 python: str = sys.executable, app_dir: Path = ROOT, warm_nodes: bool = False) -> None:
        self.datastores = datastores  # datastore name -> (wasb connection id, container)
        self.nodes, self.step = nodes, step
        # What a node runs the job's command with: the scoring image's Python and its PYTHONPATH
        # (by default this checkout's; the installed-package test gives the image's replica).
        self.python, self.app_dir = python, app_dir
        # Warm nodes (the benchmark's, whose jobs take a time it chooses): the command runs in a
        # child forked from a process that has the scorer and torch imported already. On a real
        # cluster each node is a machine of its own; here every node shares the CPUs with the
        # Airflow processes being measured, and 20 nodes each importing torch at once would be
        # what the benchmark measures instead of them.
        self.warm = _WarmNode() if warm_nodes else None
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
        self.quota_error: str | None = None  # set: the cluster never gets a node (no quota), and says why
        self.threads: list[threading.Thread] = []

    def _settled(self, job: Job) -> None:
        with self.lock:
            if job.name in self.counted:
                self.counted.discard(job.name)
                self.in_flight -= 1

    # -- the API -----------------------------------------------------------------------------
    def create(self, name: str, body: dict) -> Job:
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
            job.holds = set(job.rule.get("hold", ()))
        thread = threading.Thread(target=self._lifecycle, args=(job,), daemon=True)
        self.threads.append(thread)
        thread.start()
        return job

    def get(self, name: str) -> Job | None:
        job = self.jobs.get(name)
        if job is not None:
            job.reads += 1  # how often a client looked: the test knows when a trigger has started
        return job

    def cancel(self, name: str) -> Job | None:
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
        threading.Thread(target=self._end_cancel, args=(job,), daemon=True).start()
        return job

    def _end_cancel(self, job: Job) -> None:
        # Azure ML takes a while to stop a job; a rule may hold it CancelRequested until released.
        if "CancelRequested" in job.holds:
            job.released.wait()
        else:
            time.sleep(float(job.rule.get("cancel_seconds", 0.1)))
        job.set("Canceled")

    def release(self, name: str) -> None:
        """Let a job held in a status (its rule's ``hold``, a pause, NotResponding) go on."""
        self.jobs[name].released.set()

    def _hold(self, job: Job, status: str) -> bool:
        """Stay in ``status`` while the rule holds it there, until released: False when cancelled."""
        if status not in job.holds:
            return True
        while not job.released.wait(0.02):
            if job.cancel.is_set():
                return False
        job.released.clear()
        job.holds.discard(status)
        return True

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
                "jobs": {n: {"status": j.status, "error": j.error, "tags": j.tags} for n, j in self.jobs.items()}}

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
        if not self._wait(job, float(rule.get("prepare_seconds", self.step))) or not self._hold(job, "Preparing"):
            return
        if behaviour == "build_fails":
            return self._fail(job, rule.get("error", "Image build failed: the Dockerfile's RUN step returned 1"),
                              rule.get("code", "UserError"))
        for visit in range(2 if behaviour == "requeue" else 1):
            job.set("Queued")
            if behaviour == "pause" and not visit:
                job.set("Paused")
                if not self._released(job):
                    return
                job.set("Queued")
            wait = rule.get("requeue_seconds" if visit else "queue_seconds", self.step)
            # A rule holds a first wait with "Queued", the wait after a requeue with "Requeued".
            if not self._wait(job, float(wait)) or not self._hold(job, "Requeued" if visit else "Queued"):
                return
            while self.quota_error or not self.node_free.acquire(timeout=0.05):  # no node: stays Queued
                if job.cancel.wait(0.05 if self.quota_error else 0):
                    return
            try:
                if behaviour == "requeue" and not visit:  # the node lost; the service puts it back in the queue
                    job.set("Running")
                    if not self._hold(job, "Running"):
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
            if not self._released(job):
                return
            job.set("Running")  # it came back, as the service says it can
        if not self._hold(job, "Running"):
            return
        self._execute(job, exit_code=2 if behaviour == "exit2" else None,
                      at_least=float(rule["score_seconds"])
                      if behaviour == "timed" else 0.0)

    def _released(self, job: Job) -> bool:
        while not job.released.wait(0.02):
            if job.cancel.is_set():
                return False
        job.released.clear()
        return True

    def _store(self, uri: str):
        from vidstyle.hooks.blob_store import BlobStore  # WasbHook: the connection comes from the environment

        m = DATASTORE_URI.match(uri)
        conn_id, container = self.datastores[m["store"]]
        return BlobStore(conn_id, container), m["path"]

    def _download_inputs(self, props: dict, tmp: str) -> dict[str, str]:
        """The job's datastore inputs on the node's disk (download mode): placeholder -> path."""
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
        return values

    def _execute(self, job: Job, exit_code: int | None, at_least: float = 0.0) -> None:
        """Run the job's command on a node; with ``at_least``, end no sooner than that many seconds
        after it started (a scoring time chosen by the benchmark, not this machine's speed)."""
        began = time.monotonic()
        props = job.props
        with tempfile.TemporaryDirectory(prefix="local-azureml-") as tmp:
            values = self._download_inputs(props, tmp)
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
                env = {"PYTHONPATH": str(self.app_dir), "PATH": "/usr/bin:/bin",
                       **(props.get("environmentVariables") or {})}
                if self.warm and argv[1:2] == ["-m"]:
                    job.proc = self.warm.run(argv[2:], tmp, env)
                else:
                    job.proc = subprocess.Popen([self.python, *argv[1:]], cwd=tmp, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True, env=env)
            out, _ = job.proc.communicate()
            if job.cancel.wait(max(0.0, at_least - (time.monotonic() - began))):
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


class _WarmNode:
    """Runs ``python -m MODULE ARGS`` as a child forked from a server process that imported the
    scorer once (multiprocessing's forkserver): the same code and outputs as a fresh process,
    without each job paying torch's import on this machine's CPUs."""

    PRELOAD = ("scoring.cli", "scoring.engine", "scoring.chunk", "scoring.video", "scoring.flicker",
               "scoring.checkpoint", "scoring.transformer_net")

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(list(self.PRELOAD))

    def run(self, module_args: list[str], cwd: str, env: dict[str, str]) -> _Forked:
        return _Forked(self.context, module_args, cwd, env)


class _Forked:
    """A forked job's process, answering as the ``subprocess.Popen`` of a cold one does."""

    def __init__(self, context, module_args: list[str], cwd: str, env: dict[str, str]) -> None:
        self.log = Path(cwd, ".node-output.txt")
        self.process = context.Process(target=_run_module, args=(module_args, cwd, env, str(self.log)))
        self.process.start()

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return None if self.process.is_alive() else self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def communicate(self) -> tuple[str, None]:
        self.process.join()
        return (self.log.read_text(errors="replace") if self.log.is_file() else ""), None


def _run_module(module_args: list[str], cwd: str, env: dict[str, str], log: str) -> None:
    """In the forked child: the job's directory, environment and output, then the module as __main__."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.argv = ["python", *module_args[1:]]
    runpy.run_module(module_args[0], run_name="__main__", alter_sys=True)


def _matches(rule: dict, job: Job) -> bool:
    return all(job.tags.get(k) == v for k, v in rule.get("tags", {}).items()) and rule.get(
        "attempt", job.attempt) == job.attempt
