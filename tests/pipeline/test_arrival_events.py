"""Blob-created events read as Event Grid writes them, in both schemas and both encodings, and
every way a message can fail to be one."""

from __future__ import annotations

import base64
import json
import re

import pytest

from vidstyle.pipeline.arrival_events import (
    BLOB_CREATED,
    BlobCreated,
    MalformedEvent,
    event_grid_event,
    queue_message,
    read_message,
    why_not_a_video,
)

SUFFIXES = (".mp4", ".mov")


def cloud_event(blob: str, container: str = "videos") -> dict:
    return {"specversion": "1.0", "type": BLOB_CREATED, "id": "ce-1", "time": "2026-12-02T10:00:00Z",
            "source": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct",
            "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
            "data": {"api": "PutBlockList", "eTag": "0x8DC", "contentLength": 1234}}


def test_the_event_grid_schema_in_base64_as_a_storage_queue_holds_it():
    event = event_grid_event("acct", "videos", "incoming/Holiday 2024.MOV", "0x8D1", 99)
    [got] = read_message(queue_message(event))
    assert got == BlobCreated("videos", "incoming/Holiday 2024.MOV", "0x8D1", 99, event["id"], event["eventTime"],
                              "PutBlob")


def test_cloud_events_as_plain_json_as_service_bus_delivers_them():
    [got] = read_message(json.dumps(cloud_event("incoming/a/b.mp4")))
    assert (got.container, got.blob, got.etag, got.size, got.event_time) == (
        "videos", "incoming/a/b.mp4", "0x8DC", 1234, "2026-12-02T10:00:00Z")


def test_a_batch_of_events_in_one_message_and_other_event_types_left_out():
    deleted = event_grid_event("acct", "videos", "incoming/gone.mp4", "0x1", 1) | {
        "eventType": "Microsoft.Storage.BlobDeleted"}
    validation = {"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "id": "v", "subject": "",
                  "data": {"validationCode": "x"}}
    text = json.dumps([cloud_event("incoming/1.mp4"), deleted, validation, cloud_event("incoming/2.mp4")])
    assert [e.blob for e in read_message(base64.b64encode(text.encode()))] == ["incoming/1.mp4", "incoming/2.mp4"]


@pytest.mark.parametrize(("message", "words"), [
    ("hello", "not JSON, nor base64 of JSON"),
    (base64.b64encode(b"\xff\xfe binary").decode(), "not JSON, nor base64 of JSON"),
    ("42", "not an Event Grid event"),
    ("[]", "not an Event Grid event"),
    (json.dumps({"subject": "/blobServices/default/containers/v/blobs/a.mp4"}), "has no eventType"),
    (json.dumps({"eventType": BLOB_CREATED, "id": "e1"}), "without a subject (id 'e1')"),
    (json.dumps({"eventType": BLOB_CREATED, "subject": "/containers/v/a.mp4"}), "names no blob"),
])
def test_a_message_that_is_no_event_is_refused_saying_why(message, words):
    with pytest.raises(MalformedEvent, match=re.escape(words)):
        read_message(message)


@pytest.mark.parametrize(("blob", "container", "why"), [
    ("incoming/clip.mp4", "videos", None),
    ("incoming/deep/CLIP.MOV", "videos", None),
    ("incoming/clip.mp4", "archive", "another container (archive, not videos)"),
    ("outputs/clip.mp4", "videos", "outside the watched prefix incoming/"),
    ("incoming/folder/", "videos", "a folder"),
    ("incoming/notes.txt", "videos", "not a video name"),
])
def test_events_outside_the_pipelines_business_are_told_apart(blob, container, why):
    reason = why_not_a_video(BlobCreated(container, blob), "videos", "incoming/", SUFFIXES)
    assert reason == why if why is None else reason.startswith(why)
