"""Blob-created events read as Event Grid writes them, in both schemas and both encodings, and
every way a message can fail to be one."""

from __future__ import annotations

import base64
import json
import re

import pytest

from tests.support import ROOT
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


# -- events as Microsoft documents them (tests/data/event_grid/README.md), not as event_grid_event writes them

DOCUMENTED = ROOT / "tests" / "data" / "event_grid"


def documented(name: str) -> str:
    return (DOCUMENTED / name).read_text()


@pytest.mark.parametrize("name", ["blob_created.event_grid.json", "blob_created.cloudevents.json"])
@pytest.mark.parametrize("encoding", ["as published (a list)", "one event, base64 (Storage Queue)",
                                      "one event, JSON (Service Bus)"])
def test_the_blob_pages_samples_are_read_field_for_field_in_both_schemas(name, encoding):
    text = documented(name)
    if encoding != "as published (a list)":
        [one] = json.loads(text)
        text = json.dumps(one) if "JSON" in encoding else base64.b64encode(json.dumps(one).encode()).decode()
    [got] = read_message(text)
    assert got == BlobCreated(container="test-container", blob="new-file.txt", etag='"0x8D4BCC2E4835CD0"',
                              size=524288, event_id="831e1650-001e-001b-66ab-eeb76e069631",
                              event_time="2017-06-26T18:41:00.9584103Z", api="PutBlockList")
    assert why_not_a_video(got, "test-container", "", (".txt",)) is None


def test_the_cloudevents_pages_sample_without_a_leading_slash_in_its_subject():
    [got] = read_message(documented("blob_created.cloudevents.schema_page.json"))
    assert got == BlobCreated(container="{storage-container}", blob="{new-file}", etag="0x8D76C39E4407333",
                              size=30699, event_id="9aeb0fdf-c01e-0131-0922-9eb54906e209",
                              event_time="2019-11-18T15:13:39.4589254Z", api="PutBlockList")


def test_an_sftp_upload_event_with_its_extra_fields():
    [got] = read_message(documented("blob_created.sftp.event_grid.json"))
    assert (got.container, got.blob, got.size, got.api) == ("testcontainer", "new-file.txt", 0, "SftpCommit")
    assert why_not_a_video(got, "testcontainer", "", (".txt",)) is None  # an empty file, not a folder


def test_a_documented_event_for_a_real_upload_starts_its_video(store, tmp_path):
    """The blob page's sample, its subject and URL pointed at a video uploaded to Azurite, its eTag
    the upload's: through the consumer and the dispatch, the video is found and is new."""
    from vidstyle.pipeline.arrivals import events_of, new_videos
    from vidstyle.pipeline.layout import Layout
    from vidstyle.pipeline.ledger import Ledger
    from vidstyle.pipeline.settings import load_settings

    (tmp_path / "v.mp4").write_bytes(b"a documented arrival")
    store.upload(tmp_path / "v.mp4", "incoming/Holiday 2024.MOV")
    etag = store.properties("incoming/Holiday 2024.MOV").etag
    [event] = json.loads(documented("blob_created.event_grid.json"))
    event["subject"] = event["subject"].replace("test-container", store.container).replace(
        "new-file.txt", "incoming/Holiday 2024.MOV")
    event["data"]["eTag"] = etag
    settings = load_settings()
    events = events_of([{"message": base64.b64encode(json.dumps(event).encode()).decode()}])
    [video] = new_videos(store, Ledger(store, Layout(settings)), events, settings)
    assert video["blob"] == "incoming/Holiday 2024.MOV" and video["container"] == store.container
