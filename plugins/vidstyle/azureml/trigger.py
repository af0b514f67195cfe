"""AzureMLJobTrigger: waits in the triggerer for one Azure ML job to end.

The scoring task defers on it right after submitting, so no worker slot is held while a GPU
node starts, queues and scores. It polls the job's status with a growing interval, and ends
with one event: success, failed (with the job's own error), timeout, or error (the API kept
failing). A user who marks the deferred task failed or clears it cancels the job (on_kill).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from vidstyle.azureml import jobs
from vidstyle.azureml.hook import AzureMLHook

MAX_API_ERRORS = 5  # consecutive failed status calls before the task gives up (and retries)
BACKOFF = 1.5


class AzureMLJobTrigger(BaseTrigger):
    """
    :param conn_id: the Azure ML connection.
    :param job_name: the job to wait for.
    :param label: what the job scores, for the log (video and chunk).
    :param deadline: Unix time after which the wait ends with a ``timeout`` event.
    :param poll_seconds: the first interval between status calls; it grows by half each time.
    :param max_poll_seconds: the longest interval.
    """

    def __init__(self, conn_id: str, job_name: str, label: str, deadline: float, poll_seconds: float = 15.0,
                 max_poll_seconds: float = 120.0) -> None:
        super().__init__()
        self.conn_id, self.job_name, self.label, self.deadline = conn_id, job_name, label, deadline
        self.poll_seconds, self.max_poll_seconds = poll_seconds, max_poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"conn_id": self.conn_id, "job_name": self.job_name, "label": self.label, "deadline": self.deadline,
                 "poll_seconds": self.poll_seconds, "max_poll_seconds": self.max_poll_seconds})

    def _event(self, status: str, job_status: str | None, error: str = "", url: str = "") -> TriggerEvent:
        return TriggerEvent({"status": status, "job": self.job_name, "job_status": job_status, "error": error,
                             "studio_url": url})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        client = await asyncio.to_thread(AzureMLHook(self.conn_id).get_conn)
        interval, last, api_errors = self.poll_seconds, None, 0
        while True:
            try:
                job = await asyncio.to_thread(client.jobs.get, self.job_name)
                api_errors = 0
            except ResourceNotFoundError:
                yield self._event("failed", None, "the job no longer exists in the workspace")
                return
            except AzureError as exc:  # throttling, a network blip: keep waiting, but not forever
                api_errors += 1
                self.log.warning("%s: status of job %s unavailable (%d/%d): %s", self.label, self.job_name,
                                 api_errors, MAX_API_ERRORS, exc)
                if api_errors >= MAX_API_ERRORS:
                    yield self._event("error", last, f"Azure ML API kept failing: {type(exc).__name__}: {exc}")
                    return
            else:
                url = getattr(job, "studio_url", "") or ""
                if job.status != last:
                    self.log.info("%s: Azure ML job %s is %s", self.label, self.job_name, job.status)
                    last = job.status
                if job.status == jobs.COMPLETED:
                    yield self._event("success", job.status, url=url)
                    return
                if job.status in jobs.ENDED_BADLY:
                    error = await asyncio.to_thread(jobs.job_error, client, self.job_name)
                    yield self._event("failed", job.status, error, url)
                    return
            if time.time() >= self.deadline:
                yield self._event("timeout", last, "gave up waiting for the job")
                return
            await asyncio.sleep(min(interval, max(0.0, self.deadline - time.time())))
            interval = min(interval * BACKOFF, self.max_poll_seconds)

    async def on_kill(self) -> None:
        """The user marked the deferred task failed, success, or cleared it: stop paying for the job."""
        client = await asyncio.to_thread(AzureMLHook(self.conn_id).get_conn)
        if await asyncio.to_thread(jobs.cancel_job, client, self.job_name):
            self.log.warning("%s: cancelled Azure ML job %s", self.label, self.job_name)
