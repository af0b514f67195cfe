"""NewVideoSensor: the provider's WASB prefix sensor, narrowed to videos not yet processed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.microsoft.azure.sensors.wasb import WasbPrefixSensor
from airflow.sdk.exceptions import AirflowException

from vidstyle.airflow.triggers.new_video import NewVideoTrigger
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.identity import find_videos
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import Ledger, unprocessed
from vidstyle.pipeline.settings import Settings


class NewVideoSensor(WasbPrefixSensor):
    """Waits for video blobs under the input prefix that have no ledger entry; returns them.

    A plain prefix sensor fires as soon as anything is under the prefix, processed or not;
    this one compares with the ledger, so it waits (deferred, no worker slot) until there is
    new work, and its XCom is the list of new videos.
    """

    def __init__(self, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(container_name=settings.container, prefix=settings.input_prefix,
                         wasb_conn_id=settings.wasb_conn_id, **kwargs)
        self.settings = settings

    def find(self) -> list[dict]:
        store = BlobStore(self.wasb_conn_id, self.container_name)
        videos = find_videos(store, self.prefix, self.settings.suffixes)
        known = Ledger(store, Layout(self.settings)).known_ids()
        return [v.to_dict() for v in unprocessed(videos, known)]

    def poke(self, context: Any) -> bool:
        self._found = self.find()
        return bool(self._found)

    def execute(self, context: Any) -> list[dict]:
        if not self.deferrable:
            super().execute(context)
            return self._found
        found = self.find()
        if found:
            return self._report(found)
        self.defer(
            timeout=timedelta(seconds=self.timeout),
            trigger=NewVideoTrigger(self.wasb_conn_id, self.container_name, self.prefix,
                                    self.settings.state_prefix, self.settings.video_suffixes, self.poke_interval),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[dict]:
        if not event or event.get("status") != "success":
            raise AirflowException((event or {}).get("message", "no event from the trigger"))
        return self._report(event["videos"])

    def _report(self, videos: list[dict]) -> list[dict]:
        for v in videos:
            self.log.info("new video: wasb://%s/%s (version %s, id %s)", v["container"], v["blob"], v["version"],
                          v["video_id"])
        return videos
