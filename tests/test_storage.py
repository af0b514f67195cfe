from datetime import UTC, datetime, timedelta

import pytest

from vidstyle.config import load_settings
from vidstyle.layout import Layout
from vidstyle.ledger import FAILED, QUEUED, SUCCEEDED, Ledger, backlog, unprocessed


def test_round_trip_files_and_json(store, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 100_000)
    store.upload(src, "work/v/a.bin")
    assert store.download("work/v/a.bin", tmp_path / "b.bin").read_bytes() == src.read_bytes()
    store.write_json("work/v/plan.json", {"frames": 3})
    assert store.read_json("work/v/plan.json") == {"frames": 3}
    assert store.delete_prefix("work/v/") == 2
    assert store.list("work/") == []


def test_missing_blobs_raise_file_not_found_naming_them(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="incoming/nope.mp4"):
        store.video("incoming/nope.mp4")
    with pytest.raises(FileNotFoundError, match="work/x.json"):
        store.read_json("work/x.json")


def test_versions_follow_content(store, tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"one")
    store.upload(f, "incoming/v.mp4")
    first = store.video("incoming/v.mp4")
    store.upload(f, "incoming/v.mp4")  # same bytes again
    assert store.video("incoming/v.mp4").video_id == first.video_id
    f.write_bytes(b"two")
    store.upload(f, "incoming/v.mp4")
    assert store.video("incoming/v.mp4").video_id != first.video_id


def test_ledger_decides_what_is_new(store, tmp_path):
    ledger = Ledger(store, Layout(load_settings()))
    f = tmp_path / "v.mp4"
    for i in range(3):
        f.write_bytes(f"video {i}".encode())
        store.upload(f, f"incoming/v{i}.mp4")
    store.upload(f, "incoming/readme.txt")
    videos = store.videos("incoming/", load_settings().suffixes)
    assert [v.blob for v in videos] == ["incoming/v0.mp4", "incoming/v1.mp4", "incoming/v2.mp4"]
    ledger.mark(videos[1], QUEUED, run_id="r1")
    assert [v.blob for v in unprocessed(videos, ledger.known_ids())] == ["incoming/v0.mp4", "incoming/v2.mp4"]
    entry = ledger.mark(videos[1], SUCCEEDED)
    assert entry["run_id"] == "r1" and entry["status"] == SUCCEEDED  # earlier fields kept


def test_backlog_picks_the_window_and_skips_what_is_done(store, tmp_path):
    ledger = Ledger(store, Layout(load_settings()))
    f = tmp_path / "v.mp4"
    for name in ("new", "done", "failed"):
        f.write_bytes(name.encode())
        store.upload(f, f"incoming/{name}.mp4")
    videos = {v.blob.split("/")[-1]: v for v in store.videos("incoming/", (".mp4",))}
    ledger.mark(videos["done.mp4"], SUCCEEDED)
    ledger.mark(videos["failed.mp4"], FAILED, error="boom")
    now = datetime.now(UTC)
    window = (now - timedelta(hours=1), now + timedelta(hours=1))
    picked = {v.blob: rerun for v, rerun in backlog(videos.values(), ledger, *window)}
    assert picked == {"incoming/new.mp4": False, "incoming/failed.mp4": True}
    everything = {v.blob: rerun for v, rerun in backlog(videos.values(), ledger, *window, reprocess=True)}
    assert everything == {"incoming/new.mp4": True, "incoming/done.mp4": True, "incoming/failed.mp4": True}
    assert backlog(videos.values(), ledger, now - timedelta(days=2), now - timedelta(days=1)) == []


def test_a_pinned_download_refuses_changed_content(store, tmp_path):
    from vidstyle.blobs import BlobChanged

    f = tmp_path / "v.mp4"
    f.write_bytes(b"first cut")
    store.upload(f, "incoming/v.mp4")
    pinned = store.video("incoming/v.mp4")
    assert store.download("incoming/v.mp4", tmp_path / "a", etag=pinned.etag).read_bytes() == b"first cut"
    f.write_bytes(b"second cut")
    store.upload(f, "incoming/v.mp4")
    with pytest.raises(BlobChanged, match="changed since this run started"):
        store.download("incoming/v.mp4", tmp_path / "b", etag=pinned.etag)


def test_models_by_blob_path_are_checked_and_fetched_with_their_sidecar(store, tmp_path, tiny_model):
    from vidstyle.backends.local import LocalBackend, fetch_model

    conn = load_settings().wasb_conn_id
    tiny_model.with_suffix(".json").write_text('{"architecture": {"width": 4, "blocks": 1}}')
    store.upload(tiny_model, "models/tiny.pth")
    store.upload(tiny_model.with_suffix(".json"), "models/tiny.json")
    ref = f"wasb://{store.container}/models/tiny.pth"
    LocalBackend().preflight(ref, conn)  # exists: no error
    with pytest.raises(FileNotFoundError, match="models/missing.pth does not exist"):
        LocalBackend().preflight(f"wasb://{store.container}/models/missing.pth", conn)
    local = fetch_model(ref, conn, tmp_path / "fetched")
    assert open(local, "rb").read() == tiny_model.read_bytes()
    assert (tmp_path / "fetched" / "tiny.json").is_file()
    assert fetch_model("pop-art", conn, tmp_path) == "pop-art"  # names pass through


def test_builtin_and_local_models_are_checked_before_any_work(tiny_model):
    from vidstyle.backends.local import LocalBackend

    LocalBackend().preflight("pop-art", "unused")
    LocalBackend().preflight(str(tiny_model), "unused")
    with pytest.raises(FileNotFoundError, match="not a built-in model"):
        LocalBackend().preflight("monet", "unused")
