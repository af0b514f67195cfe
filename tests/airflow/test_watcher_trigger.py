"""The deferred path: NewVideoTrigger polling Azurite, as the triggerer runs it."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time

import pytest

from vidstyle.airflow.triggers.new_video import NewVideoTrigger
from vidstyle.pipeline.identity import current_video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import QUEUED, Ledger
from vidstyle.pipeline.settings import load_settings


def make_trigger(container: str) -> NewVideoTrigger:
    s = load_settings()
    return NewVideoTrigger(s.wasb_conn_id, container, s.input_prefix, s.state_prefix, s.video_suffixes,
                           poke_interval=0.3)


def test_trigger_serializes_to_an_importable_class(container):
    path, kwargs = make_trigger(container).serialize()
    module, _, name = path.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (path, kwargs)


@pytest.mark.timeout(60)
def test_trigger_waits_then_fires_with_only_the_new_video(store, tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"old")
    store.upload(f, "incoming/old.mp4")
    layout = Layout(load_settings())
    Ledger(store, layout).record(current_video(store, "incoming/old.mp4"), "r", QUEUED, layout.default_output(), True)

    async def scenario():
        events = make_trigger(store.container).run()
        waiting = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(1.0)
        assert not waiting.done()  # only a processed video there: keeps waiting
        f.write_bytes(b"new")
        await asyncio.to_thread(store.upload, f, "incoming/new.mp4")
        event = await asyncio.wait_for(waiting, timeout=20)
        await events.aclose()
        return event.payload

    payload = asyncio.run(scenario())
    assert payload["status"] == "success"
    assert [v["blob"] for v in payload["videos"]] == ["incoming/new.mp4"]


@pytest.mark.timeout(60)
def test_polling_does_not_log_every_storage_requests_headers(store, caplog):
    """The Azure SDK logs each request's URL and headers at INFO: 125 KB in 17 minutes of polling."""
    import logging

    from vidstyle.hooks import quiet_azure_http_logging

    async def poll_a_while():
        events = make_trigger(store.container).run()
        waiting = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(1.5)  # several polls of an empty prefix
        waiting.cancel()

    def azure_info_lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.startswith("azure.") and r.levelno < logging.WARNING]

    caplog.set_level(logging.INFO)
    try:
        quiet_azure_http_logging(verbose=True)  # as it was: every poll logs its requests
        asyncio.run(poll_a_while())
        assert len(azure_info_lines()) >= 2 and "x-ms-version" in caplog.text
        caplog.clear()
    finally:
        quiet_azure_http_logging()  # what importing the package does by default
    asyncio.run(poll_a_while())
    assert azure_info_lines() == [] and "x-ms-version" not in caplog.text


@pytest.mark.timeout(120)
def test_trigger_waits_for_a_container_that_does_not_exist_yet_then_fires_once_a_video_is_in_it(azurite, tmp_path):
    """Looks into a missing container without failing (three looks, counted as its scans return),
    and fires with the video once the container exists and holds one."""
    import uuid

    from vidstyle.hooks.blob_store import BlobStore

    name = f"later-{uuid.uuid4().hex[:12]}"
    store = BlobStore(load_settings().wasb_conn_id, name)
    (f := tmp_path / "v.mp4").write_bytes(b"first upload")
    trigger, scans = make_trigger(name), []
    real_scan = trigger._scan

    async def counted_scan(client):  # the real scan, its answers kept
        scans.append(await real_scan(client))
        return scans[-1]

    trigger._scan = counted_scan

    async def scenario():
        events = trigger.run()
        waiting = asyncio.ensure_future(events.__anext__())
        async with asyncio.timeout(60):
            while len(scans) < 3:
                assert not waiting.done(), waiting.result().payload  # never fires (nor errs) on no container
                await asyncio.sleep(0.05)
        assert scans[:3] == [[], [], []] and not waiting.done()
        await asyncio.to_thread(store.ensure_container)
        await asyncio.to_thread(store.upload, f, "incoming/first.mp4")
        event = await asyncio.wait_for(waiting, timeout=30)
        await events.aclose()
        return event.payload

    try:
        payload = asyncio.run(scenario())
    finally:
        if store.hook.blob_service_client.get_container_client(name).exists():
            store.hook.blob_service_client.delete_container(name)
    assert payload["status"] == "success", payload
    assert [v["blob"] for v in payload["videos"]] == ["incoming/first.mp4"]


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("serialized_dags")
def test_watcher_run_defers_until_a_video_arrives(store, tmp_path, monkeypatch):
    """dag.test() runs the deferred trigger inline; an upload while it waits completes the run."""
    from vidstyle.cli.localrun import load_dag

    monkeypatch.setenv("AIRFLOW__VIDSTYLE__ARRIVALS", "listing")
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__SENSOR_POKE_SECONDS", "2")
    f = tmp_path / "late.mp4"
    f.write_bytes(b"arrives late")

    def upload_later():
        time.sleep(8)
        store.upload(f, "incoming/late.mp4")

    threading.Thread(target=upload_later, daemon=True).start()
    started = time.monotonic()
    dr = load_dag("video_arrivals").test()
    assert str(dr.state) == "success"
    assert time.monotonic() - started >= 8  # it really waited for the upload
    entry = Ledger(store, Layout(load_settings())).get(current_video(store, "incoming/late.mp4").video_id)
    assert entry["status"] == QUEUED and entry["run_id"].split("__")[2].startswith("late-")
