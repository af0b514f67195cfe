"""Run states as Airflow's own processes report them, not as a test hands them in: the claims,
the daily sweep's reconcile and a backfill's, on the CeleryExecutor cluster (``vidstyle cluster``:
scheduler, DAG processor, API server, triggerer and a Celery worker on one PostgreSQL database).

The Task SDK answers a run's state as its own ``DagRunState`` enum, whose ``str()`` is
``'DagRunState.RUNNING'``: compared as a string, every run looked ended, so every claim was
broken at once and every sweep marked the runs in flight failed and started them again.

- Two runs of one video that would write the same result: the second waits at
  ``claim_output`` (up for reschedule, holding no worker slot) until the first has published,
  then writes its own.
- While the first is in its chunks, a ``video_backlog`` run and a backfill leave both runs and
  their ledger entry alone and start nothing.
- A run killed outright while it scores (its worker lost with SIGKILL) and then gone from
  Airflow (a database restored from a backup, a run deleted by hand) is still found by the next
  sweep, marked failed, and its video started again.
Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.cluster.test_cluster import CLUSTER, cluster, sql, wait_for
from tests.support import make_video, upload_with_event
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.identity import current_video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import FAILED, SUCCEEDED, Ledger
from vidstyle.pipeline.reconcile import ENDED_UNSAID
from vidstyle.pipeline.settings import Settings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]

# One scoring slot and several small chunks. Once a run scores its first chunk the test holds it
# there: the pool goes to 0 slots (through the REST API), so no further chunk starts and the run
# stays running, whatever the machine's speed, until the test gives the slot back.
FRAMES, CHUNK = 24, 4
POOL = Settings().scoring_pool


@pytest.fixture(scope="module")
def env():
    tag = uuid.uuid4().hex[:8]
    container = f"turns-{tag}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "VIDSTYLE_CLUSTER_DB": f"airflow_turns_{tag}", "VIDSTYLE_CLUSTER_CONTAINER": container,
        "AIRFLOW__VIDSTYLE__SCORING_POOL_SLOTS": "1", "VIDSTYLE_WORKER_CONCURRENCY": "4",
        "AIRFLOW__CORE__PARALLELISM": "16",
        "AIRFLOW__VIDSTYLE__CHUNK_FRAMES": str(CHUNK), "AIRFLOW__VIDSTYLE__LOCAL_COMPILE": "False",
        "AIRFLOW__VIDSTYLE__SENSOR_POKE_SECONDS": "5", "AIRFLOW__VIDSTYLE__CLAIM_POKE_SECONDS": "3",
        "AIRFLOW__VIDSTYLE__DEFAULT_STYLE": f"wasb://{container}/models/standin.pth"}
    cluster("reset", env=base)
    cluster_env = dict(line.split("=", 1) for line in cluster("env", env=base).split("\0") if "=" in line)
    try:
        yield cluster_env | {"CONTAINER": container}
    finally:
        for what in ("stop", "drop"):
            subprocess.run([*CLUSTER, what], env=base, capture_output=True, timeout=300)


def api(env: dict, method: str, path: str, body: dict | None = None) -> dict:
    port = env.get("VIDSTYLE_CLUSTER_API_PORT", "8090")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def ti_state(env: dict, run_id: str, task_id: str, map_index: int = -1) -> str | None:
    rows = sql(env, "select state from task_instance where dag_id = 'video_stylize' and run_id = %s and "
                    "task_id = %s and map_index = %s", run_id, task_id, map_index)
    return rows[0][0] if rows else None


def run_state(env: dict, dag_id: str, run_id: str) -> str | None:
    rows = sql(env, "select state from dag_run where dag_id = %s and run_id = %s", dag_id, run_id)
    return rows[0][0] if rows else None


def scoring(env: dict, run_id: str) -> bool:
    return bool(sql(env, "select 1 from task_instance where run_id = %s and task_id = 'stylize_chunk' and "
                         "state = 'running'", run_id))


def runs_of(env: dict, video_id: str) -> list[str]:
    return [r for (r,) in sql(env, "select run_id from dag_run where dag_id = 'video_stylize' and run_id like %s",
                              f"%{video_id}%")]


def sweep(env: dict, tag: str) -> str:
    """A ``video_backlog`` run over today's uploads (a daily run covers a day once it is over; the
    scheduler starts no run dated in the future, so this one names its interval), to its end."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    run = api(env, "POST", "dags/video_backlog/dagRuns", {
        "dag_run_id": f"sweep__{tag}", "logical_date": datetime.now(UTC).isoformat(),
        "data_interval_start": today.isoformat(), "data_interval_end": (today + timedelta(days=1)).isoformat()})
    run_id = run["dag_run_id"]
    assert wait_for("the sweep", lambda: run_state(env, "video_backlog", run_id) in ("success", "failed")
                    and run_state(env, "video_backlog", run_id), 300) == "success"
    return run_id


@pytest.fixture(scope="module")
def up(env, tmp_path_factory):
    """The cluster running, the stand-in model in storage (every chunk reads it from there)."""
    import torch

    from scoring.transformer_net import TransformerNet

    store = BlobStore("wasb_default", env["CONTAINER"])
    store.ensure_container()
    torch.manual_seed(0)
    model = tmp_path_factory.mktemp("model") / "standin.pth"
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), model)
    store.upload(model, "models/standin.pth")
    cluster("start", "1", env=env, timeout=900)
    layout = Layout(Settings(container=env["CONTAINER"], default_style=env["AIRFLOW__VIDSTYLE__DEFAULT_STYLE"]))
    return store, layout, Ledger(store, layout)


def scoring_slots(env: dict, slots: int) -> None:
    """0: the run in its chunks is held there (the chunk scoring ends, no other starts); 1: released."""
    body = {"pool": POOL, "slots": slots, "include_deferred": True}  # the API asks for all three; only slots changes
    assert api(env, "PATCH", f"pools/{POOL}?update_mask=slots", body)["slots"] == slots


def upload_and_wait_for_its_chunks(env: dict, store: BlobStore, blob: str, tmp_path) -> tuple:
    """An upload, the watcher's run for it, and that run scoring its chunks, held there."""
    upload_with_event(store, make_video(tmp_path / "v.mp4", seconds=FRAMES * 1001 / 30000, size="96x64",
                                        audio=False), blob, Settings(container=store.container))
    video = current_video(store, blob)
    run_id = wait_for("the watcher's run", lambda: runs_of(env, video.video_id), 300)[0]
    wait_for("the run in its chunks", lambda: scoring(env, run_id), 600, every=0.5)
    scoring_slots(env, 0)
    return video, run_id


def test_a_second_run_of_the_same_result_waits_its_turn_and_the_sweeps_leave_both_alone(env, up, tmp_path):
    store, layout, ledger = up
    blob = "incoming/turns/take.mp4"
    video, first = upload_and_wait_for_its_chunks(env, store, blob, tmp_path)
    second = api(env, "POST", "dags/video_stylize/dagRuns", {  # the same video and settings, by hand
        "dag_run_id": f"manual__same-{uuid.uuid4().hex[:6]}", "logical_date": None,
        "conf": {"video_blob": blob, "video_version": video.version}})["dag_run_id"]
    waiting = wait_for("the second run's claim_output", lambda: ti_state(env, second, "claim_output") in (
        "up_for_reschedule", "success", "failed") and ti_state(env, second, "claim_output"), 300, every=0.5)
    assert waiting == "up_for_reschedule", f"the second run's claim_output ended {waiting} while the first scored"
    outputs = layout.outputs(blob, layout.default_output())
    claim = layout.claim(outputs["video"])
    assert store.read_json(claim)["run_id"] == first

    # Both sweeps while the first run scores: a daily run over today, and a backfill of a past day
    # (one the scheduler has not run: it starts only the latest day at start-up).
    sweep(env, "while-scoring")
    past = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    cluster("airflow", "backfill", "create", "--dag-id", "video_backlog", "--from-date", past, "--to-date", past,
            env=env)
    wait_for("the backfill", lambda: sql(env, "select state from dag_run where dag_id = 'video_backlog' and "
                                              "run_type = 'backfill'") == [("success",)], 300)
    assert run_state(env, "video_stylize", first) == "running"  # held in its chunks
    entry = ledger.get(video.video_id)
    assert {entry["runs"][first]["status"], entry["runs"][second]["status"]} <= {"queued", "running"}, entry["runs"]
    assert ENDED_UNSAID not in json.dumps(entry)
    assert runs_of(env, video.video_id) == [first]  # nothing started again
    assert store.read_json(claim)["run_id"] == first and ti_state(env, second, "split") is None

    # Released: the first publishes, then the second takes its turn and writes its own result.
    scoring_slots(env, 1)
    for run_id in (first, second):
        assert wait_for(f"run {run_id}", lambda r=run_id: run_state(env, "video_stylize", r) in ("success", "failed")
                        and run_state(env, "video_stylize", r), 900, every=2) == "success"
    [(published,)] = sql(env, "select end_date from task_instance where run_id = %s and task_id = 'publish'", first)
    [(split,)] = sql(env, "select start_date from task_instance where run_id = %s and task_id = 'split'", second)
    assert split > published
    assert store.read_json(outputs["manifest"])["run_id"] == second
    entry = ledger.get(video.video_id)
    assert entry["runs"][first]["status"] == entry["runs"][second]["status"] == SUCCEEDED
    assert entry["outputs"][layout.default_output().key]["run_id"] == second


def test_a_run_killed_outright_is_found_by_the_next_sweep_and_started_again(env, up, tmp_path):
    store, _, ledger = up
    video, lost = upload_and_wait_for_its_chunks(env, store, "incoming/turns/lost.mp4", tmp_path)
    # Killed outright: the worker's machine lost mid-chunk, so nothing of the run records how it
    # ended; someone gives the run up (marks it failed) and removes it from Airflow (as a database
    # restored from a backup would). The ledger still says it runs.
    cluster("kill", "worker1", env=env)
    api(env, "PATCH", f"dags/video_stylize/dagRuns/{lost}", {"state": "failed"})
    api(env, "DELETE", f"dags/video_stylize/dagRuns/{lost}")
    cluster("run", "worker1", env=env)
    time.sleep(5)
    assert ledger.get(video.video_id)["runs"][lost]["status"] == "running"
    sweep(env, "after-a-lost-run")
    scoring_slots(env, 1)
    entry = ledger.get(video.video_id)
    assert entry["runs"][lost]["status"] == FAILED and entry["runs"][lost]["error"] == ENDED_UNSAID
    assert any(r.startswith(lost + "__re__") for r in runs_of(env, video.video_id))  # started again
