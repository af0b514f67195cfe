"""The pipeline on a real distributed executor: Airflow's CeleryExecutor with PostgreSQL and
Redis, and the API server, scheduler, DAG processor, triggerer and two Celery workers as
separate processes (``vidstyle cluster``), each worker with its own hostname and scratch folder.

Twenty uploads go through the watcher. Mid-run one worker is killed with SIGKILL while it
scores a chunk (its whole process group, as if its machine vanished), and the scheduler is
stopped and started again. Every video must come out exactly once, the killed chunk retried on
the other worker, and that video's result byte for byte what an undisturbed run gives. Every
wait has a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support import make_video, upload_with_event
from vidstyle.cli.cluster_run import sql  # the cluster's database, as the benchmarks query it
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.identity import find_videos
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import SUCCEEDED, Ledger

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2700)]

VIDEOS = 20
CLUSTER = [sys.executable, "-m", "vidstyle.cli.main", "cluster"]


def cluster(*args: str, env: dict, timeout: float = 600) -> str:
    done = subprocess.run([*CLUSTER, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"vidstyle cluster {' '.join(args)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done.stdout


def wait_for(what: str, check, timeout: float, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {timeout:.0f} s"
        time.sleep(every)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A fresh cluster (its own database and container), stopped at the end whatever happens."""
    tag = uuid.uuid4().hex[:8]
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "VIDSTYLE_CLUSTER_DB": f"airflow_cluster_{tag}", "VIDSTYLE_CLUSTER_CONTAINER": f"cluster-{tag}",
        "AIRFLOW__VIDSTYLE__CHUNK_FRAMES": "15", "AIRFLOW__VIDSTYLE__SENSOR_POKE_SECONDS": "5",
        "AIRFLOW__VIDSTYLE__CLAIM_POKE_SECONDS": "5", "AIRFLOW__VIDSTYLE__MAX_ACTIVE_VIDEOS": "4"}
    model = f"wasb://cluster-{tag}/models/standin.pth"  # read by every chunk from storage: no shared disk
    base["AIRFLOW__VIDSTYLE__DEFAULT_STYLE"] = model
    cluster("reset", env=base)
    cluster_env = dict(line.split("=", 1) for line in cluster("env", env=base).split("\0") if "=" in line)
    try:
        yield cluster_env | {"MODEL": model, "TAG": tag}
    finally:
        subprocess.run([*CLUSTER, "stop"], env=base, capture_output=True, timeout=300)
        subprocess.run([*CLUSTER, "drop"], env=base, capture_output=True, timeout=300)


def test_twenty_videos_on_two_workers_survive_a_lost_worker_and_a_scheduler_restart(env, tmp_path):
    import torch

    from scoring.transformer_net import TransformerNet

    store = BlobStore("wasb_default", env["AIRFLOW__VIDSTYLE__CONTAINER"])
    store.ensure_container()
    torch.manual_seed(0)
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), tmp_path / "standin.pth")
    store.upload(tmp_path / "standin.pth", "models/standin.pth")
    cluster("start", "2", env=env, timeout=900)

    sources = {}
    for i in range(VIDEOS):  # each its own content: 30 to 49 frames, two or three chunks
        path = make_video(tmp_path / f"upload-{i:02d}.mp4", seconds=(30 + i) * 1001 / 30000, size="96x64")
        upload_with_event(store, path, f"incoming/batch/upload-{i:02d}.mp4", _settings(env))
        sources[f"incoming/batch/upload-{i:02d}.mp4"] = path

    # A worker lost mid-chunk: once both have done work, wait until one is scoring, then kill it
    # with everything it started.
    def both_at_work():
        return len(sql(env, "select distinct hostname from task_instance where dag_id = 'video_stylize' "
                            "and state = 'success' and hostname like 'worker%%'")) == 2
    wait_for("both workers at work", both_at_work, 900)

    def chunk_in_flight():
        rows = sql(env, "select run_id, map_index, hostname from task_instance where dag_id = 'video_stylize' "
                        "and task_id = 'stylize_chunk' and state = 'running' and hostname like 'worker%%'")
        return rows[0] if rows else None

    run_id, map_index, lost = wait_for("a chunk running on a worker", chunk_in_flight, 900, every=0.5)
    cluster("kill", lost, env=env)
    survivor = "worker2" if lost == "worker1" else "worker1"

    # The scheduler stopped and started mid-run.
    time.sleep(5)
    cluster("kill", "scheduler", env=env)
    time.sleep(5)
    cluster("run", "scheduler", env=env)

    def retried_elsewhere():
        rows = sql(env, "select state, hostname, try_number from task_instance where dag_id = 'video_stylize' "
                        "and task_id = 'stylize_chunk' and run_id = %s and map_index = %s", run_id, map_index)
        return rows and rows[0][0] == "success" and rows[0]
    _, host, tries = wait_for("the lost chunk to be retried", retried_elsewhere, 900)
    assert host == survivor and tries >= 2
    cluster("run", lost, env=env)  # the machine comes back

    ledger = Ledger(store, Layout(_settings(env)))

    def all_done():
        videos = find_videos(store, "incoming/", (".mp4",))
        entries = [ledger.get(v.video_id) for v in videos]
        finished = sql(env, "select count(*) from dag_run where dag_id = 'video_stylize' and state = 'success'")
        return (len(videos) == VIDEOS and all(e and e["status"] == SUCCEEDED for e in entries)
                and finished[0][0] >= VIDEOS and entries)  # published, and every run's cleanup done
    entries = wait_for("all twenty videos", all_done, 1800, every=5)

    # Exactly once: one run per video in Airflow and in the ledger, one result each.
    runs = sql(env, "select run_id, state, conf from dag_run where dag_id = 'video_stylize'")
    assert len(runs) == VIDEOS and {r[1] for r in runs} == {"success"}
    assert sorted(json.loads(r[2])["video_blob"] if isinstance(r[2], str) else r[2]["video_blob"]
                  for r in runs) == sorted(sources)
    for entry in entries:
        assert [r for r in entry["runs"].values() if r["status"] == SUCCEEDED] == [
            entry["runs"][entry["run_id"]]] and len(entry["runs"]) == 1
    hosts = {h for (h,) in sql(env, "select hostname from task_instance where dag_id = 'video_stylize' union "
                                    "select hostname from task_instance_history where dag_id = 'video_stylize'")}
    assert {"worker1", "worker2"} <= hosts  # spread over both
    outputs = [b.name for b in store.list("outputs/") if b.name.endswith(".mp4")]
    assert len(outputs) == VIDEOS

    # The video whose chunk was lost comes out as an undisturbed run makes it, byte for byte.
    blob = next(json.loads(c)["video_blob"] if isinstance(c, str) else c["video_blob"]
                for r, _, c in runs if r == run_id)
    got = store.download(Layout(_settings(env)).outputs(blob, Layout(_settings(env)).default_output())["video"],
                         tmp_path / "got.mp4").read_bytes()
    assert got == _undisturbed(sources[blob], env, tmp_path)


def _settings(env: dict):
    from vidstyle.pipeline.settings import Settings

    return Settings(container=env["AIRFLOW__VIDSTYLE__CONTAINER"], default_style=env["MODEL"])


def _undisturbed(video: Path, env: dict, tmp_path: Path) -> bytes:
    """The same video through the embedded default (dag.test in a process of its own), same settings."""
    out = tmp_path / "reference"
    local = {k: v for k, v in os.environ.items()} | {
        "AIRFLOW__VIDSTYLE__CONTAINER": env["AIRFLOW__VIDSTYLE__CONTAINER"] + "-ref",
        "AIRFLOW__VIDSTYLE__CHUNK_FRAMES": "15", "AIRFLOW__VIDSTYLE__DEFAULT_STYLE": env["MODEL"]}
    BlobStore("wasb_default", local["AIRFLOW__VIDSTYLE__CONTAINER"]).ensure_container()
    done = subprocess.run([sys.executable, "-m", "vidstyle.cli.main", "run", str(video), "--out", str(out)], env=local,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1]).read_bytes()
