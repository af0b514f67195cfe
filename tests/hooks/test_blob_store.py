"""The blob layer against Azurite: round trips, missing blobs named, content versions, pinned downloads."""

import pytest

from vidstyle.pipeline.identity import current_video


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
        current_video(store, "incoming/nope.mp4")
    with pytest.raises(FileNotFoundError, match="work/x.json"):
        store.read_json("work/x.json")


def test_versions_follow_content(store, tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"one")
    store.upload(f, "incoming/v.mp4")
    first = current_video(store, "incoming/v.mp4")
    store.upload(f, "incoming/v.mp4")  # same bytes again
    assert current_video(store, "incoming/v.mp4").video_id == first.video_id
    f.write_bytes(b"two")
    store.upload(f, "incoming/v.mp4")
    assert current_video(store, "incoming/v.mp4").video_id != first.video_id


def test_a_pinned_download_refuses_changed_content(store, tmp_path):
    from vidstyle.hooks.blob_store import BlobChanged

    f = tmp_path / "v.mp4"
    f.write_bytes(b"first cut")
    store.upload(f, "incoming/v.mp4")
    pinned = current_video(store, "incoming/v.mp4")
    assert store.download("incoming/v.mp4", tmp_path / "a", etag=pinned.etag).read_bytes() == b"first cut"
    f.write_bytes(b"second cut")
    store.upload(f, "incoming/v.mp4")
    with pytest.raises(BlobChanged, match="changed since this run started"):
        store.download("incoming/v.mp4", tmp_path / "b", etag=pinned.etag)


