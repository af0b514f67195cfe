"""AzureMLJobTrigger: waits in the triggerer for one Azure ML job to end.

The scoring task defers on it right after submitting, so no worker slot is held while the image
is built, a GPU node starts, queues and scores (the ``scoring`` pool still counts the task: it
bounds how many jobs are in flight). It polls the job's status with an interval that grows by
half up to its maximum and starts again at each change of status, and ends with one event:

- ``success``: Completed;
- ``failed``: Failed or Canceled, with the job's own error and its code (UserError, ...);
- ``timeout``: the job spent longer than its limit in one phase: ``prepare_timeout`` in
  Preparing (the image build after a provision, before any node), ``queue_timeout`` waiting
  for a node (Queued and the states before it; Paused or Unknown before it ever ran), or
  ``run_timeout`` on one (Running, Finalizing, NotResponding; Paused or Unknown once it ran),
  or ``cancel_wait`` stuck in CancelRequested. Each phase's time adds up over the job's life and
  is counted from the service's own times where it keeps them, so a triggerer restart does not
  reset it; a job requeued after it had run (a preempted node the service retried) counts
  its wait again from when this trigger saw it queued, not from its creation;
- ``hung``: NotResponding for longer than ``not_responding_grace`` (the service documents that
  a job can recover; one that does goes on being waited for);
- ``error``: the status could not be read for longer than ``outage_timeout`` (a time, not a
  count of failed reads: azure-core already retries each read). The job itself may be fine:
  nothing is cancelled, and the task's retry reattaches to it;
- ``refused``: the sign-in was refused (a rotated secret, a removed role): every chunk's
  trigger meets the same, so the chunk fails once with the cause; the job is left as it is;
- ``gone``: the job no longer exists.
A user who marks the deferred task failed or clears it cancels the job (``on_kill``), with the
client this trigger signs in with (one sign-in, even when on_kill comes before the first poll
has finished); ``cleanup`` closes it. Airflow 3.3.2's triggerer also calls on_kill for a
trigger that was handed to another triggerer (its orphan cancellation uses the user-action
path): when the task is still deferred, the job is healthy and is left running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from vidstyle.hooks import azureml as states
from vidstyle.hooks.azureml import AzureMLHook

BACKOFF = 1.5
PREPARING, QUEUED, ON_NODE, CANCELLING = "preparing", "queued", "on a node", "cancelling"


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
    :param prepare_timeout: seconds the job may spend in Preparing (building its image).
    :param cancel_wait: seconds a job may stay CancelRequested before this trigger stops waiting.
    :param outage_timeout: seconds the job's status may stay unreadable before the try ends.
    """

    def __init__(self, conn_id: str, job_name: str, label: str, queue_timeout: float, run_timeout: float,
                 not_responding_grace: float = 600.0, poll_seconds: float = 15.0, max_poll_seconds: float = 30.0,
                 prepare_timeout: float = 3600.0, cancel_wait: float = 900.0,
                 outage_timeout: float = 1800.0) -> None:
        super().__init__()
        self.conn_id, self.job_name, self.label = conn_id, job_name, label
        self.limits = {PREPARING: prepare_timeout, QUEUED: queue_timeout, ON_NODE: run_timeout,
                       CANCELLING: cancel_wait}
        self.not_responding_grace = not_responding_grace
        self.poll_seconds, self.max_poll_seconds = poll_seconds, max_poll_seconds
        self.outage_timeout = outage_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"conn_id": self.conn_id, "job_name": self.job_name, "label": self.label,
                 "queue_timeout": self.limits[QUEUED], "run_timeout": self.limits[ON_NODE],
                 "not_responding_grace": self.not_responding_grace, "poll_seconds": self.poll_seconds,
                 "max_poll_seconds": self.max_poll_seconds, "prepare_timeout": self.limits[PREPARING],
                 "cancel_wait": self.limits[CANCELLING], "outage_timeout": self.outage_timeout})

    def _event(self, status: str, job_status: str | None, error: str = "", url: str = "",
               code: str | None = None) -> TriggerEvent:
        return TriggerEvent({"status": status, "job": self.job_name, "job_status": job_status, "error": error,
                             "error_code": code, "studio_url": url})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from azure.core.exceptions import AzureError, ClientAuthenticationError

        hook = self._hook = AzureMLHook(self.conn_id)
        # The first read signs in. It runs on even if this coroutine is cancelled (a user's
        # action), so that on_kill can wait for it and use its token instead of signing in again.
        first = self._first_read = asyncio.ensure_future(asyncio.to_thread(hook.get_job, self.job_name))
        clock = _Clock()
        interval, last, failing_since = self.poll_seconds, None, None
        while True:
            try:
                reading = first or asyncio.ensure_future(asyncio.to_thread(hook.get_job, self.job_name))
                first = None
                job = await asyncio.shield(reading)
                failing_since = None
            except ClientAuthenticationError as exc:  # no retry signs in again: say so once, with the cause
                yield self._event("refused", last, f"Azure ML refused the sign-in: {exc.message or exc}")
                return
            except AzureError as exc:  # throttling, an outage: keep waiting, for a time
                failing_since = failing_since or time.monotonic()
                down = time.monotonic() - failing_since
                self.log.warning("%s: status of job %s unavailable for %.0f s (limit %.0f s): %s", self.label,
                                 self.job_name, down, self.outage_timeout, exc)
                if down > self.outage_timeout:
                    yield self._event("error", last, f"Azure ML API kept failing for {down:.0f} s (limit "
                                                     f"{self.outage_timeout:.0f} s): {type(exc).__name__}: {exc}")
                    return
            else:
                if job is None:
                    yield self._event("gone", last, "the job no longer exists in the workspace")
                    return
                if states.status_of(job) != last:
                    last = states.status_of(job)
                    self.log.info("%s: Azure ML job %s is %s", self.label, self.job_name, last)
                    # A new phase (on a node, say) starts its own backoff: its end is noticed sooner.
                    interval = self.poll_seconds
                if event := await self._judge(hook, job, clock):
                    yield event
                    return
            await asyncio.sleep(interval)
            interval = min(interval * BACKOFF, self.max_poll_seconds)

    async def _judge(self, hook: AzureMLHook, job: Any, clock: _Clock) -> TriggerEvent | None:
        """The event the job's status calls for now, if any."""
        status, url, now = states.status_of(job), getattr(job, "studio_url", "") or "", time.time()
        if status == states.COMPLETED:
            return self._event("success", status, url=url)
        if status in states.ENDED_BADLY:
            code, message = await asyncio.to_thread(hook.job_failure, self.job_name)
            return self._event("failed", status, f"{code}: {message}" if code else message, url, code)
        if clock.history is None:  # once per trigger: what the run history says it went through
            clock.history = await asyncio.to_thread(hook.job_times, self.job_name)
        phase = clock.observe(status, now, _created(job))
        if phase and clock.spent(phase, now) > self.limits[phase]:
            what, setting = OVERRUNS[phase]
            spent, limit = clock.spent(phase, now) / 60, self.limits[phase] / 60
            return self._event("timeout", status, f"{what.format(minutes=spent)} (job status {status}; limit: "
                                                  f"{setting} = {limit:.0f})", url)
        if status == states.NOT_RESPONDING and clock.not_responding(now) > self.not_responding_grace:
            return self._event("hung", status, f"not responding for {clock.not_responding(now) / 60:.0f} min", url)
        if status in (states.PAUSED, states.UNKNOWN):
            self.log.warning("%s: Azure ML job %s is %s; waiting (counted as %s, its limit applies)", self.label,
                             self.job_name, status, phase)
        return None

    async def on_kill(self) -> None:
        """The user marked the deferred task failed, success, or cleared it: stop paying for the job.
        The client this trigger polls with (signed in once, shared with a first poll still
        signing in): Airflow gives on_kill 30 s. A refused cancel is logged by the hook and raised
        (the triggerer logs it too)."""
        if await self._still_deferred():
            self.log.warning("%s: the trigger left this triggerer while its task is still deferred (handed to "
                             "another triggerer): Azure ML job %s is left running", self.label, self.job_name)
            return
        hook = getattr(self, "_hook", None) or AzureMLHook(self.conn_id)
        if (first := getattr(self, "_first_read", None)) is not None:  # signing in: wait for it, not anew
            await asyncio.wait({first}, timeout=20)
        if await asyncio.to_thread(hook.cancel_job, self.job_name):
            self.log.warning("%s: cancelled Azure ML job %s", self.label, self.job_name)

    async def _still_deferred(self) -> bool:
        """Whether the task is still deferred: true only when the trigger was moved, not killed.
        Asked through the Task SDK, as Airflow's own triggers ask; unknown counts as killed."""
        ti = self.task_instance
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
            from asgiref.sync import sync_to_async

            count = await sync_to_async(RuntimeTaskInstance.get_ti_count)(
                dag_id=ti.dag_id, map_index=ti.map_index, task_ids=[ti.task_id], run_ids=[ti.run_id],
                states=["deferred"])
        except Exception as exc:  # no supervisor to ask: a user's action, as before
            self.log.info("%s: could not ask whether the task is still deferred (%s): cancelling", self.label,
                          type(exc).__name__)
            return False
        return bool(count)

    async def cleanup(self) -> None:
        """The trigger is done (its event sent, cancelled or moved): close its credential."""
        hook = getattr(self, "_hook", None)
        if hook is not None:
            await asyncio.to_thread(hook.close)
        await super().cleanup()


OVERRUNS = {  # phase -> what happened, the limit's name
    PREPARING: ("spent {minutes:.0f} min preparing, building its image", "azureml_prepare_timeout_minutes"),
    QUEUED: ("waited {minutes:.0f} min for a node", "azureml_queue_timeout_minutes"),
    ON_NODE: ("ran {minutes:.0f} min on a node", "azureml_job_timeout_minutes + 10"),
    CANCELLING: ("waited {minutes:.0f} min for its cancel to end", "the cancel wait, minutes"),
}


def _created(job: Any) -> float | None:
    context = getattr(job, "creation_context", None)
    created = getattr(context, "created_at", None)
    return created.timestamp() if created else None


class _Clock:
    """Time a job spent in each phase (preparing, waiting for a node, on one, being cancelled),
    from the statuses seen while polling and, for the time before this trigger, the run history."""

    def __init__(self) -> None:
        self.history: dict | None = None  # created, started, ended (the run history's)
        self.totals: dict[str, float] = {}
        self.phase: str | None = None
        self.since: float | None = None
        self.ran = False  # the job has been on a node (now or, by its run history, before)
        self.not_responding_since: float | None = None

    def _phase_of(self, status: str) -> str | None:
        if status == states.PREPARING:
            return PREPARING
        if status in states.QUEUED:
            return QUEUED
        if status in states.ON_NODE or status == states.NOT_RESPONDING:
            return ON_NODE
        if status == states.CANCEL_REQUESTED:
            return CANCELLING
        if status in (states.PAUSED, states.UNKNOWN):
            return ON_NODE if self.ran else QUEUED
        return None

    def observe(self, status: str, now: float, created: float | None) -> str | None:
        """Record the status seen at ``now``; returns its phase."""
        started = (self.history or {}).get("started")
        self.ran = self.ran or bool(started) or status in states.ON_NODE
        phase = self._phase_of(status)
        if phase != self.phase:
            if self.phase is not None and self.since is not None:
                self.totals[self.phase] = self.totals.get(self.phase, 0.0) + now - self.since
            self.phase, self.since = phase, now
            if not self.totals:  # this trigger's first look: the time before it, where the service knows it
                self.since = self._began(phase, now, created, started)
        self.not_responding_since = (self.not_responding_since or now) if status == states.NOT_RESPONDING else None
        return phase

    def _began(self, phase: str | None, now: float, created: float | None, started: float | None) -> float:
        if phase == ON_NODE and started:
            return started
        # Queued, Preparing, being cancelled: from now. The run history keeps no time for the end
        # of the image build, and counting from the job's creation charged a long build (its own
        # limit) to the queue: a restart forgets the queue time before it instead.
        return now

    def spent(self, phase: str, now: float) -> float:
        ongoing = now - self.since if self.phase == phase and self.since is not None else 0.0
        return self.totals.get(phase, 0.0) + ongoing

    def not_responding(self, now: float) -> float:
        return now - self.not_responding_since if self.not_responding_since else 0.0
