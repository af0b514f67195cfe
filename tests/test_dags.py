"""The DAGs as Airflow runs them: parsing, the REST API's param checks, and real dag.test() runs
against Azurite. dag.test runs a deferred sensor's trigger inline and ignores its timeout, so
every test here has a hard pytest timeout."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pendulum
import pytest
from conftest import make_video

from vidstyle.config import load_settings
from vidstyle.layout import Layout, Video
from vidstyle.ledger import FAILED, QUEUED, SUCCEEDED, Ledger
from vidstyle.localrun import load_dag

DAG_IDS = {"video_stylize", "video_arrivals", "video_backlog"}


pytestmark = pytest.mark.usefixtures("serialized_dags")


def relative_times(path) -> list[Fraction]:
    from vidstyle.media import video_times

    times, _ = video_times(path)
    return [t - times[0] for t in times]


def stylize_runs(video_ids: set[str]) -> dict[str, dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "video_stylize", DagRun.run_id.like("video__%")).all()
        return {r.run_id: r.conf for r in runs if r.run_id.removeprefix("video__").split("__")[0] in video_ids}


def task_states(dagrun) -> dict[str, tuple[str, int]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dagrun.dag_id,
                                                 TaskInstance.run_id == dagrun.run_id).all()
        return {f"{t.task_id}[{t.map_index}]" if t.map_index >= 0 else t.task_id: (str(t.state), t.try_number)
                for t in tis}


def test_dags_parse_without_errors():
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    assert bag.import_errors == {}
    assert DAG_IDS <= set(bag.dags)


def test_processing_dag_reads_like_the_pipeline():
    dag = load_dag("video_stylize")
    order = ["start", "split", "stylize_chunk", "stitch", "publish", "cleanup"]
    for up, down in itertools.pairwise(order):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down}"
    assert {"split"} == dag.get_task("extract_audio").upstream_task_ids - {"start"}
    assert {"extract_audio", "stylize_chunk"} <= dag.get_task("stitch").upstream_task_ids
    chunk = dag.get_task("stylize_chunk")
    assert chunk.pool == load_settings().scoring_pool and chunk.retries >= 1
    assert "chunk_label" in chunk.map_index_template
    assert dag.max_active_runs == load_settings().max_active_videos


def test_watcher_begins_with_a_deferrable_wasb_sensor():
    from airflow.providers.microsoft.azure.sensors.wasb import WasbPrefixSensor

    dag = load_dag("video_arrivals")
    first = [t for t in dag.tasks if not t.upstream_task_ids]
    assert len(first) == 1 and isinstance(first[0], WasbPrefixSensor) and first[0].deferrable
    assert dag.max_active_runs == 1


@pytest.fixture(scope="module")
def api():
    import os

    from fastapi.testclient import TestClient

    os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", "test-only-" + "x" * 64)
    from airflow.api_fastapi.app import create_app

    return TestClient(create_app(apps="core"))


@pytest.mark.parametrize(("conf", "complaint"), [
    ({}, "video_blob"),
    ({"video_blob": "incoming/notes.txt"}, "video_blob"),
    ({"video_blob": "incoming/a.mp4", "chunk_frames": 0}, "chunk_frames: 0 is less than the minimum of 1"),
    ({"video_blob": "incoming/a.mp4", "chunk_frames": "lots"}, "chunk_frames"),
    ({"video_blob": "incoming/a.mp4", "output_height": 721}, "output_height: 721 is not a multiple of 2"),
    ({"video_blob": "incoming/a.mp4", "crf": 60}, "crf: 60 is greater than the maximum of 51"),
    ({"video_blob": "incoming/a.mp4", "backend": "cloud9"}, "backend: 'cloud9' is not one of"),
    ({"video_blob": "incoming/a.mp4", "output_prefix": "no-slash"}, "output_prefix"),
])
def test_the_api_refuses_bad_params_with_a_clear_message(api, conf, complaint):
    r = api.post("/api/v2/dags/video_stylize/dagRuns", json={"logical_date": None, "conf": conf})
    assert r.status_code == 400, r.text
    assert complaint in r.json()["detail"]


def test_the_api_accepts_a_good_form(api):
    r = api.post("/api/v2/dags/video_stylize/dagRuns", json={
        "logical_date": None, "dag_run_id": f"formcheck-{datetime.now(UTC).timestamp()}",
        "conf": {"video_blob": "incoming/Holiday 2024.MOV", "chunk_frames": 120, "output_height": 720}})
    assert r.status_code == 200, r.text
    assert r.json()["conf"]["output_height"] == 720


@pytest.mark.timeout(300)
def test_watcher_starts_exactly_one_run_per_uploaded_video(store, tmp_path):
    f = tmp_path / "clip.mp4"
    for i in range(20):
        f.write_bytes(f"clip {i}".encode())
        store.upload(f, f"incoming/batch/clip{i}.mp4")
    store.upload(f, "incoming/batch/readme.txt")
    assert str(load_dag("video_arrivals").test().state) == "success"
    videos = {v.blob: v for v in store.videos("incoming/", load_settings().suffixes)}
    ids = {v.video_id for v in videos.values()}
    runs = stylize_runs(ids)
    assert len(runs) == 20
    assert sorted(c["video_blob"] for c in runs.values()) == sorted(videos)
    ledger = Ledger(store, Layout(load_settings()))
    assert {ledger.get(i)["status"] for i in ids} == {QUEUED}

    # Same bytes again: nothing new. New bytes: a new video. A lost ledger entry (a crash
    # between trigger and record): found again, but its run already exists, so no second run.
    f.write_bytes(b"clip 0")
    store.upload(f, "incoming/batch/clip0.mp4")
    f.write_bytes(b"clip 1, edited")
    store.upload(f, "incoming/batch/clip1.mp4")
    store.hook.delete_file(store.container, Layout(load_settings()).state(videos["incoming/batch/clip2.mp4"].video_id))
    assert str(load_dag("video_arrivals").test().state) == "success"
    edited = store.video("incoming/batch/clip1.mp4")
    runs = stylize_runs(ids | {edited.video_id})
    assert len(runs) == 21
    assert edited.run_id in runs
    assert ledger.get(videos["incoming/batch/clip2.mp4"].video_id)["status"] == QUEUED


@pytest.mark.timeout(300)
def test_backlog_starts_runs_for_unprocessed_videos_of_the_day(store, tmp_path):
    f = tmp_path / "v.mp4"
    for name in ("fresh", "done", "broken"):
        f.write_bytes(name.encode())
        store.upload(f, f"incoming/{name}.mp4")
    videos = {v.blob.split("/")[-1][:-4]: v for v in store.videos("incoming/", (".mp4",))}
    ledger = Ledger(store, Layout(load_settings()))
    ledger.mark(videos["done"], SUCCEEDED)
    ledger.mark(videos["broken"], FAILED, error="earlier failure")
    ids = {v.video_id for v in videos.values()}
    # A manual run of a daily DAG covers the last complete day: pick "tomorrow" so it is today.
    tomorrow = pendulum.now("UTC").start_of("day") + timedelta(days=1, minutes=1)

    assert str(load_dag("video_backlog").test(logical_date=tomorrow).state) == "success"
    runs = stylize_runs(ids)
    assert videos["fresh"].run_id in runs
    assert any(r.startswith(videos["broken"].run_id + "__re__") for r in runs)
    assert not any(r.startswith(videos["done"].run_id) for r in runs)
    assert len(runs) == 2

    dr = load_dag("video_backlog").test(logical_date=tomorrow + timedelta(seconds=1),
                                        run_conf={"reprocess": True, "style": "pop-art"})
    assert str(dr.state) == "success"
    runs = stylize_runs(ids)
    assert len(runs) == 5
    assert sum(1 for r in runs if r.startswith(videos["done"].run_id + "__re__")) == 1
    assert all(c.get("style") == "pop-art" for r, c in runs.items() if "__re__" in r and "broken" not in r)


@pytest.mark.timeout(600)
def test_end_to_end_video_with_audio(store, tmp_path):
    from vidstyle import media

    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size="96x64", rate="30000/1001")
    store.upload(src, "incoming/e2e/clip.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/e2e/clip.mp4", "chunk_frames": 8})
    states = task_states(dr)
    assert str(dr.state) == "success", states
    assert sum(1 for k in states if k.startswith("stylize_chunk[")) == 4  # 30 frames: 8+8+8+6

    outputs = Layout(load_settings()).outputs("incoming/e2e/clip.mp4", load_settings().default_style)
    out = store.download(outputs["video"], tmp_path / "out.mp4")
    assert relative_times(out) == relative_times(src) == [Fraction(1001 * i, 30000) for i in range(30)]
    src_start, src_end = media.audio_span(src)
    out_start, out_end = media.audio_span(out)
    times, _ = media.video_times(out)
    assert abs(out_start - times[0] - src_start) <= Fraction(1, 1000)  # heard in sync (source: first frame at 0)
    assert abs((out_end - out_start) - (src_end - src_start)) <= Fraction(1, 1000)  # as long, none cut off

    manifest = store.read_json(outputs["manifest"])
    assert manifest["frames"] == 30 and manifest["frame_rate"] == "30000/1001" and len(manifest["chunks"]) == 4
    assert [c["frames"] for c in manifest["chunks"]] == [8, 8, 8, 6]
    assert all(c["seconds"] > 0 and c["fps"] > 0 and c["encoder"] == "libx264" for c in manifest["chunks"])
    assert manifest["scoring"]["frames_per_second"] > 0
    assert manifest["output"]["audio"]["duration"] == pytest.approx(manifest["output"]["audio"]["source_duration"],
                                                                    abs=1e-3)
    storage = manifest["storage"]
    assert storage["split"]["read"] == src.stat().st_size and storage["chunks_in"] > 0
    assert storage["total"] == sum(storage[k]["read"] + storage[k]["written"] for k in ("split", "audio", "stitch")) \
        + storage["chunks_in"] + storage["chunks_out"]
    assert store.exists(outputs["preview"])
    video = store.video("incoming/e2e/clip.mp4")
    assert store.list(Layout(load_settings()).video_work(video.video_id)) == []  # work removed on success
    assert Ledger(store, Layout(load_settings())).get(video.video_id)["status"] == SUCCEEDED


@pytest.mark.timeout(600)
def test_end_to_end_variable_frame_rate_without_audio_keeping_work(store, tmp_path):
    from scoring.chunk import ChunkSpec

    src = make_video(tmp_path / "vfr.mkv", seconds=1.0, size="64x48", vfr=True)
    store.upload(src, "incoming/vfr.mkv")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/vfr.mkv", "keep_work": True,
                                                  "chunk_frames": 100})
    states = task_states(dr)
    assert str(dr.state) == "success", states
    assert states["extract_audio"][0] == "skipped"
    outputs = Layout(load_settings()).outputs("incoming/vfr.mkv", load_settings().default_style)
    out = store.download(outputs["video"], tmp_path / "out.mp4")
    assert relative_times(out) == relative_times(src) and len({b - a for a, b in itertools.pairwise(
        relative_times(src))}) > 1  # variable, and exactly the source's
    video = store.video("incoming/vfr.mkv")
    area = Layout(load_settings()).work(video.video_id, dr.run_id)
    assert store.exists(area.plan)  # keep_work kept it
    spec = ChunkSpec.from_json(store.hook.download(store.container, area.chunk_file(0, "in", "chunk.json")).readall())
    assert spec.frames == len(relative_times(src)) and store.exists(area.chunk_file(0, "out", "segment.mp4"))


@pytest.mark.timeout(300)
def test_a_broken_video_fails_its_own_run_at_once_and_says_why(store, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"definitely not a video")
    store.upload(tmp_path / "broken.mp4", "incoming/broken.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/broken.mp4"})
    states = task_states(dr)
    assert str(dr.state) == "failed"
    assert states["split"] == ("failed", 1)  # no retries for bad input
    assert states["stitch"][0] == "upstream_failed"
    entry = Ledger(store, Layout(load_settings())).get(store.video("incoming/broken.mp4").video_id)
    assert entry["status"] == FAILED
    assert "incoming/broken.mp4" in entry["error"] and "split" in entry["error"]
    assert "not a readable video" in entry["error"]
    assert store.list(Layout(load_settings()).video_work(entry["video_id"])) == []  # nothing half-made


@pytest.mark.timeout(300)
def test_an_unknown_model_fails_before_any_work(store, tmp_path):
    store.upload(make_video(tmp_path / "ok.mp4", audio=False), "incoming/ok.mp4")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/ok.mp4", "style": "van-gogh-missing"})
    assert str(dr.state) == "failed"
    assert task_states(dr)["start"] == ("failed", 1)
    entry = Ledger(store, Layout(load_settings())).get(store.video("incoming/ok.mp4").video_id)
    assert "van-gogh-missing" in entry["error"] and "not a built-in model" in entry["error"]


def test_a_failed_chunk_names_the_video_the_chunk_and_the_cause(store):
    from vidstyle.backends import ChunkTask
    from vidstyle.operators import StylizeChunkOperator

    task = ChunkTask(conn_id=load_settings().wasb_conn_id, container=store.container, video_blob="incoming/x.mp4",
                     video_id="x-123", chunk_index=2, chunk_label="chunk 3/4, frames 16-23", frames=8,
                     input_dir="work/x-123/chunks/00002/in/", output_dir="work/x-123/chunks/00002/out/",
                     model="pop-art", batch_size=2)
    op = StylizeChunkOperator(task_id="t", work=task.to_dict() | {"backend": "local"})
    with pytest.raises(RuntimeError) as err:
        op.execute({})
    message = str(err.value)
    assert "incoming/x.mp4" in message and "chunk 3/4, frames 16-23" in message
    assert "work/x-123/chunks/00002/in/chunk.json does not exist" in message


def test_video_ids_do_not_collide_across_containers():
    assert Video("a", "incoming/x.mp4", "v").video_id != Video("b", "incoming/x.mp4", "v").video_id
