"""From events to videos against Azurite: at-least-once delivery ends in one run or a clear skip."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from vidstyle.hooks.queue_store import QueueStore
from vidstyle.pipeline.arrival_events import BlobCreated
from vidstyle.pipeline.arrivals import announce, ensure_queue, events_of, new_videos, posts_events
from vidstyle.pipeline.identity import current_video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import QUEUED, Ledger
from vidstyle.pipeline.settings import Settings, arrivals_queue


@pytest.fixture
def settings(container) -> Settings:
    return Settings(container=container)


def upload(store, tmp_path, blob: str, content: bytes) -> BlobCreated:
    f = tmp_path / "f.mp4"
    f.write_bytes(content)
    store.upload(f, blob)
    props = store.properties(blob)
    return BlobCreated(store.container, blob, str(props.etag), len(content))


def test_duplicates_replacements_deletions_and_known_content_give_one_video_each_or_a_skip(
        store, settings, tmp_path, caplog):
    a = upload(store, tmp_path, "incoming/a.mp4", b"a")
    b_old = upload(store, tmp_path, "incoming/b.mp4", b"b, first take")
    b_new = upload(store, tmp_path, "incoming/b.mp4", b"b, second take")  # replaced before its run
    gone = upload(store, tmp_path, "incoming/gone.mp4", b"soon deleted")
    store.hook.delete_file(store.container, "incoming/gone.mp4")
    done = upload(store, tmp_path, "incoming/done.mp4", b"processed already")
    ledger = Ledger(store, Layout(settings))
    ledger.record(current_video(store, done.blob), "video__x__done", QUEUED, Layout(settings).default_output(), True)
    noise = [BlobCreated(store.container, "incoming/readme.txt"), BlobCreated("other", "incoming/a.mp4"),
             BlobCreated(store.container, "outputs/a.mp4")]

    with caplog.at_level(logging.INFO, logger="vidstyle.pipeline.arrivals"):
        videos = new_videos(store, ledger, [a, a, b_old, b_new, gone, done, *noise], settings)
    assert [v["blob"] for v in videos] == ["incoming/a.mp4", "incoming/b.mp4"]
    assert videos[1]["version"] == current_video(store, "incoming/b.mp4").version  # the content now
    log = caplog.text
    assert f"skipped wasb://{store.container}/incoming/gone.mp4: deleted before its run" in log
    for words in ("deleted before its run", "was replaced since this event", "is known already (queued)",
                  "not a video name", "another container", "outside the watched prefix"):
        assert words in log, words


def test_payloads_of_both_triggers_are_read_and_a_bad_service_bus_body_is_dropped(caplog):
    ours = BlobCreated("videos", "incoming/a.mp4", "0x1").to_dict() | {"queue": "videos-arrivals"}
    service_bus = {"message": '{"eventType": "Microsoft.Storage.BlobCreated", "subject": '
                              '"/blobServices/default/containers/videos/blobs/incoming/b.mp4"}', "queue": "q"}
    broken = {"message": "not json", "queue": "q"}
    events = events_of([ours, service_bus, broken, {"unrelated": 1}])
    assert [e.blob for e in events] == ["incoming/a.mp4", "incoming/b.mp4"]
    assert "dropped a message from q: not JSON" in caplog.text and "names no blob" in caplog.text


def test_an_upload_on_azurite_posts_the_event_event_grid_would_write(store, settings, tmp_path):
    assert ensure_queue(settings) == [arrivals_queue(settings), f"{arrivals_queue(settings)}-poison"]
    assert ensure_queue(settings) == []  # made once
    queues = QueueStore(settings.wasb_conn_id)
    try:
        assert posts_events(store, settings) and not posts_events(store, Settings(arrivals="listing"))
        f = tmp_path / "clip.mp4"
        f.write_bytes(b"clip")
        store.upload(f, "incoming/clip.mp4")
        announce(store, settings, "incoming/clip.mp4")
        [text] = queues.peek(arrivals_queue(settings))
        from vidstyle.pipeline.arrival_events import read_message

        [event] = read_message(text)
        props = store.properties("incoming/clip.mp4")
        assert (event.container, event.blob, event.etag, event.size) == (
            store.container, "incoming/clip.mp4", str(props.etag), 4)
        as_sent = json.loads(base64.b64decode(text, validate=True))  # base64 of the JSON, as Event Grid writes
        assert as_sent["eventType"] == "Microsoft.Storage.BlobCreated" and as_sent["data"]["api"] == "PutBlob"
    finally:
        for q in (arrivals_queue(settings), f"{arrivals_queue(settings)}-poison"):
            queues.delete(q)
