"""The Azure ML backend under Airflow's own processes: a scheduler, a DAG processor, an API
server, a Celery worker and a real triggerer (``vidstyle cluster``), with the local Azure ML
service (tests/azureml_service) as a process of its own whose jobs run the real scorer. Every
Airflow process reaches it through azure-ai-ml's own MLClient, set up by the SDK's settings for
another cloud (ARM_CLOUD_METADATA_URL) and signed in with a service principal's secret against
the service's token authority; nothing in the project's code knows it is not Azure.

One video of six chunks goes through on ``backend=azureml``, with the pool that provisioning
sizes (counting deferred chunks) bounding the jobs in flight. On the way:
- the triggerer is stopped and started again while one chunk's job runs and another's is
  queued: nothing is resubmitted, both finish;
- one job fails as a preempted low-priority node does: only its chunk retries, with a new job;
- one deferred chunk is marked failed through the REST API: its job is cancelled; cleared
  again, the chunk gets a new job and the video completes;
and the manifest counts every job the video paid for. Then a second video's trigger moves to a
second triggerer while the first is frozen, and the first, going on, leaves the job running.
Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.cluster.test_cluster import CLUSTER, cluster, sql, wait_for
from tests.support import ROOT, free_port, make_video, upload_with_event
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.environment import environment_version
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.settings import Settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

FRAMES, CHUNK = 60, 10  # six chunks
NODES = 1  # the GPU cluster's nodes; provisioning sizes the pool from it: two chunks in flight


def call(url: str, method: str = "GET", body: dict | None = None, ca: str | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=ca) if url.startswith("https:") else None
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return json.loads(response.read() or b"null")


def steer(env: dict, path: str, method: str = "GET", body: dict | None = None) -> dict:
    """The local service's test-only steering (its jobs' state, rules, releases)."""
    return call(f"{env['SERVICE']}/_local/{path}", method, body, ca=env["REQUESTS_CA_BUNDLE"])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A fresh cluster on backend=azureml and the local Azure ML service, both stopped whatever happens."""
    from tests.azureml_service.api import SECRET_ENV, AzureMLService, client_environment, connection
    from tests.azureml_service.jobs import JobService

    tag = uuid.uuid4().hex[:8]
    container, port, state = f"azureml-{tag}", free_port(), tmp_path_factory.mktemp("azureml-service")
    # What every Airflow process needs to reach the service, known before it starts (its address
    # and the CA it makes), through the SDK's own settings and a service principal's connection.
    secret = secrets.token_urlsafe(24)
    known = AzureMLService(JobService({}), client_secret=secret)
    known.base = f"https://127.0.0.1:{port}"
    reach = client_environment(known, state / "ca.pem")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | reach | {
        "VIDSTYLE_CLUSTER_DB": f"airflow_azureml_{tag}", "VIDSTYLE_CLUSTER_CONTAINER": container,
        "VIDSTYLE_WORKER_CONCURRENCY": "4",  # more than the pool: the pool must be what bounds the jobs
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_CONN_AZUREML_DEFAULT": json.dumps(connection(known)),
        "AIRFLOW__VIDSTYLE__BACKEND": "azureml", "AIRFLOW__VIDSTYLE__AZUREML_CHUNK_FRAMES": str(CHUNK),
        "AIRFLOW__VIDSTYLE__AZUREML_MAX_NODES": str(NODES), "AIRFLOW__VIDSTYLE__AZUREML_DEVICE": "cpu",
        "AIRFLOW__VIDSTYLE__AZUREML_POLL_SECONDS": "1", "AIRFLOW__VIDSTYLE__AZUREML_MAX_POLL_SECONDS": "2",
        "AIRFLOW__VIDSTYLE__AZUREML_PRICES": '{"Standard_NC4as_T4_v3": 0.36}',
        # A triggerer silent this long is taken for dead and its triggers handed on (default 30 s).
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "20",
        "AIRFLOW__VIDSTYLE__SENSOR_POKE_SECONDS": "5", "AIRFLOW__VIDSTYLE__CLAIM_POKE_SECONDS": "5",
        "AIRFLOW__VIDSTYLE__DEFAULT_STYLE": f"wasb://{container}/models/standin.pth",
    }
    cluster("reset", env=base)
    cluster_env = dict(line.split("=", 1) for line in cluster("env", env=base).split("\0") if "=" in line)
    logs = ROOT / ".cache" / "cluster" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = (logs / "local-azureml.log").open("ab")
    service = subprocess.Popen(
        [sys.executable, "-m", "tests.azureml_service.api", "--port", str(port), "--nodes", str(NODES),
         "--datastore", f"vidstyle=wasb_default:{container}", "--state", str(state)],
        env=cluster_env | {SECRET_ENV: secret}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = cluster_env | {"SERVICE": known.base, "CONTAINER": container}
        wait_for("the local Azure ML service", lambda: _up(found), 60, every=0.5)
        yield found
    finally:
        service.kill()
        subprocess.run([*_cluster(), "stop"], env=base, capture_output=True, timeout=300)
        subprocess.run([*_cluster(), "drop"], env=base, capture_output=True, timeout=300)


def _cluster() -> list[str]:
    return CLUSTER


def _up(env: dict) -> bool:
    try:
        steer(env, "state")
        return True
    except OSError:
        return False


def jobs_of(env: dict) -> dict[str, dict]:
    return steer(env, "state")["jobs"]


def chunk_jobs(env: dict, chunk: int) -> list[dict]:
    """The chunk's jobs in the order they were submitted."""
    return sorted((j for j in jobs_of(env).values() if j["tags"]["chunk"] == str(chunk)), key=lambda j: j["created"])


def ti(env: dict, run_id: str, index: int) -> tuple[str, int]:
    rows = sql(env, "select state, try_number from task_instance where dag_id = 'video_stylize' and "
                    "task_id = 'stylize_chunk' and run_id = %s and map_index = %s", run_id, index)
    return rows[0] if rows else (None, 0)


def api(env: dict, method: str, path: str, body: dict) -> dict:
    port = env.get("VIDSTYLE_CLUSTER_API_PORT", "8090")
    return call(f"http://127.0.0.1:{port}/api/v2/dags/video_stylize/{path}", method, body)


def test_a_video_on_azure_ml_survives_a_triggerer_restart_a_preempted_node_and_a_chunk_marked_failed(env, tmp_path):
    store = BlobStore("wasb_default", env["CONTAINER"])
    store.ensure_container()
    version = environment_version()  # what provisioning registers now; the run pins it
    upload_model(store, tmp_path)
    # What each chunk's job does (first matching rule): chunks 0 and 1 are held Running until
    # released (the one sent second waits for the one node meanwhile), chunk 2's first job is
    # preempted, chunk 3's first job is held Running until cancelled (and takes 3 s to stop, as
    # Azure ML does); the rest simply run.
    rules = [{"tags": {"chunk": "0"}, "hold": ["Running"]}, {"tags": {"chunk": "1"}, "hold": ["Running"]},
             {"tags": {"chunk": "2"}, "attempt": 1, "behaviour": "fail",
              "error": "Execution failed: the low-priority node was preempted"},
             {"tags": {"chunk": "3"}, "attempt": 1, "hold": ["Running"], "cancel_seconds": 3}]
    for rule in rules:
        steer(env, "rules", "POST", rule)
    # The environment as provision registers it: creating it uploads its build context to the
    # workspace's storage account, which the local service does not serve (docs/azure-ml.md).
    steer(env, f"assets/environments/vidstyle-scoring/versions/{version}", "POST",
          {"name": version, "properties": {"image": "vidstyle.azurecr.io/scoring:1", "osType": "Linux"}})

    cluster("start", "1", env=env, timeout=900)
    # As an operator does: provision the workspace (the environment's version recorded for the
    # workers), then the pool where Airflow runs.
    for command in (["provision"], ["pool"]):
        done = subprocess.run([sys.executable, "-m", "vidstyle.cli.main", *command], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done
    assert "2 slots, counting deferred tasks" in done.stdout, done.stdout

    blob = "incoming/azureml/clip.mp4"
    upload_with_event(store, make_video(tmp_path / "clip.mp4", seconds=FRAMES * 1001 / 30000, size="96x64"), blob,
                      Settings(container=store.container))
    run_id = wait_for("the video's run", lambda: (sql(env, "select run_id from dag_run where dag_id = "
                                                            "'video_stylize'") or [[None]])[0][0], 600)
    restart_the_triggerer_midway(env, run_id)
    mark_chunk_3_failed_then_clear_it(env, run_id)

    # Chunk 2's preempted job was replaced once, by its retry; chunk 3's cancelled one by the clear.
    two, three = chunk_jobs(env, 2), chunk_jobs(env, 3)
    assert [j["status"] for j in two] == ["Failed", "Completed"] and ti(env, run_id, 2)[1] == 2
    assert [j["status"] for j in three] == ["Canceled", "Completed"]
    state = steer(env, "state")
    assert len(state["jobs"]) == 8 and all(len(chunk_jobs(env, i)) == 1 for i in (0, 1, 4, 5))
    assert state["cancelled"] == [three[0]["name"]]  # nothing else was cancelled
    # Never more jobs in flight than the pool's slots (checked up to the mark-failed: a chunk
    # marked failed frees its slot a moment before the triggerer cancels its job, so one more
    # job may be submitted in that moment), every one on the version pinned for the run.
    assert state["max_in_flight"] <= 3
    assert {j["environment"].rsplit("/environments/", 1)[-1] for j in state["jobs"].values()} == {
        f"vidstyle-scoring/versions/{version}"}
    assert {j["status"] for j in state["jobs"].values()} <= {"Completed", "Failed", "Canceled"}  # none left running
    check_the_result_and_its_cost(env, store, blob, run_id, state["jobs"])
    hand_a_trigger_to_a_second_triggerer(env, store, tmp_path, run_id)


def hand_a_trigger_to_a_second_triggerer(env: dict, store: BlobStore, tmp_path: Path, first_run: str) -> None:
    """Two triggerers: the one watching a chunk's running job freezes (a paused VM, a blocked event
    loop) past the health threshold, the second takes the trigger over, and the first, going on,
    finds the trigger no longer its own. Airflow 3.3.2 cancels it there as if a user had acted
    (on_kill): the job must be left running, watched by the second, and the chunk finish once."""
    blob = "incoming/azureml/handover.mp4"  # one chunk: its job is held Running by chunk 0's rule
    upload_with_event(store, make_video(tmp_path / "handover.mp4", seconds=CHUNK * 1001 / 30000, size="96x64"),
                      blob, Settings(container=store.container))
    run_id = wait_for("the second video's run", lambda: (sql(env, "select run_id from dag_run where dag_id = "
                                                                  "'video_stylize' and run_id <> %s", first_run)
                                                          or [[None]])[0][0], 600)

    def job() -> dict | None:
        return next((j for j in jobs_of(env).values() if j["tags"].get("airflow_run_id") == run_id), None)

    def watcher() -> int | None:  # the triggerer (its job id) the chunk's trigger is assigned to
        rows = sql(env, "select t.triggerer_id from task_instance ti join trigger t on t.id = ti.trigger_id "
                        "where ti.run_id = %s and ti.task_id = 'stylize_chunk'", run_id)
        return rows[0][0] if rows else None

    reads = wait_for("its job running and watched", lambda: (j := job()) and j["status"] == "Running"
                     and ti(env, run_id, 0)[0] == "deferred" and watcher() and j["reads"], 600, every=0.5)
    wait_for("the first triggerer to poll it", lambda: job()["reads"] > reads, 60, every=0.5)
    first = watcher()
    cluster("run", "triggerer2", env=env)
    cluster("pause", "triggerer", env=env)
    try:
        second = wait_for("the trigger handed to the second triggerer", lambda: (w := watcher()) != first and w,
                          180, every=1)
        reads = job()["reads"]
        wait_for("the second triggerer to poll the job", lambda: job()["reads"] > reads, 60, every=0.5)
    finally:
        cluster("resume", "triggerer", env=env)
    # Going on, the first triggerer cancels its copy of the trigger as if a user had acted, and
    # Airflow calls its on_kill: that must leave the job, which the second triggerer watches.
    logs = Path(env["AIRFLOW_HOME"]) / "logs" / "dag_id=video_stylize" / f"run_id={run_id}"
    first_log = logs / "task_id=stylize_chunk" / "map_index=0" / f"attempt=1.log.trigger.{first}.log"

    def killed_and_ended() -> bool:
        text = first_log.read_text() if first_log.is_file() else ""
        return "trigger completed" in text.partition("Trigger cancelled by user action, invoking on_kill")[2]
    wait_for("the first triggerer to end its copy through on_kill", killed_and_ended, 120, every=1)
    name = job()["name"]
    assert name not in steer(env, "state")["cancelled"], "the first triggerer's on_kill cancelled the healthy job"
    assert "handed to another triggerer" in first_log.read_text()  # and said why it left the job
    assert job()["status"] == "Running" and ti(env, run_id, 0)[0] == "deferred" and watcher() == second
    steer(env, f"jobs/{name}/release", "POST", {})
    wait_for("the second video", lambda: sql(env, "select state from dag_run where run_id = %s", run_id)[0][0]
             == "success", 600, every=2)
    assert [j["name"] for j in jobs_of(env).values() if j["tags"].get("airflow_run_id") == run_id] == [name]
    assert ti(env, run_id, 0) == ("success", 1)  # the second triggerer's event: no retry, no new job


def upload_model(store: BlobStore, tmp_path: Path) -> None:
    """A small stand-in TransformerNet in storage, where every job reads it through the datastore."""
    import torch

    from scoring.transformer_net import TransformerNet

    torch.manual_seed(0)
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), tmp_path / "standin.pth")
    store.upload(tmp_path / "standin.pth", "models/standin.pth")


def restart_the_triggerer_midway(env: dict, run_id: str) -> None:
    """Stop and start the triggerer while one of chunks 0 and 1 runs and the other waits for the
    node (which runs first is the scheduler's choice): both finish, neither is submitted again
    nor its task retried."""
    def running_and_queued():
        jobs = [chunk_jobs(env, i) for i in (0, 1)]
        return (all(jobs) and sorted(j[0]["status"] for j in jobs) == ["Queued", "Running"]
                and ti(env, run_id, 0)[0] == ti(env, run_id, 1)[0] == "deferred")
    wait_for("one of chunks 0 and 1 running, the other queued, both deferred", running_and_queued, 600, every=0.5)
    cluster("stop", "triggerer", env=env)
    time.sleep(3)
    cluster("run", "triggerer", env=env)
    for index in (0, 1):  # the queued one runs through once it gets the node
        steer(env, f"jobs/{chunk_jobs(env, index)[0]['name']}/release", "POST", {})
    for index in (0, 1):
        wait_for(f"chunk {index} after the restart", lambda i=index: ti(env, run_id, i)[0] == "success", 300)
        assert len(chunk_jobs(env, index)) == 1 and ti(env, run_id, index)[1] == 1


def mark_chunk_3_failed_then_clear_it(env: dict, run_id: str) -> None:
    """A user marks chunk 3, deferred on its running job, failed: the job is cancelled and the
    run, once the other chunks are done, fails. Cleared, chunk 3 gets a new job; the run succeeds."""
    def chunk_3_running():
        job = chunk_jobs(env, 3)
        return job and job[0]["status"] == "Running" and ti(env, run_id, 3)[0] == "deferred" and job[0]["reads"]
    reads = wait_for("chunk 3 running", chunk_3_running, 600, every=0.5)
    # Only once the triggerer watches the job: a task marked failed before its trigger starts is
    # never handed to on_kill by Airflow (the README's known limits; clearing it reattaches).
    wait_for("the triggerer to watch chunk 3's job", lambda: chunk_jobs(env, 3)[0]["reads"] > reads, 60, every=0.5)
    assert steer(env, "state")["max_in_flight"] <= 2  # the pool bounds the jobs in flight
    api(env, "PATCH", f"dagRuns/{run_id}/taskInstances/stylize_chunk/3", {"new_state": "failed"})
    try:
        cancelled = wait_for("chunk 3's job cancelled", lambda: steer(env, "state")["cancelled"], 120)
    except AssertionError as e:  # say what Airflow made of it
        rows = sql(env, "select map_index, state, trigger_id from task_instance where run_id = %s "
                        "and task_id = 'stylize_chunk' order by map_index", run_id)
        triggers = sql(env, "select id, triggerer_id, classpath from trigger")
        raise AssertionError(f"{e}; chunks {rows}; triggers {triggers}") from None
    assert cancelled == [chunk_jobs(env, 3)[0]["name"]]
    wait_for("the job to stop", lambda: chunk_jobs(env, 3)[0]["status"] == "Canceled", 60, every=0.5)

    def run_state():
        return sql(env, "select state from dag_run where run_id = %s", run_id)[0][0]
    assert wait_for("the run to end", lambda: run_state() in ("failed", "success") and run_state(), 900,
                    every=3) == "failed"
    api(env, "POST", "clearTaskInstances", {"dry_run": False, "dag_run_id": run_id, "only_failed": False,
                                            "task_ids": [["stylize_chunk", 3]], "include_downstream": True})
    wait_for("the cleared run to succeed", lambda: run_state() == "success", 900, every=3)


def check_the_result_and_its_cost(env: dict, store: BlobStore, blob: str, run_id: str, jobs: dict) -> None:
    """Every frame out, and what the video cost, the preempted and cancelled jobs included."""
    layout = Layout(Settings(container=env["CONTAINER"], default_style=env["AIRFLOW__VIDSTYLE__DEFAULT_STYLE"]))
    manifest = store.read_json(layout.outputs(blob, layout.default_output())["manifest"])
    assert manifest["frames"] == FRAMES and len(manifest["chunks"]) == FRAMES // CHUNK
    cost = manifest["azureml"]
    assert (cost["jobs"], cost["retried_jobs"], cost["vm_size"]) == (8, 2, "Standard_NC4as_T4_v3")
    assert {c["azureml"]["job"] for c in manifest["chunks"]} == {
        j["name"] for j in jobs.values() if j["status"] == "Completed"}
    node = sum(j["ended"] - j["started"] for j in jobs.values() if j["started"])
    assert cost["node_seconds"] == pytest.approx(node, abs=0.1)
    assert cost["cost"] == pytest.approx(node / 3600 * 0.36, rel=1e-2)
    logs = Path(env["AIRFLOW_HOME"]) / "logs"
    publish_log = "".join(p.read_text() for p in logs.rglob("*.log") if "task_id=publish" in str(p)
                          and run_id in str(p))
    assert "Azure ML: 8 jobs (2 of them retries)" in publish_log and "estimated cost" in publish_log
