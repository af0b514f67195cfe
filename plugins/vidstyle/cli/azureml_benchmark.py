"""``vidstyle azureml-benchmark``: what orchestrating Azure ML jobs costs, through Airflow's real
processes (docs/azure-ml.md, "Scale").

It starts the local Azure ML service (tests/azureml_service, from the checkout) with ``--nodes``
nodes whose every job takes exactly ``--score-seconds`` on its node (the scorer runs on a tiny
chunk within that time, on warm nodes that do not import torch per job: no model's speed is
measured, and the nodes take little of the CPUs they share with Airflow), and a ``vidstyle
cluster`` (scheduler, DAG processor, API server, Celery workers and one triggerer, on
PostgreSQL) whose processes reach the service through azure-ai-ml's own MLClient, as they would reach Azure. Then, per
scenario, videos go through ``video_stylize`` on ``backend=azureml`` at once, and it prints:

- the time each job spent on its node (T, if this machine kept up with the nodes' work);
- the orchestration cost per chunk: from the job's creation to its start on a node, and from
  the job's end to its chunk task's end (median and 90th percentile);
- the efficiency: the ideal scoring time (``ceil(chunks / nodes) x score_seconds``) over the
  measured one (the first job's creation to the last chunk task's end);
- the triggerer's CPU (its processes' CPU seconds over the wall time) and its peak memory;
- the Azure ML API calls per chunk and per minute, reads and writes, against Azure Resource
  Manager's published limits (per subscription and service principal: reads a bucket of 250
  refilled at 25/s, writes 200 at 10/s; learn.microsoft.com, "Understand how Azure Resource
  Manager throttles requests").

Scenarios: ``one``: one video of ``--chunks`` chunks; ``many``: ``--videos`` videos of
``--video-chunks`` chunks each, at once. The machine's load counts in every figure: say what
else ran beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from vidstyle.cli import local
from vidstyle.cli.cluster_run import cluster as _cluster
from vidstyle.cli.cluster_run import sql as _sql
from vidstyle.cli.stack import free_port

ARM_READS_PER_SECOND, ARM_WRITES_PER_SECOND = 25, 10  # refill rates; buckets of 250 and 200


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenarios", default="one,many", help="one: a long video; many: videos at once (%(default)s)")
    p.add_argument("--nodes", type=int, default=20, help="the cluster's nodes (default %(default)s)")
    p.add_argument("--score-seconds", type=float, default=120.0, help="each job's time on its node (%(default)s)")
    p.add_argument("--chunks", type=int, default=200, help="chunks of the one long video (default %(default)s)")
    p.add_argument("--videos", type=int, default=10, help="videos at once in 'many' (default %(default)s)")
    p.add_argument("--video-chunks", type=int, default=20, help="chunks of each of them (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="Celery workers (default %(default)s)")
    p.add_argument("--poll-seconds", type=float, help="azureml_poll_seconds (default: the setting's)")
    p.add_argument("--max-poll-seconds", type=float, help="azureml_max_poll_seconds (default: the setting's)")
    p.add_argument("--json", type=Path, help="also write the figures here")


class Service:
    """The local Azure ML service, a process of its own, and its test-only steering."""

    def __init__(self, root: Path, state: Path, nodes: int, score_seconds: float, container: str) -> None:
        sys.path.insert(0, str(root))  # the service lives with the tests, in the checkout
        from tests.azureml_service.api import SECRET_ENV, AzureMLService, client_environment, connection
        from tests.azureml_service.jobs import JobService

        self.port, self.secret, self.state = free_port(), secrets.token_urlsafe(24), state
        known = AzureMLService(JobService({}), client_secret=self.secret)
        known.base = self.base = f"https://127.0.0.1:{self.port}"
        self.ca = state / "ca.pem"
        self.env = client_environment(known, self.ca) | {
            "AIRFLOW_CONN_AZUREML_DEFAULT": json.dumps(connection(known)), "PYTHONPATH": str(root)}
        self.args = [sys.executable, "-m", "tests.azureml_service.api", "--port", str(self.port), "--nodes",
                     str(nodes), "--score-seconds", str(score_seconds), "--state", str(state),
                     "--datastore", f"vidstyle=wasb_default:{container}"]
        self.secret_env, self.proc = SECRET_ENV, None

    def start(self, env: dict) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        log = (self.state / "service.log").open("ab")
        self.proc = subprocess.Popen(self.args, env=env | {self.secret_env: self.secret}, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=env["PYTHONPATH"])
        deadline = time.monotonic() + 120
        while True:
            try:
                self.steer("state")
                return
            except OSError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.state / "service.log"
                    raise SystemExit(f"the local Azure ML service did not start: see {log}") from exc
                time.sleep(0.5)

    def steer(self, path: str, method: str = "GET", body: dict | None = None) -> dict:
        import ssl

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/_local/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        context = ssl.create_default_context(cafile=str(self.ca)) if self.ca.is_file() else None
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return json.loads(response.read() or b"null")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Sampler:
    """The triggerer's processes (its process group): CPU seconds and peak memory, sampled."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self.cpu0 = self._cpu()

    def _procs(self) -> list:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except Exception:  # it ended: nothing more to count
            return []

    def _cpu(self) -> float:
        total = 0.0
        for proc in self._procs():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except Exception:  # a child that ended meanwhile
                continue
        return total

    def sample(self) -> None:
        rss = 0
        for proc in self._procs():
            try:
                rss += proc.memory_info().rss
            except Exception:  # a child that ended meanwhile
                continue
        self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        return self._cpu() - self.cpu0


def _api(env: dict, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{env['VIDSTYLE_CLUSTER_API_PORT']}/api/v2/{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def _stage(store, work: Path, name: str, chunks: int, frames: int) -> str:
    blob = f"incoming/bench/{name}.mp4"
    path = work / f"{name}.mp4"
    # A frame count, not a duration: a duration rounded to the frame rate gave one frame more,
    # and one chunk more, a whole round of T more for 200 chunks on 20 nodes.
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=30000/1001",
                    "-frames:v", str(chunks * frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                    "yuv420p", str(path)], check=True)
    store.upload(path, blob)
    return blob


def scenario(name: str, videos: int, chunks: int, a: argparse.Namespace, env: dict, service: Service,
             store, work: Path) -> dict:
    """Trigger ``videos`` runs of ``chunks`` chunks at once; wait for them; the figures."""
    frames = 2
    blobs = [_stage(store, work, f"{name}-{i}-{uuid.uuid4().hex[:6]}", chunks, frames) for i in range(videos)]
    sampler = Sampler(int((local.home() / ".cache" / "cluster" / "run" / "triggerer.pid").read_text()))
    calls0 = service.steer("calls")
    started = time.time()
    runs = [_api(env, "POST", "dags/video_stylize/dagRuns",
                 {"logical_date": None, "conf": {"video_blob": blob, "chunk_frames": frames, "backend": "azureml"}})
            ["dag_run_id"] for blob in blobs]
    while True:
        sampler.sample()
        states = [_sql(env, "select state from dag_run where run_id = %s", r)[0][0] for r in runs]
        if all(s in ("success", "failed") for s in states):
            break
        if time.time() - started > 6 * 3600:
            raise SystemExit(f"{name}: runs not done after 6 h: {states}")
        time.sleep(2)
    wall = time.time() - started
    calls = service.steer("calls")
    # This scenario's jobs only: the service keeps every job since it started.
    jobs = {n: j for n, j in service.steer("state")["jobs"].items() if j["tags"].get("airflow_run_id") in runs}
    tis = {r: dict(_sql(env, "select map_index, extract(epoch from end_date) from task_instance where run_id = %s "
                             "and task_id = 'stylize_chunk' and state = 'success'", r)) for r in runs}
    return figures(name, videos, chunks, a, states, jobs, tis, calls0, calls, sampler, wall)


def figures(name: str, videos: int, chunks: int, a: argparse.Namespace, states: list[str], jobs: dict,
            tis: dict, calls0: dict, calls: dict, sampler: Sampler, wall: float) -> dict:
    done = [j for j in jobs.values() if j["status"] == "Completed" and j["started"] and j["ended"]]
    to_node = [j["started"] - j["created"] for j in done]
    on_node = [j["ended"] - j["started"] for j in done]  # T, if this machine kept up with the nodes' work
    ends = []
    for j in done:  # the job's end to its chunk task's end
        task_end = tis.get(j["tags"].get("airflow_run_id"), {}).get(int(j["tags"]["chunk"]))
        if task_end:
            ends.append(float(task_end) - j["ended"])
    last_task = max((float(t) for r in tis.values() for t in r.values()), default=None)
    first_job = min((j["created"] for j in jobs.values()), default=None)
    measured = last_task - first_job if last_task and first_job else None
    made = len({(j["tags"].get("airflow_run_id"), j["tags"].get("chunk")) for j in jobs.values()})
    if made != videos * chunks:
        print(f"{name}: the split made {made} chunks, not {videos * chunks}: the ideal counts {made}", flush=True)
    ideal = math.ceil(made / a.nodes) * a.score_seconds
    reads = calls["reads"] - calls0["reads"]
    writes = calls["writes"] - calls0["writes"]
    minutes = (calls["last"] - calls0["last"]) / 60 if calls["last"] and calls0["last"] else wall / 60
    total = made

    def q(values: list[float], p: float) -> float | None:
        return round(statistics.quantiles(values, n=10)[int(p * 10) - 1], 2) if len(values) >= 2 else (
            round(values[0], 2) if values else None)

    return {"scenario": name, "videos": videos, "chunks": total, "nodes": a.nodes, "score_seconds": a.score_seconds,
            "runs": states, "jobs": len(jobs), "wall_seconds": round(wall, 1),
            "scoring_seconds": round(measured, 1) if measured else None, "ideal_seconds": ideal,
            "efficiency": round(ideal / measured, 3) if measured else None,
            "submit_to_running_seconds": {"median": round(statistics.median(to_node), 2) if to_node else None,
                                          "p90": q(to_node, 0.9)},
            "succeeded_to_task_done_seconds": {"median": round(statistics.median(ends), 2) if ends else None,
                                               "p90": q(ends, 0.9)},
            "on_node_seconds": {"median": round(statistics.median(on_node), 2) if on_node else None,
                                "max": round(max(on_node), 2) if on_node else None},
            "triggerer": {"cpu_share": round(sampler.cpu_seconds() / wall, 3),
                          "peak_rss_mib": round(sampler.peak_rss / 2**20, 1)},
            "api": {"reads": reads, "writes": writes, "per_chunk": round((reads + writes) / total, 1),
                    "reads_per_minute": round(reads / max(minutes, 1e-9), 1),
                    "writes_per_minute": round(writes / max(minutes, 1e-9), 1),
                    "arm_limits_per_minute": {"reads": ARM_READS_PER_SECOND * 60,
                                              "writes": ARM_WRITES_PER_SECOND * 60}}}


def run(a: argparse.Namespace) -> int:
    root = local.checkout()
    if root is None:
        raise SystemExit("azureml-benchmark runs the local Azure ML service from the project's checkout")
    local.apply()
    from vidstyle.hooks.blob_store import BlobStore

    tag = uuid.uuid4().hex[:8]
    container, work = f"azureml-bench-{tag}", local.home() / ".cache" / "azureml-benchmark" / tag
    work.mkdir(parents=True, exist_ok=True)
    service = Service(root, work / "service", a.nodes, a.score_seconds, container)
    settings = {"AIRFLOW__VIDSTYLE__BACKEND": "azureml", "AIRFLOW__VIDSTYLE__AZUREML_DEVICE": "cpu",
                "AIRFLOW__VIDSTYLE__AZUREML_MAX_NODES": str(a.nodes),
                "AIRFLOW__VIDSTYLE__SCORING_POOL_SLOTS": str(2 * a.nodes),
                "AIRFLOW__CORE__PARALLELISM": str(max(32, 4 * a.nodes)),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(32, 4 * a.nodes)),
                "VIDSTYLE_WORKER_CONCURRENCY": "8", "VIDSTYLE_CLUSTER_DB": f"airflow_azbench_{tag}",
                "VIDSTYLE_CLUSTER_CONTAINER": container, "VIDSTYLE_CLUSTER_API_PORT": str(free_port())}
    if a.poll_seconds is not None:
        settings["AIRFLOW__VIDSTYLE__AZUREML_POLL_SECONDS"] = str(a.poll_seconds)
    if a.max_poll_seconds is not None:
        settings["AIRFLOW__VIDSTYLE__AZUREML_MAX_POLL_SECONDS"] = str(a.max_poll_seconds)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | service.env | settings
    _cluster("reset", env=base)
    env = dict(line.split("=", 1) for line in _cluster("env", env=base).split("\0") if "=" in line)
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "cpu": _cpu(), "scenarios": []}
    try:
        service.start(env)
        os.environ.update({k: env[k] for k in ("AIRFLOW_CONN_WASB_DEFAULT",) if k in env})
        _cluster("start", str(a.workers), env=env)  # its database and Azurite first: the pool lives there
        store = BlobStore("wasb_default", container)
        store.ensure_container()
        _provision(env, service)
        _wait_for_dag(env)
        plan = {"one": (1, a.chunks), "many": (a.videos, a.video_chunks)}
        for name in [s for s in a.scenarios.split(",") if s]:
            videos, chunks = plan[name]
            print(f"{name}: {videos} video(s) of {chunks} chunks on {a.nodes} nodes, {a.score_seconds:g} s each",
                  flush=True)
            row = scenario(name, videos, chunks, a, env, service, store, work)
            results["scenarios"].append(row)
            print(json.dumps(row), flush=True)
            if a.json:
                a.json.write_text(json.dumps(results, indent=1))
    finally:
        service.stop()
        subprocess.run([sys.executable, "-m", "vidstyle.cli.main", "cluster", "stop"], env=env, capture_output=True,
                       timeout=300, check=False)
        subprocess.run([sys.executable, "-m", "vidstyle.cli.main", "cluster", "drop"], env=env, capture_output=True,
                       timeout=300, check=False)
    print(table(results))
    return 0


def _provision(env: dict, service: Service) -> None:
    """As an operator does: the environment as provision registers it (its build-context upload
    is not served locally), then provision and the pool."""
    from vidstyle.pipeline.environment import environment_version

    version = environment_version()
    service.steer(f"assets/environments/vidstyle-scoring/versions/{version}", "POST",
                  {"name": version, "properties": {"image": "vidstyle.azurecr.io/scoring:1", "osType": "Linux"}})
    for command in (["provision"], ["pool"]):
        done = subprocess.run([sys.executable, "-m", "vidstyle.cli.main", *command], env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise SystemExit(f"vidstyle {command[0]} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")


def _wait_for_dag(env: dict) -> None:
    deadline = time.monotonic() + 600
    while not _sql(env, "select 1 from dag where dag_id = 'video_stylize'"):
        if time.monotonic() > deadline:
            raise SystemExit("the DAG processor did not parse video_stylize in 10 min")
        time.sleep(2)
    _sql(env, "update dag set is_paused = false where dag_id = 'video_stylize'")


def table(results: dict) -> str:
    lines = ["| scenario | chunks | nodes | T | on a node (median, max) | efficiency | submit to running (median, "
             "p90) | succeeded to task done (median, p90) | triggerer CPU, peak memory | API calls per chunk | "
             "reads, writes per minute |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["scenarios"]:
        s, e, t, api = (r["submit_to_running_seconds"], r["succeeded_to_task_done_seconds"], r["triggerer"],
                        r["api"])
        n = r["on_node_seconds"]
        lines.append(f"| {r['scenario']} ({r['videos']} video(s)) | {r['chunks']} | {r['nodes']} | "
                     f"{r['score_seconds']:g} s | {n['median']} s, {n['max']} s | {r['efficiency']} | "
                     f"{s['median']} s, {s['p90']} s | "
                     f"{e['median']} s, {e['p90']} s | {t['cpu_share']:.1%}, {t['peak_rss_mib']} MiB | "
                     f"{api['per_chunk']} | {api['reads_per_minute']}, {api['writes_per_minute']} (ARM: 1500, 600) |")
    return "\n".join(lines)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    return "unknown"
