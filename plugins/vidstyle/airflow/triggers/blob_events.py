"""StorageQueueEventTrigger: an asset watcher's trigger on the Storage Queue that Event Grid feeds
with blob-created events (the provider has one for Service Bus, none for Storage Queues).

It runs in the triggerer's shared-stream ack mode: one poll per queue, and a message leaves the
queue only once the asset event made from it is stored in Airflow's database. Until then it
stays invisible in the queue; a triggerer that dies meanwhile leaves it to reappear and be read
again (at least once: the DAG's run ids make a duplicate harmless). A message that is no event
goes to the poison queue; one for another prefix or a non-video is logged and deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, SharedStreamProducer, reject_shared_stream_event
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

import vidstyle.hooks  # noqa: F401  (quiet Azure SDK request logs in the triggerer)
from vidstyle.hooks.queue_store import async_queue_service, poison_queue
from vidstyle.pipeline.arrival_events import MalformedEvent, describe, read_message, why_not_a_video

log = logging.getLogger(__name__)

MAX_DELIVERIES = 5  # a message read this often without being settled goes to the poison queue
BATCH = 32  # the most a Storage Queue hands out per request


@dataclass
class Message:
    """A received message: the raw event shared with the subscribers, and what settles it."""

    id: str
    content: str
    dequeue_count: int
    pop_receipt: str = ""


def visibility_seconds() -> int:
    """How long a read message stays hidden: longer than the triggerer waits for its asset event
    to be stored (``[triggerer] shared_stream_ack_timeout``), so it never shows twice while read."""
    from airflow.configuration import conf

    ack = conf.getfloat("triggerer", "shared_stream_ack_timeout", fallback=300.0)
    return int(ack + max(10.0, ack / 5))


class StorageQueueProducer(SharedStreamProducer):
    """Reads the queue (long hidden, in batches), deletes what was settled, moves rejects aside."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.conn_id, self.queue = kwargs["wasb_conn_id"], kwargs["queue"]
        self.poll_seconds = float(kwargs.get("poll_seconds", 5.0))
        self._service = None

    async def _client(self):
        if self._service is None:
            self._service = await async_queue_service(self.conn_id)
        return self._service.get_queue_client(self.queue)

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        queue = await self._client()
        hidden = visibility_seconds()
        while True:
            got = 0
            try:
                async for m in queue.receive_messages(messages_per_page=BATCH, max_messages=BATCH,
                                                      visibility_timeout=hidden):
                    got += 1
                    message = Message(m.id, m.content or "", m.dequeue_count or 1, m.pop_receipt)
                    yield message, message
            except ResourceNotFoundError:
                log.warning("queue %s does not exist (yet): run `vidstyle queue`; next look in %ss",
                            self.queue, self.poll_seconds)
            if got < BATCH:
                await asyncio.sleep(self.poll_seconds)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        queue = await self._client()
        for item in batch:
            message, outcome = item.broker_payload, item.outcome
            if outcome.rejected:
                await self._to_poison(message)
            elif outcome.is_clean:
                await _delete(queue, message)
            # failed, or no subscriber: left hidden, it shows again and is read again

    async def _to_poison(self, message: Message) -> None:
        await move_to_poison(self._service, self.queue, message)

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.close()


async def _delete(queue, message: Message) -> None:
    try:
        await queue.delete_message(message.id, message.pop_receipt)
    except ResourceNotFoundError:
        pass  # gone already (its hidden spell ran out and a second reader settled it)


async def move_to_poison(service, queue_name: str, message: Message) -> None:
    """Copy a message to the poison queue (created if missing), then delete it from its queue."""
    poison = service.get_queue_client(poison_queue(queue_name))
    try:
        await poison.send_message(message.content)
    except ResourceNotFoundError:
        try:
            await poison.create_queue()
        except ResourceExistsError:
            pass
        await poison.send_message(message.content)
    log.warning("message %s moved to %s", message.id, poison_queue(queue_name))
    await _delete(service.get_queue_client(queue_name), message)


class StorageQueueEventTrigger(BaseEventTrigger):
    """Fires once per blob-created event for a video under the watched prefix."""

    def __init__(self, wasb_conn_id: str, queue: str, container: str, input_prefix: str, video_suffixes: str,
                 poll_seconds: float = 5.0) -> None:
        super().__init__()
        self.wasb_conn_id, self.queue, self.container = wasb_conn_id, queue, container
        self.input_prefix, self.video_suffixes, self.poll_seconds = input_prefix, video_suffixes, poll_seconds
        self._rejected = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "wasb_conn_id": self.wasb_conn_id, "queue": self.queue, "container": self.container,
            "input_prefix": self.input_prefix, "video_suffixes": self.video_suffixes,
            "poll_seconds": self.poll_seconds,
        })

    @property
    def suffixes(self) -> tuple[str, ...]:
        return tuple(s.strip().lower() for s in self.video_suffixes.split(",") if s.strip())

    def shared_stream_key(self) -> Hashable | None:
        return ("vidstyle-storage-queue", self.wasb_conn_id, self.queue)

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SharedStreamProducer:
        return StorageQueueProducer(kwargs)

    def _reject(self, message: Message, why: str) -> None:
        self.log.warning("queue %s: message %s moved aside (read %d times): %s", self.queue, message.id,
                         message.dequeue_count, why)
        self._rejected = True
        reject_shared_stream_event()

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for message in shared_stream:
            self._rejected = False
            if message.dequeue_count > MAX_DELIVERIES:
                self._reject(message, f"read {MAX_DELIVERIES} times without being settled")
                continue
            try:
                events = read_message(message.content)
            except MalformedEvent as exc:
                self._reject(message, str(exc))
                continue
            for event in events:
                why = why_not_a_video(event, self.container, self.input_prefix, self.suffixes)
                if why:
                    self.log.info("dropped %s: %s", describe(event), why)
                    continue
                self.log.info("upload: %s", describe(event))
                yield TriggerEvent(event.to_dict() | {"queue": self.queue})
            if not events:
                self.log.info("queue %s: message %s holds no blob-created event; dropped", self.queue, message.id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Without the shared-stream manager (a test, an older triggerer): the same filter; a
        message is settled once the event made from it has been taken."""
        producer = StorageQueueProducer(self.serialize()[1])

        async def stream() -> AsyncIterator[Message]:
            async for message, _ in producer.open_stream():
                yield message
                await self._settle(producer, message)

        try:
            async for event in self.filter_shared_stream(stream()):
                yield event
        finally:
            await producer.aclose()

    async def _settle(self, producer: StorageQueueProducer, message: Message) -> None:
        if self._rejected:
            await producer._to_poison(message)
        else:
            await _delete(await producer._client(), message)
