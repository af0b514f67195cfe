"""The DAGs as Airflow runs them: parsing, the REST API's param checks, and real dag.test() runs
against Azurite. dag.test runs a deferred sensor's trigger inline and ignores its timeout, so
every test here has a hard pytest timeout."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pendulum
import pytest

from tests.support import make_video
from vidstyle.cli.localrun import load_dag
from vidstyle.pipeline.identity import Video, current_video, find_videos
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import FAILED, QUEUED, RUNNING, SUCCEEDED, SUPERSEDED, Ledger
from vidstyle.pipeline.settings import load_settings

DAG_IDS = {"video_stylize", "video_arrivals", "video_backlog"}


pytestmark = pytest.mark.usefixtures("serialized_dags")


def relative_times(path) -> list[Fraction]:
    from vidstyle.media.probe import video_times

    times, _ = video_times(path)
    return [t - times[0] for t in times]


def stylize_runs(video_ids: set[str]) -> dict[str, dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "video_stylize", DagRun.run_id.like("video__%")).all()
        return {r.run_id: r.conf for r in runs  # video__<upload time>__<video id>[__re__<tag>]
                if len(parts := r.run_id.split("__")) > 2 and parts[2] in video_ids}


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
    from vidstyle.airflow.priority import ARRIVAL_ORDER

    dag = load_dag("video_stylize")
    order = ["start", "claim_output", "split", "stylize_chunk", "stitch", "publish", "cleanup"]
    for up, down in itertools.pairwise(order):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down}"
    assert {"split"} == dag.get_task("extract_audio").upstream_task_ids - {"start"}
    assert {"extract_audio", "stylize_chunk"} <= dag.get_task("stitch").upstream_task_ids
    chunk = dag.get_task("stylize_chunk")
    assert chunk.pool == load_settings().scoring_pool and chunk.retries >= 1
    assert "chunk_label" in chunk.map_index_template
    assert dag.max_active_runs == load_settings().max_active_videos
    assert all(t.weight_rule == ARRIVAL_ORDER for t in dag.tasks)  # first uploaded, first served
    assert dag.get_task("claim_output").mode == "reschedule"  # a run waiting its turn holds no worker slot


def test_chunk_tasks_go_to_the_scoring_queue_when_one_is_set(monkeypatch):
    """The Helm values' GPU worker set takes the chunks by their Celery queue; others stay on the
    default queue."""
    assert load_dag("video_stylize").get_task("stylize_chunk").queue == "default"
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__SCORING_QUEUE", "gpu")
    dag = load_dag("video_stylize")
    assert dag.get_task("stylize_chunk").queue == "gpu" and dag.get_task("split").queue == "default"


@pytest.fixture
def listing(monkeypatch):
    """The listing watcher (``arrivals = listing``), for stores without Event Grid."""
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__ARRIVALS", "listing")


def test_arrivals_are_scheduled_on_the_uploads_asset_watched_through_the_storage_queue():
    from airflow.sdk import Asset

    from vidstyle.airflow.triggers.blob_events import StorageQueueEventTrigger

    dag = load_dag("video_arrivals")
    settings = load_settings()
    [asset] = [a for a in dag.timetable.asset_condition.objects if isinstance(a, Asset)]
    [watcher] = asset.watchers
    assert asset.name == "video_uploads" and isinstance(watcher.trigger, StorageQueueEventTrigger)
    kwargs = watcher.trigger.serialize()[1]
    assert kwargs["queue"] == f"{settings.container}-arrivals" and kwargs["input_prefix"] == "incoming/"
    assert [t.task_id for t in dag.tasks if not t.upstream_task_ids] == ["read_arrivals"]
    assert asset in dag.get_task("read_arrivals").inlets


def test_arrivals_on_service_bus_use_the_providers_trigger(monkeypatch):
    from airflow.providers.microsoft.azure.triggers.message_bus import AzureServiceBusQueueTrigger

    monkeypatch.setenv("AIRFLOW__VIDSTYLE__ARRIVALS", "service_bus")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__ARRIVALS_QUEUE", "blob-events")
    [asset] = load_dag("video_arrivals").timetable.asset_condition.objects
    trigger = asset.watchers[0].trigger
    assert isinstance(trigger, AzureServiceBusQueueTrigger) and trigger.queues == ["blob-events"]
    assert trigger.connection_id == "azure_service_bus_default"


def test_an_unknown_arrivals_setting_is_refused_by_name(monkeypatch):
    from vidstyle.airflow.arrivals import watcher_trigger
    from vidstyle.pipeline.settings import Settings

    with pytest.raises(ValueError, match="'sftp' has no queue to watch"):
        watcher_trigger(Settings(arrivals="sftp"))


@pytest.mark.usefixtures("listing")
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
    ({"video_blob": "incoming/a.mp4", "chunk_frames": 0}, "chunk_frames: 0 is less than the minimum of 1"),
    ({"video_blob": "incoming/a.mp4", "chunk_frames": "lots"}, "chunk_frames"),
    ({"video_blob": "incoming/a.mp4", "output_height": 721}, "output_height: 721 is not a multiple of 2"),
    ({"video_blob": "incoming/a.mp4", "crf": 60}, "crf: 60 is greater than the maximum of 51"),
    ({"video_blob": "incoming/a.mp4", "backend": "cloud9"}, "backend: 'cloud9' is not one of"),
    ({"video_blob": "incoming/a.mp4", "style": "pop_art"}, "style: 'pop_art' is not valid"),  # a typo: no run
])
def test_the_api_refuses_bad_params_with_a_clear_message(api, conf, complaint):
    r = api.post("/api/v2/dags/video_stylize/dagRuns", json={"logical_date": None, "conf": conf})
    assert r.status_code == 400, r.text
    assert complaint in r.json()["detail"]


def test_the_form_states_every_rule_in_words_and_shows_no_regular_expression():
    dag = load_dag("video_stylize")
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.description and "pattern" not in param.schema, name  # a failed pattern would show its regex
    style = dag.params.get_param("style")
    assert "pop-art" in style.schema["examples"] and "pop-art" in style.description


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("conf", "words"), [
    ({"video_blob": "incoming/notes.txt"}, "video_blob 'incoming/notes.txt': give the path of a video file inside "
     "container {container!r}, without a leading '/', ending in one of .mp4,.mov,"),
    ({"video_blob": "incoming/a.mp4", "output_prefix": "no-slash"}, "output_prefix 'no-slash': give a folder inside "
     "container {container!r}, ending with '/' and without a leading '/'"),
])
def test_paths_that_break_the_rules_fail_at_once_saying_the_rule(store, tmp_path, caplog, conf, words):
    """The rule in words where a user reads why a run failed: the task log's failure line and the
    video's ledger entry (the blob exists, so the failure is recorded against it)."""
    (tmp_path / "v").write_bytes(b"any bytes: the rule is checked before the content is read")
    store.upload(tmp_path / "v", conf["video_blob"])
    words = words.format(container=store.container)
    caplog.set_level("ERROR", logger="vidstyle.airflow.tasks")
    dr = load_dag("video_stylize").test(run_conf=conf)
    assert str(dr.state) == "failed" and task_states(dr)["start"] == ("failed", 1)
    [logged] = [r.getMessage() for r in caplog.records if r.name == "vidstyle.airflow.tasks"]
    assert logged.startswith(f"FAILED start of run {dr.run_id}: ") and words in logged, logged
    entry = Ledger(store, Layout(load_settings())).get(current_video(store, conf["video_blob"]).video_id)
    error = entry["runs"][dr.run_id]["error"]
    assert entry["runs"][dr.run_id]["status"] == FAILED and error.startswith("start: ") and words in error, error


def test_the_api_accepts_a_good_form(api):
    r = api.post("/api/v2/dags/video_stylize/dagRuns", json={
        "logical_date": None, "dag_run_id": f"formcheck-{datetime.now(UTC).timestamp()}",
        "conf": {"video_blob": "incoming/Holiday 2024.MOV", "chunk_frames": 120, "output_height": 720}})
    assert r.status_code == 200, r.text
    assert r.json()["conf"]["output_height"] == 720


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("listing")
def test_watcher_starts_exactly_one_run_per_uploaded_video(store, tmp_path):
    f = tmp_path / "clip.mp4"
    for i in range(20):
        f.write_bytes(f"clip {i}".encode())
        store.upload(f, f"incoming/batch/clip{i}.mp4")
    store.upload(f, "incoming/batch/readme.txt")
    assert str(load_dag("video_arrivals").test().state) == "success"
    videos = {v.blob: v for v in find_videos(store, "incoming/", load_settings().suffixes)}
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
    edited = current_video(store, "incoming/batch/clip1.mp4")
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
    videos = {v.blob.split("/")[-1][:-4]: v for v in find_videos(store, "incoming/", (".mp4",))}
    ledger, default = Ledger(store, Layout(load_settings())), Layout(load_settings()).default_output()
    ledger.record(videos["done"], "earlier", SUCCEEDED, default, is_default=True)
    ledger.record(videos["broken"], "earlier", FAILED, default, is_default=True, error="earlier failure")
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
    from vidstyle.media import probe as media

    blob = "incoming/e2e/clip été 東京.mp4"  # names stay as the user gave them
    src = make_video(tmp_path / "clip.mp4", seconds=1.0, size="96x64", rate="30000/1001")
    store.upload(src, blob)
    dr = load_dag("video_stylize").test(run_conf={"video_blob": blob, "chunk_frames": 8})
    states = task_states(dr)
    assert str(dr.state) == "success", states
    assert sum(1 for k in states if k.startswith("stylize_chunk[")) == 4  # 30 frames: 8+8+8+6

    outputs = Layout(load_settings()).outputs(blob, Layout(load_settings()).default_output())
    assert outputs["video"] == "outputs/e2e/clip été 東京.pop-art.mp4"
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
    flicker = manifest["flicker"]  # the pair (0, 1) of each chunk (every 8th frame), the moving source's own
    assert flicker["pairs"] == 4 and flicker["every"] == 8
    assert flicker["warping_error"] > 0 and flicker["source_warping_error"] > 0 and flicker["ratio"] > 0
    assert manifest["output"]["audio"]["duration"] == pytest.approx(manifest["output"]["audio"]["source_duration"],
                                                                    abs=1e-3)
    storage = manifest["storage"]
    assert storage["split"]["read"] == src.stat().st_size and storage["chunks_in"] > 0
    assert storage["total"] == sum(storage[k]["read"] + storage[k]["written"] for k in ("split", "audio", "stitch")) \
        + storage["chunks_in"] + storage["chunks_out"]
    assert store.exists(outputs["preview"])
    video = current_video(store, blob)
    assert store.list(Layout(load_settings()).video_work(video.video_id)) == []  # work removed on success
    assert Ledger(store, Layout(load_settings())).get(video.video_id)["status"] == SUCCEEDED
    assert store.list(load_settings().state_prefix + "claims/") == []  # the claim on the result given back


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
    outputs = Layout(load_settings()).outputs("incoming/vfr.mkv", Layout(load_settings()).default_output())
    out = store.download(outputs["video"], tmp_path / "out.mp4")
    assert relative_times(out) == relative_times(src) and len({b - a for a, b in itertools.pairwise(
        relative_times(src))}) > 1  # variable, and exactly the source's
    video = current_video(store, "incoming/vfr.mkv")
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
    video = current_video(store, "incoming/broken.mp4")
    entry = Ledger(store, Layout(load_settings())).get(video.video_id)
    error = entry["runs"][dr.run_id]["error"]
    assert entry["status"] == FAILED
    assert "incoming/broken.mp4" in error and "split" in error and "not a readable video" in error
    assert store.list(Layout(load_settings()).video_work(video.video_id)) == []  # nothing half-made


@pytest.mark.timeout(300)
def test_an_unknown_model_fails_before_any_work_and_keeps_the_video_processed(store, tmp_path):
    store.upload(make_video(tmp_path / "ok.mp4", audio=False), "incoming/ok.mp4")
    video, layout = current_video(store, "incoming/ok.mp4"), Layout(load_settings())
    ledger = Ledger(store, layout)
    ledger.record(video, "the-watchers-run", SUCCEEDED, layout.default_output(), is_default=True)
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/ok.mp4", "style": "/models/van-gogh.pth"})
    assert str(dr.state) == "failed"
    assert task_states(dr)["start"] == ("failed", 1)
    entry = ledger.get(video.video_id)
    error = entry["runs"][dr.run_id]["error"]
    assert "van-gogh" in error and "not a built-in model" in error
    assert entry["status"] == SUCCEEDED  # the sweep will not process it again
    assert entry["outputs"]["/models/van-gogh.pth"]["status"] == FAILED


@pytest.mark.timeout(300)
def test_a_run_processes_the_version_it_was_created_for_or_says_it_is_gone(store, tmp_path):
    """A queued run for version A, the blob re-uploaded as B before it starts: it used to process
    B (and B's own run B again, A's entry left "queued" forever)."""
    from vidstyle.pipeline.dispatch import run_request

    f = tmp_path / "v.mp4"
    f.write_bytes(make_video(tmp_path / "a.mp4", audio=False).read_bytes())
    store.upload(f, "incoming/reup.mp4")
    version_a = current_video(store, "incoming/reup.mp4")
    request = run_request(version_a.to_dict())  # what the watcher queued for A
    store.upload(make_video(tmp_path / "b.mp4", seconds=0.5, size="64x48", audio=False), "incoming/reup.mp4")
    version_b = current_video(store, "incoming/reup.mp4")
    dr = load_dag("video_stylize").test(run_conf=request["conf"])
    assert str(dr.state) == "failed" and task_states(dr)["start"] == ("failed", 1)
    ledger = Ledger(store, Layout(load_settings()))
    entry_a = ledger.get(version_a.video_id)
    assert entry_a["status"] == SUPERSEDED and "newer upload" in entry_a["runs"][dr.run_id]["error"]
    assert ledger.get(version_b.video_id) is None  # B is untouched: new to the watcher, its own run
    assert not store.list(Layout(load_settings()).video_work(version_b.video_id))


@pytest.mark.timeout(300)
def test_the_sweep_picks_up_a_video_whose_run_was_killed(store, tmp_path):
    """A run killed hard never records how it ended: its video stayed "running" forever."""
    f = tmp_path / "v.mp4"
    f.write_bytes(b"killed mid-chunk")
    store.upload(f, "incoming/killed.mp4")
    video, layout = current_video(store, "incoming/killed.mp4"), Layout(load_settings())
    ledger = Ledger(store, layout)
    ledger.record(video, video.run_id + "__gone", RUNNING, layout.default_output(), is_default=True)
    tomorrow = pendulum.now("UTC").start_of("day") + timedelta(days=1, minutes=2)
    assert str(load_dag("video_backlog").test(logical_date=tomorrow).state) == "success"
    entry = ledger.get(video.video_id)
    assert entry["runs"][video.run_id + "__gone"]["status"] == FAILED
    assert "ended without recording" in entry["runs"][video.run_id + "__gone"]["error"]
    runs = stylize_runs({video.video_id})
    assert any(r.startswith(video.run_id + "__re__") for r in runs)  # and it is processed again


@pytest.mark.timeout(400)
def test_a_local_run_killed_mid_chunk_is_found_and_marked_failed(store, tmp_path):
    """The local-file command's process killed with SIGKILL left its run "running" everywhere."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from vidstyle.cli.localrun import MARK, reap_dead_runs

    video = make_video(tmp_path / "long take.mp4", seconds=6, size="160x96", audio=False)
    proc = subprocess.Popen([sys.executable, "-m", "vidstyle.cli.main", "run", str(video), "--chunk-frames", "30",
                             "--out", str(tmp_path / "out")], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def chunk_running() -> DagRun | None:
        with create_session() as session:
            for dr in session.query(DagRun).filter(DagRun.dag_id == "video_stylize", DagRun.state == "running"):
                if (dr.conf or {}).get(MARK, {}).get("pid") == proc.pid and session.query(TaskInstance).filter(
                        TaskInstance.run_id == dr.run_id, TaskInstance.task_id == "stylize_chunk",
                        TaskInstance.state == "running").count():
                    return dr
        return None

    deadline = time.monotonic() + 300
    while (dr := chunk_running()) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "the local run never reached a chunk"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the process and its scorer: a laptop closed mid-chunk
    proc.wait(timeout=30)
    assert reap_dead_runs() == [dr.run_id]
    with create_session() as session:
        assert session.query(DagRun.state).filter(DagRun.run_id == dr.run_id).scalar() == "failed"
    entry = Ledger(store, Layout(load_settings())).get(current_video(store, dr.conf["video_blob"]).video_id)
    assert entry["runs"][dr.run_id]["status"] == FAILED and entry["status"] == FAILED  # so the sweep retries it
    assert "killed" in entry["runs"][dr.run_id]["error"]
    assert reap_dead_runs() == []  # once


def test_the_first_uploaded_video_is_served_first():
    from vidstyle.airflow.priority import weight

    early = Video("v", "incoming/a.mp4", "1", "2026-05-01T10:00:00+00:00")
    late = Video("v", "incoming/b.mp4", "1", "2026-05-01T10:00:07+00:00")
    assert weight(early.run_id) > weight(late.run_id) > weight(late.run_id + "__re__later") - 1
    assert weight("manual__2026-05-01T09:00:00+00:00") > weight(early.run_id)
    assert 0 < weight("something-else") < weight(late.run_id) < 2**31


def test_tasks_of_an_earlier_upload_outrank_a_later_ones_as_the_scheduler_creates_them(api):
    """Runs created as the watcher creates them (its run ids); the scheduler-side weights compared."""
    import uuid

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    from vidstyle.pipeline.dispatch import run_request

    ids, tag = {}, uuid.uuid4().hex[:8]
    for uploaded in ("2026-05-01T10:05:00+00:00", "2026-05-01T10:00:00+00:00"):  # the later one triggered first
        video = Video("videos", f"incoming/order-{tag}-{uploaded[14:16]}.mp4", "v1", uploaded)
        request = run_request(video.to_dict())
        r = api.post("/api/v2/dags/video_stylize/dagRuns", json={
            "logical_date": None, "dag_run_id": request["trigger_run_id"], "conf": request["conf"]})
        assert r.status_code == 200, r.text
        ids[uploaded] = request["trigger_run_id"]
    with create_session() as session:
        weight = {t: session.query(TaskInstance.priority_weight).filter(
            TaskInstance.dag_id == "video_stylize", TaskInstance.run_id == run_id,
            TaskInstance.task_id == "split").scalar() for t, run_id in ids.items()}
    assert weight["2026-05-01T10:00:00+00:00"] > weight["2026-05-01T10:05:00+00:00"] > 1


def test_a_failed_chunk_names_the_video_the_chunk_and_the_cause(store):
    from vidstyle.airflow.operators import StylizeChunkOperator
    from vidstyle.pipeline.backends import ChunkTask

    task = ChunkTask(conn_id=load_settings().wasb_conn_id, container=store.container, video_blob="incoming/x.mp4",
                     video_id="x-123", chunk_index=2, chunk_label="chunk 3/4, frames 16-23", frames=8,
                     input_dir="work/x-123/chunks/00002/in/", output_dir="work/x-123/chunks/00002/out/",
                     model="pop-art", batch_size=2)
    op = StylizeChunkOperator(task_id="t", work=task.to_dict() | {"backend": "local"})
    with pytest.raises(RuntimeError) as err:
        op.execute({"run_id": "manual__failing"})
    message = str(err.value)
    assert "incoming/x.mp4" in message and "chunk 3/4, frames 16-23" in message
    assert "work/x-123/chunks/00002/in/chunk.json does not exist" in message


def test_video_ids_do_not_collide_across_containers():
    assert Video("a", "incoming/x.mp4", "v").video_id != Video("b", "incoming/x.mp4", "v").video_id


@pytest.mark.timeout(600)
def test_a_source_the_copy_cut_cannot_write_is_re_encoded_and_the_run_succeeds(store, tmp_path):
    """ProRes in MOV plays everywhere, but NUT takes no ProRes by stream copy: the split falls
    back to re-encoding, says so, and the run comes out frame-exact."""
    from tests.media.corpus import CASES, decoded_times

    (tmp_path / "make").mkdir()
    src = next(c for c in CASES if c.name == "prores-mov").make(tmp_path / "make")
    store.upload(src, "incoming/odd/prores.mov")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/odd/prores.mov", "chunk_frames": 12})
    states = task_states(dr)
    assert str(dr.state) == "success" and states["split"] == ("success", 1), states
    outputs = Layout(load_settings()).outputs("incoming/odd/prores.mov", Layout(load_settings()).default_output())
    manifest = store.read_json(outputs["manifest"])
    assert manifest["source"]["mode"] == "transcode", manifest["source"]
    assert manifest["source"]["mode_reason"].startswith("the copy cut failed (ValueError: 'nut' format does not")
    assert relative_times(store.download(outputs["video"], tmp_path / "out.mp4")) == decoded_times(src)


@pytest.mark.timeout(600)
def test_a_source_whose_times_go_backwards_fails_once_at_split_saying_so(store, tmp_path):
    from tests.media.corpus import CASES

    (tmp_path / "make").mkdir()
    src = next(c for c in CASES if c.name == "ts-discontinuity").make(tmp_path / "make")
    store.upload(src, "incoming/odd/pasted.ts")
    dr = load_dag("video_stylize").test(run_conf={"video_blob": "incoming/odd/pasted.ts", "chunk_frames": 12})
    states = task_states(dr)
    assert str(dr.state) == "failed" and states["split"] == ("failed", 1), states
    assert not any(k.startswith("stylize_chunk") and v[0] == "success" for k, v in states.items())
    entry = Ledger(store, Layout(load_settings())).get(current_video(store, "incoming/odd/pasted.ts").video_id)
    error = entry["runs"][dr.run_id]["error"]
    assert entry["status"] == FAILED and error.startswith("split: video incoming/odd/pasted.ts: split: bad input: ")
    assert "its timestamps go backwards: frame " in error and "remux it with new timestamps" in error, error


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", ["audio-first", "audio-late"])
def test_audio_starting_before_or_after_the_video_stays_in_sync_through_a_real_run(store, tmp_path, case):
    """The corpus's shifted-audio cases through the DAG (split's plan, extract_audio, the chunks,
    stitch): the frames keep the source's times, and the audio starts as far from the first frame
    and lasts as long as in the source, both measured on the files."""
    from tests.media.corpus import CASES, decoded_times
    from vidstyle.media import probe as media

    (tmp_path / "make").mkdir()
    src = next(c for c in CASES if c.name == case).make(tmp_path / "make")
    blob = f"incoming/odd/{case}.mp4"
    store.upload(src, blob)
    dr = load_dag("video_stylize").test(run_conf={"video_blob": blob, "chunk_frames": 12})
    states = task_states(dr)
    assert str(dr.state) == "success" and states["extract_audio"][0] == "success", states
    out = store.download(Layout(load_settings()).outputs(blob, Layout(load_settings()).default_output())["video"],
                         tmp_path / "out.mp4")
    assert relative_times(out) == decoded_times(src)
    (src_start, src_end), (out_start, out_end) = media.audio_span(src), media.audio_span(out)
    src_first, out_first = media.video_times(src)[0][0], media.video_times(out)[0][0]
    assert (src_start < src_first) == (case == "audio-first")  # the case is what it says
    assert abs((out_start - out_first) - (src_start - src_first)) <= Fraction(1, 1000)
    assert abs((out_end - out_start) - (src_end - src_start)) <= Fraction(1, 1000)
