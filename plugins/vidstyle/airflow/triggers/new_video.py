"""NewVideoTrigger: waits in the triggerer until a video with no ledger entry shows up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.microsoft.azure.hooks.wasb import WasbAsyncHook
from airflow.triggers.base import BaseTrigger, TriggerEvent
from azure.core.exceptions import ResourceNotFoundError

import vidstyle.hooks  # noqa: F401  (quiet Azure SDK request logs in the triggerer)
from vidstyle.pipeline.identity import Video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import known_ids, state_prefix, unprocessed
from vidstyle.pipeline.settings import Settings


class NewVideoTrigger(BaseTrigger):
    """Polls the input prefix and the ledger with the async WASB hook; fires with the new videos.

    Detection compares the store with the ledger on every poll, so a video uploaded while
    Airflow was down is found on the first poll after it comes back.
    """

    def __init__(self, wasb_conn_id: str, container: str, input_prefix: str, state_prefix: str,
                 video_suffixes: str, poke_interval: float = 30.0) -> None:
        super().__init__()
        self.wasb_conn_id, self.container = wasb_conn_id, container
        self.input_prefix, self.state_prefix, self.video_suffixes = input_prefix, state_prefix, video_suffixes
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "wasb_conn_id": self.wasb_conn_id, "container": self.container, "input_prefix": self.input_prefix,
            "state_prefix": self.state_prefix, "video_suffixes": self.video_suffixes,
            "poke_interval": self.poke_interval,
        })

    @property
    def _settings(self) -> Settings:
        return Settings(container=self.container, input_prefix=self.input_prefix, state_prefix=self.state_prefix,
                        video_suffixes=self.video_suffixes)

    async def _scan(self, client) -> list[dict]:
        settings = self._settings
        container = client.get_container_client(self.container)
        try:
            listing = container.list_blobs(name_starts_with=self.input_prefix)
            inputs = [Video.of_blob(self.container, p) async for p in listing
                      if p.name.lower().endswith(settings.suffixes)]
            layout = Layout(settings)
            names = [p.name async for p in container.list_blobs(name_starts_with=state_prefix(layout))]
        except ResourceNotFoundError:
            return []  # no container yet: nothing has been uploaded
        return [v.to_dict() for v in unprocessed(inputs, known_ids(layout, names))]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = WasbAsyncHook(wasb_conn_id=self.wasb_conn_id)
        try:
            async with await hook.get_async_conn() as client:
                while True:
                    videos = await self._scan(client)
                    if videos:
                        yield TriggerEvent({"status": "success", "videos": videos})
                        return
                    self.log.info("no new videos under wasb://%s/%s; next look in %ss",
                                  self.container, self.input_prefix, self.poke_interval)
                    await asyncio.sleep(self.poke_interval)
        except Exception as exc:
            yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
