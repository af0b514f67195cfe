"""The ledger, the backlog and the output claims, against Azurite: what many runs of many videos share."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from vidstyle.pipeline.claims import OutputClaims
from vidstyle.pipeline.identity import OutputSpec, current_video, find_videos
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import FAILED, QUEUED, RUNNING, SUCCEEDED, SUPERSEDED, Ledger, backlog, unprocessed
from vidstyle.pipeline.settings import load_settings


def uploaded(store, tmp_path, blob: str, content: bytes):
    """A small blob in the store, as the ledger sees it."""
    path = tmp_path / blob.rsplit("/", 1)[-1]
    path.write_bytes(content)
    store.upload(path, blob)
    return current_video(store, blob)


DEFAULT = OutputSpec("pop-art")


def test_ledger_decides_what_is_new(store, tmp_path):
    ledger = Ledger(store, Layout(load_settings()))
    f = tmp_path / "v.mp4"
    for i in range(3):
        f.write_bytes(f"video {i}".encode())
        store.upload(f, f"incoming/v{i}.mp4")
    store.upload(f, "incoming/readme.txt")
    videos = find_videos(store, "incoming/", load_settings().suffixes)
    assert [v.blob for v in videos] == ["incoming/v0.mp4", "incoming/v1.mp4", "incoming/v2.mp4"]
    ledger.record(videos[1], "r1", QUEUED, DEFAULT, is_default=True)
    assert [v.blob for v in unprocessed(videos, ledger.known_ids())] == ["incoming/v0.mp4", "incoming/v2.mp4"]
    ledger.record(videos[1], "r1", RUNNING, DEFAULT, is_default=True)
    entry = ledger.record(videos[1], "r1", QUEUED, DEFAULT, is_default=True)  # the watcher, late: no step back
    assert entry["status"] == RUNNING and entry["runs"]["r1"]["status"] == RUNNING
    entry = ledger.record(videos[1], "r1", SUCCEEDED, DEFAULT, is_default=True, outputs={"video": "o.mp4"})
    assert entry["run_id"] == "r1" and entry["status"] == SUCCEEDED
    assert [h["status"] for h in entry["history"]] == [QUEUED, RUNNING, SUCCEEDED]


def test_an_entry_written_by_the_earlier_format_keeps_its_status_and_takes_new_runs(store, tmp_path):
    """Before per-output records an entry was one status with the video's fields at the top:
    a store upgraded in place must neither reprocess those videos nor fail on their entries."""
    layout = Layout(load_settings())
    video = uploaded(store, tmp_path, "incoming/old.mp4", b"processed long ago")
    store.write_json(layout.state(video.video_id), video.to_dict() | {
        "status": SUCCEEDED, "run_id": "old-run", "outputs": {"video": "outputs/old.pop-art.mp4"},
        "updated_at": "2026-11-01T00:00:00Z"})
    ledger = Ledger(store, layout)
    assert ledger.get(video.video_id)["status"] == SUCCEEDED  # the watcher and the sweep leave it alone
    entry = ledger.record(video, "r2", RUNNING, OutputSpec(style="other"), is_default=False)
    assert entry["status"] == SUCCEEDED and entry["runs"]["r2"]["status"] == RUNNING
    assert entry["history"][0]["earlier_format"]["outputs"] == {"video": "outputs/old.pop-art.mp4"}


def test_a_failed_run_for_another_output_never_loses_a_success(store, tmp_path):
    ledger = Ledger(store, Layout(load_settings()))
    video = uploaded(store, tmp_path, "incoming/v.mp4", b"a video")
    ledger.record(video, "auto", SUCCEEDED, DEFAULT, is_default=True, outputs={"video": "outputs/v.pop-art.mp4"})
    entry = ledger.record(video, "manual-1", FAILED, OutputSpec("van-gogh-missing"), is_default=False,
                          error="start: model not found")
    assert entry["status"] == SUCCEEDED  # what the sweep reads: the default output is done
    assert entry["outputs"]["pop-art"]["status"] == SUCCEEDED
    assert entry["outputs"]["van-gogh-missing"]["status"] == FAILED
    # and a failed re-run of the default output itself keeps the result that is in place
    entry = ledger.record(video, "manual-2", FAILED, DEFAULT, is_default=True, error="split: disk full")
    assert entry["status"] == SUCCEEDED and entry["outputs"]["pop-art"]["run_id"] == "auto"
    assert entry["runs"]["manual-2"]["status"] == FAILED
    assert [(h["run_id"], h["status"]) for h in entry["history"]] == [
        ("auto", SUCCEEDED), ("manual-1", FAILED), ("manual-2", FAILED)]
    now = datetime.now(UTC)
    assert backlog([video], ledger, now - timedelta(hours=1), now + timedelta(hours=1)) == []


def test_many_runs_writing_one_entry_at_once_lose_nothing(store, tmp_path):
    """Read-modify-write with a blind write kept only some of them; writes are conditional now."""
    ledger = Ledger(store, Layout(load_settings()))
    video = uploaded(store, tmp_path, "incoming/busy.mp4", b"busy video")
    runs = [f"run-{i}" for i in range(8)]
    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(lambda r: ledger.record(video, r, RUNNING, OutputSpec(f"style-{r}"), is_default=False), runs))
    entry = ledger.get(video.video_id)
    assert sorted(entry["runs"]) == runs and len(entry["history"]) == len(runs)


def test_backlog_picks_the_window_and_skips_what_is_done(store, tmp_path):
    ledger = Ledger(store, Layout(load_settings()))
    f = tmp_path / "v.mp4"
    for name in ("new", "done", "failed", "other", "replaced"):
        f.write_bytes(name.encode())
        store.upload(f, f"incoming/{name}.mp4")
    videos = {v.blob.split("/")[-1]: v for v in find_videos(store, "incoming/", (".mp4",))}
    ledger.record(videos["done.mp4"], "r", SUCCEEDED, DEFAULT, is_default=True)
    ledger.record(videos["failed.mp4"], "r", FAILED, DEFAULT, is_default=True, error="boom")
    ledger.record(videos["other.mp4"], "r", FAILED, OutputSpec("x"), is_default=False, error="no such style")
    ledger.record(videos["replaced.mp4"], "r", SUPERSEDED, DEFAULT, is_default=True)
    now = datetime.now(UTC)
    window = (now - timedelta(hours=1), now + timedelta(hours=1))
    picked = {v.blob: rerun for v, rerun in backlog(videos.values(), ledger, *window)}
    # never processed with the default style (only another output tried): picked too
    assert picked == {"incoming/new.mp4": False, "incoming/failed.mp4": True, "incoming/other.mp4": True}
    everything = {v.blob for v, rerun in backlog(videos.values(), ledger, *window, reprocess=True) if rerun}
    assert everything == {f"incoming/{n}.mp4" for n in ("new", "done", "failed", "other", "replaced")}
    assert backlog(videos.values(), ledger, now - timedelta(days=2), now - timedelta(days=1)) == []


def test_runs_that_would_write_the_same_output_take_turns(store):
    claims, live = OutputClaims(store, Layout(load_settings())), {"run-a", "run-b"}
    assert claims.acquire("outputs/x.pop-art.mp4", "run-a", "incoming/x.mp4", live.__contains__) is None
    holder = claims.acquire("outputs/x.pop-art.mp4", "run-b", "incoming/x.mp4", live.__contains__)
    assert holder.run_id == "run-a"  # b waits
    assert claims.acquire("outputs/x.pop-art.mp4", "run-a", "incoming/x.mp4", live.__contains__) is None  # a retry
    assert claims.acquire("outputs/x.other.mp4", "run-b", "incoming/x.mp4", live.__contains__) is None  # its own
    assert not claims.release("outputs/x.pop-art.mp4", "run-b")  # not b's to give back
    assert claims.release("outputs/x.pop-art.mp4", "run-a")
    assert claims.acquire("outputs/x.pop-art.mp4", "run-b", "incoming/x.mp4", live.__contains__) is None


def test_a_claim_left_by_a_run_that_was_killed_is_broken(store):
    claims = OutputClaims(store, Layout(load_settings()))
    assert claims.acquire("outputs/y.mp4", "killed", "incoming/y.mp4", lambda r: True) is None
    assert claims.acquire("outputs/y.mp4", "next", "incoming/y.mp4", lambda r: r != "killed") is None
    assert store.read_json(Layout(load_settings()).claim("outputs/y.mp4"))["run_id"] == "next"


def test_a_failed_run_cleared_past_its_claim_takes_it_again_before_writing_unless_another_run_writes(store):
    from types import SimpleNamespace

    from vidstyle.pipeline.steps import hold_claim

    layout, output = Layout(load_settings()), "outputs/w.pop-art.mp4"
    run = SimpleNamespace(store=store, layout=layout, outputs={"video": output}, run_id="cleared",
                          video=SimpleNamespace(blob="incoming/w.mp4"))
    hold_claim(run, lambda r: True)  # its claim was given back when it failed: it takes it again
    assert store.read_json(layout.claim(output))["run_id"] == "cleared"
    OutputClaims(store, layout).release(output, "cleared")
    assert OutputClaims(store, layout).acquire(output, "newer", "incoming/w.mp4", lambda r: True) is None
    with pytest.raises(RuntimeError, match="run newer .* now writes outputs/w.pop-art.mp4.*claim_output"):
        hold_claim(run, lambda r: True)
    hold_claim(run, lambda r: r != "newer")  # that run has ended meanwhile: the claim is broken, and taken
    assert store.read_json(layout.claim(output))["run_id"] == "cleared"
    assert OutputClaims(store, layout).acquire(output, "newer", "incoming/w.mp4", lambda r: True).run_id == "cleared"


def test_only_one_of_many_runs_asking_at_once_gets_a_claim(store):
    claims, runs = OutputClaims(store, Layout(load_settings())), [f"r{i}" for i in range(8)]
    with ThreadPoolExecutor(len(runs)) as pool:
        got = list(pool.map(lambda r: claims.acquire("outputs/z.mp4", r, "incoming/z.mp4", lambda _: True), runs))
    assert sum(h is None for h in got) == 1
