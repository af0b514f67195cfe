"""StorageQueueEventTrigger on Azurite's queue, driven by Airflow's own SharedStreamManager in ack
mode as the triggerer drives it: a message leaves the queue only once its asset event is stored;
one that is no event goes to the poison queue; noise is dropped; nothing blocks what is behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import ClassVar

import pytest

from tests.support import ROOT
from vidstyle.airflow.triggers.blob_events import MAX_DELIVERIES, StorageQueueEventTrigger, StorageQueueProducer
from vidstyle.hooks.queue_store import QueueStore, poison_queue
from vidstyle.pipeline.arrival_events import event_grid_event, queue_message
from vidstyle.pipeline.settings import Settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def queue(container):
    """A fresh arrivals queue (its poison queue left to the trigger to create)."""
    queues = QueueStore(Settings().wasb_conn_id)
    name = f"{container}-arrivals"
    queues.ensure(name)
    yield name
    for q in (name, poison_queue(name)):
        queues.delete(q)


def event(container: str, blob: str) -> str:
    return queue_message(event_grid_event("devstoreaccount1", container, blob, "0x1", 10))


class Settled(StorageQueueEventTrigger):
    """The real trigger whose real producer also notes each message it settles (deletes, moves to
    the poison queue, or leaves hidden), with the outcome: what the tests wait on."""

    settled: ClassVar[list[tuple[str, str]]] = []

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict) -> StorageQueueProducer:
        class Noting(StorageQueueProducer):
            async def advance(self, batch) -> None:
                await super().advance(batch)
                for item in batch:
                    outcome = item.outcome
                    cls.settled.append((item.broker_payload.content, "rejected" if outcome.rejected else
                                        "done" if outcome.is_clean else "failed"))
        return Noting(kwargs)


def trigger_for(container: str, queue: str) -> Settled:
    s = Settings(container=container)
    Settled.settled = []
    return Settled(s.wasb_conn_id, queue, container, s.input_prefix, s.video_suffixes, 0.2)


async def through_the_manager(trigger: Settled, messages: int, persist: bool = True, ack_timeout: float = 30,
                              deadline: float = 60) -> list[dict]:
    """Subscribe the trigger as the triggerer does, confirm each event stored (as the supervisor
    does once it is in the database) unless told not to, until the producer has settled
    ``messages`` messages (a deadline, not a window)."""
    from airflow.triggers.shared_stream import SharedStreamManager

    manager = SharedStreamManager(ack_timeout=ack_timeout)
    key = trigger.shared_stream_key()
    stream = trigger.filter_shared_stream(manager.subscribe(trigger_id=1, trigger=trigger, key=key))
    got: list[dict] = []

    async def consume():
        async for ev in stream:
            seq = manager.bind_pending_event(trigger_id=1, key=key)
            got.append(ev.payload)
            if persist and seq is not None:
                manager.confirm_persisted([seq])

    task = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(deadline):
            while len(trigger.settled) < messages:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await manager.unsubscribe(1, key)
        await manager.stop_all()
    return got


def test_events_become_trigger_events_and_leave_the_queue_noise_is_dropped_and_bad_messages_set_aside(
        container, queue):
    queues = QueueStore(Settings().wasb_conn_id)
    messages = [
        "not json at all",
        event(container, "incoming/a.mp4"),
        event(container, "incoming/a.mp4"),  # at least once: the same event again
        event(container, "incoming/notes.txt"),  # not a video
        event("elsewhere", "incoming/b.mp4"),  # another container
        event(container, "outputs/a.mp4"),  # another prefix
        '{"eventType": "Microsoft.Storage.BlobCreated", "id": "no-subject"}',
        event(container, "incoming/sub/B.MOV"),
    ]
    for m in messages:
        queues.send(queue, m)
    trigger = trigger_for(container, queue)
    got = asyncio.run(through_the_manager(trigger, len(messages)))
    assert [p["blob"] for p in got] == ["incoming/a.mp4", "incoming/a.mp4", "incoming/sub/B.MOV"]
    assert all(p["container"] == container and p["queue"] == queue for p in got)
    assert sorted(trigger.settled) == sorted([(m, "rejected" if i in (0, 6) else "done")
                                              for i, m in enumerate(messages)])
    assert queues.length(queue) == 0  # settled, nothing left hidden
    poisoned = queues.peek(poison_queue(queue))  # created by the trigger on the first reject
    assert sorted(poisoned) == sorted([messages[0], messages[6]])


def test_a_message_whose_asset_event_was_never_stored_stays_in_the_queue(container, queue):
    queues = QueueStore(Settings().wasb_conn_id)
    queues.send(queue, message := event(container, "incoming/a.mp4"))
    trigger = trigger_for(container, queue)
    got = asyncio.run(through_the_manager(trigger, 1, persist=False, ack_timeout=1))
    assert [p["blob"] for p in got] == ["incoming/a.mp4"]
    assert trigger.settled == [(message, "failed")]  # its ack timed out: left hidden
    assert queues.length(queue) == 1  # hidden for now, read again later: not lost
    assert queues.peek(poison_queue(queue)) == []


def test_a_message_read_too_often_goes_to_the_poison_queue(container, queue):
    queues = QueueStore(Settings().wasb_conn_id)
    queues.send(queue, message := event(container, "incoming/a.mp4"))
    client = queues.client.get_queue_client(queue)
    for _ in range(MAX_DELIVERIES):  # as if every reader died before settling it
        m = client.receive_message(visibility_timeout=30)
        client.update_message(m, pop_receipt=m.pop_receipt, visibility_timeout=0)
    trigger = trigger_for(container, queue)
    assert asyncio.run(through_the_manager(trigger, 1)) == []
    assert trigger.settled == [(message, "rejected")]
    assert queues.length(queue) == 0 and len(queues.peek(poison_queue(queue))) == 1


def test_without_the_manager_the_trigger_runs_alone_with_the_same_rules(container, queue):
    queues = QueueStore(Settings().wasb_conn_id)
    for m in ("{broken", event(container, "incoming/a.mp4")):
        queues.send(queue, m)

    async def first_event():
        trigger = trigger_for(container, queue)
        gen = trigger.run()
        ev = await asyncio.wait_for(gen.__anext__(), 20)
        await gen.aclose()
        return ev.payload

    assert asyncio.run(first_event())["blob"] == "incoming/a.mp4"
    assert queues.peek(poison_queue(queue)) == ["{broken"]


def test_the_trigger_round_trips_its_serialization_and_imports_alone():
    s = Settings(container="videos")
    t = StorageQueueEventTrigger(s.wasb_conn_id, "videos-arrivals", "videos", s.input_prefix, s.video_suffixes, 0.2)
    path, kwargs = t.serialize()
    assert StorageQueueEventTrigger(**kwargs).serialize() == (path, kwargs)
    code = f"import importlib; importlib.import_module({path.rsplit('.', 1)[0]!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
