"""Arrivals by event on the CeleryExecutor cluster: uploads announced through Azurite's queue as
Event Grid announces them, read by the asset watcher in a real triggerer, with duplicates,
unrelated and malformed messages, the triggerer killed and restarted in the middle, and an
upload whose event was lost found by the daily sweep. Every video gets exactly one run.

``video_stylize`` is paused: its runs are created (what this test is about) and wait there.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.cluster.test_cluster import CLUSTER, cluster, sql, wait_for
from tests.cluster.test_run_states import api, sweep
from tests.support import upload_with_event
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.hooks.queue_store import QueueStore, poison_queue
from vidstyle.pipeline.arrival_events import event_grid_event, queue_message
from vidstyle.pipeline.identity import current_video
from vidstyle.pipeline.settings import Settings, arrivals_queue

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def env():
    tag = uuid.uuid4().hex[:8]
    container = f"arrive-{tag}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "VIDSTYLE_CLUSTER_DB": f"airflow_arrive_{tag}", "VIDSTYLE_CLUSTER_CONTAINER": container,
        "AIRFLOW__VIDSTYLE__ARRIVALS_POLL_SECONDS": "1",
        # A message read by a triggerer that then dies shows again after ack timeout + 10 s.
        "AIRFLOW__TRIGGERER__SHARED_STREAM_ACK_TIMEOUT": "15"}
    cluster("reset", env=base)
    cluster_env = dict(line.split("=", 1) for line in cluster("env", env=base).split("\0") if "=" in line)
    try:
        yield cluster_env | {"CONTAINER": container, "TAG": tag}
    finally:
        for what in ("stop", "drop"):
            subprocess.run([*CLUSTER, what], env=base, capture_output=True, timeout=300)


def runs_of(env: dict, video_id: str) -> list[str]:
    return [r for (r,) in sql(env, "select run_id from dag_run where dag_id = 'video_stylize' and run_id like %s",
                              f"%{video_id}%")]


def test_every_upload_gets_exactly_one_run_through_duplicates_noise_a_triggerer_restart_and_a_lost_event(
        env, tmp_path):
    settings = Settings(container=env["CONTAINER"])
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()
    queues, queue = QueueStore(settings.wasb_conn_id), arrivals_queue(settings)
    cluster("start", "1", env=env, timeout=900)
    wait_for("the DAGs parsed", lambda: sql(env, "select 1 from dag where dag_id = 'video_stylize'"), 300)
    api(env, "PATCH", "dags/video_stylize", {"is_paused": True})

    def upload(name: str, event: bool = True) -> str:
        f = tmp_path / name
        f.write_bytes(f"content of {name}".encode())
        blob = f"incoming/arrivals/{name}"
        upload_with_event(store, f, blob, settings) if event else store.upload(f, blob)
        return blob

    def post(container: str, blob: str) -> None:
        queues.send(queue, queue_message(event_grid_event("devstoreaccount1", container, blob, "0x1", 1)))

    first = [upload(f"first-{i}.mp4") for i in range(3)]
    post(settings.container, first[0])  # at least once: the same upload announced twice
    post(settings.container, "incoming/arrivals/readme.txt")  # not a video
    post("someone-elses", "incoming/arrivals/x.mp4")  # another container
    queues.send(queue, "this is not an event")  # malformed: to the poison queue
    post(settings.container, first[1])
    ids = {b: current_video(store, b).video_id for b in first}
    wait_for("a run for each of the first uploads", lambda: all(runs_of(env, i) for i in ids.values()), 300)

    # The triggerer dies at once (messages may be read and not yet settled), uploads arrive
    # while it is down, one announced twice; a new triggerer reads what is waiting.
    cluster("kill", "triggerer", env=env)
    second = [upload(f"second-{i}.mp4") for i in range(2)]
    post(settings.container, second[0])
    cluster("run", "triggerer", env=env)
    ids |= {b: current_video(store, b).video_id for b in second}
    wait_for("a run for each upload after the restart", lambda: all(runs_of(env, i) for i in ids.values()), 300)

    # An upload whose event never reached Airflow: no run until the daily sweep finds it.
    lost = upload("lost.mp4", event=False)
    ids[lost] = current_video(store, lost).video_id
    wait_for("the queue drained", lambda: queues.length(queue) == 0, 120)
    assert runs_of(env, ids[lost]) == []
    sweep(env, env["TAG"])
    wait_for("the sweep's run for the lost upload", lambda: runs_of(env, ids[lost]), 120)

    for blob, video_id in ids.items():
        assert len(runs_of(env, video_id)) == 1, (blob, runs_of(env, video_id))
    assert sql(env, "select count(*) from dag_run where dag_id = 'video_stylize'") == [(len(ids),)]
    assert queues.peek(poison_queue(queue)) == ["this is not an event"]
    failed = sql(env, "select run_id from dag_run where dag_id = 'video_arrivals' and state = 'failed'")
    assert failed == [], failed
