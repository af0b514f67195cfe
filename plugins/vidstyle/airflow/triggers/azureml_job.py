"""AzureMLJobTrigger: waits in the triggerer for one Azure ML job to end.

The scoring task defers on it right after submitting, so no worker slot is held while a GPU
node starts, queues and scores (the ``scoring`` pool still counts the task: it bounds how many
jobs are in flight). It polls the job's status with a growing interval and ends with one event:

- ``success``: Completed;
- ``failed``: Failed or Canceled, with the job's own error;
- ``timeout``: waited longer than ``queue_timeout`` for a node (time queued only, counted from
  the job's creation, so a triggerer restart does not reset it), or ran longer than
  ``run_timeout`` on one;
- ``hung``: NotResponding for longer than ``not_responding_grace`` (the service documents that
  a job can recover; one that does goes on being waited for);
- ``error``: the status could not be read, repeatedly. The job itself may be fine: nothing is
  cancelled, and the task's retry reattaches to it;
- ``gone``: the job no longer exists.
Paused and Unknown are waited through (logged); CancelRequested is waited through to Canceled.
A user who marks the deferred task failed or clears it cancels the job (``on_kill``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from vidstyle.hooks import azureml as states
from vidstyle.hooks.azureml import AzureMLHook

MAX_API_ERRORS = 5  # consecutive failed status calls before the try ends (without cancelling)
BACKOFF = 1.5


class AzureMLJobTrigger(BaseTrigger):
    """
    :param conn_id: the Azure ML connection.
    :param job_name: the job to wait for.
    :param label: what the job scores, for the log (video and chunk).
    :param queue_timeout: seconds the job may wait for a node, all told.
    :param run_timeout: seconds the job may run on a node (Azure ML stops it at its own limit;
        this is the backstop).
    :param not_responding_grace: seconds a job may be NotResponding before it is given up.
    :param poll_seconds: the first interval between status calls; it grows by half each time.
    :param max_poll_seconds: the longest interval.
    """

    def __init__(self, conn_id: str, job_name: str, label: str, queue_timeout: float, run_timeout: float,
                 not_responding_grace: float = 600.0, poll_seconds: float = 15.0,
                 max_poll_seconds: float = 120.0) -> None:
        super().__init__()
        self.conn_id, self.job_name, self.label = conn_id, job_name, label
        self.queue_timeout, self.run_timeout, self.not_responding_grace = queue_timeout, run_timeout, \
            not_responding_grace
        self.poll_seconds, self.max_poll_seconds = poll_seconds, max_poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"conn_id": self.conn_id, "job_name": self.job_name, "label": self.label,
                 "queue_timeout": self.queue_timeout, "run_timeout": self.run_timeout,
                 "not_responding_grace": self.not_responding_grace, "poll_seconds": self.poll_seconds,
                 "max_poll_seconds": self.max_poll_seconds})

    def _event(self, status: str, job_status: str | None, error: str = "", url: str = "") -> TriggerEvent:
        return TriggerEvent({"status": status, "job": self.job_name, "job_status": job_status, "error": error,
                             "studio_url": url})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from azure.core.exceptions import AzureError

        hook = self._hook = AzureMLHook(self.conn_id)
        clock = _Clock()
        interval, last, api_errors = self.poll_seconds, None, 0
        while True:
            try:
                job = await asyncio.to_thread(hook.get_job, self.job_name)
                api_errors = 0
            except AzureError as exc:  # throttling, a network blip: keep waiting, but not forever
                api_errors += 1
                self.log.warning("%s: status of job %s unavailable (%d/%d): %s", self.label, self.job_name,
                                 api_errors, MAX_API_ERRORS, exc)
                if api_errors >= MAX_API_ERRORS:
                    yield self._event("error", last, f"Azure ML API kept failing: {type(exc).__name__}: {exc}")
                    return
            else:
                if job is None:
                    yield self._event("gone", last, "the job no longer exists in the workspace")
                    return
                if job.status != last:
                    self.log.info("%s: Azure ML job %s is %s", self.label, self.job_name, job.status)
                    last = job.status
                if event := await self._judge(hook, job, clock):
                    yield event
                    return
            await asyncio.sleep(interval)
            interval = min(interval * BACKOFF, self.max_poll_seconds)

    async def _judge(self, hook: AzureMLHook, job: Any, clock: _Clock) -> TriggerEvent | None:
        """The event the job's status calls for now, if any."""
        status, url, now = job.status, getattr(job, "studio_url", "") or "", time.time()
        if status == states.COMPLETED:
            return self._event("success", status, url=url)
        if status in states.ENDED_BADLY:
            error = await asyncio.to_thread(hook.job_error, self.job_name)
            return self._event("failed", status, error, url)
        if status in states.ON_NODE and clock.node_since is None:  # maybe on a node for a while: since when?
            clock.node_since = (await asyncio.to_thread(hook.job_times, self.job_name))["started"]
        clock.observe(status, now, _created(job))
        if status in states.QUEUED and clock.queued(now) > self.queue_timeout:
            waited, limit = clock.queued(now) / 60, self.queue_timeout / 60
            return self._event("timeout", status, f"waited {waited:.0f} min for a node "
                                                  f"(limit: azureml_queue_timeout_minutes = {limit:.0f})", url)
        if clock.on_node(now) > self.run_timeout:
            ran, limit = clock.on_node(now) / 60, self.run_timeout / 60
            return self._event("timeout", status, f"ran {ran:.0f} min on a node "
                                                  f"(limit: azureml_job_timeout_minutes + 10 = {limit:.0f})", url)
        if status == states.NOT_RESPONDING and clock.not_responding(now) > self.not_responding_grace:
            return self._event("hung", status, f"not responding for {clock.not_responding(now) / 60:.0f} min", url)
        if status in (states.PAUSED, states.UNKNOWN):
            self.log.warning("%s: Azure ML job %s is %s; waiting (its limits still apply)", self.label,
                             self.job_name, status)
        return None

    async def on_kill(self) -> None:
        """The user marked the deferred task failed, success, or cleared it: stop paying for the job.
        The client this trigger polls with is signed in already: Airflow gives on_kill 30 s."""
        hook = getattr(self, "_hook", None) or AzureMLHook(self.conn_id)
        if await asyncio.to_thread(hook.cancel_job, self.job_name):
            self.log.warning("%s: cancelled Azure ML job %s", self.label, self.job_name)

    async def cleanup(self) -> None:
        """The trigger is done (its event sent, cancelled or moved): close its credential."""
        hook = getattr(self, "_hook", None)
        if hook is not None:
            await asyncio.to_thread(hook.close)
        await super().cleanup()


def _created(job: Any) -> float | None:
    context = getattr(job, "creation_context", None)
    created = getattr(context, "created_at", None)
    return created.timestamp() if created else None


class _Clock:
    """Time a job spent waiting for a node and on one, from the statuses seen while polling."""

    def __init__(self) -> None:
        self.queued_since: float | None = None
        self.node_since: float | None = None
        self.not_responding_since: float | None = None
        self.queued_before = 0.0  # queue time of earlier waits (a preempted job queued again)

    def observe(self, status: str, now: float, created: float | None) -> None:
        if status in states.QUEUED:
            if self.queued_since is None:
                # Never seen on a node: it has waited since it was created (this trigger may be new).
                self.queued_since = created if created and self.node_since is None else now
            self.node_since = None
        else:
            if self.queued_since is not None:
                self.queued_before += now - self.queued_since
                self.queued_since = None
            if status in states.ON_NODE | {states.NOT_RESPONDING} and self.node_since is None:
                self.node_since = now
        self.not_responding_since = (self.not_responding_since or now) if status == states.NOT_RESPONDING else None

    def queued(self, now: float) -> float:
        return self.queued_before + (now - self.queued_since if self.queued_since else 0.0)

    def on_node(self, now: float) -> float:
        return now - self.node_since if self.node_since else 0.0

    def not_responding(self, now: float) -> float:
        return now - self.not_responding_since if self.not_responding_since else 0.0
