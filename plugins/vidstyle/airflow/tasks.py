"""Glue between a task's context and the pipeline's steps: its VideoRun, failing well, other runs'
states as Airflow reports them, and the failure callback that records a failure in the ledger."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from airflow.sdk import DagRunState
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowRuntimeError

from vidstyle.hooks.blob_store import BlobChanged
from vidstyle.pipeline.backends import ChunkTask, get_backend
from vidstyle.pipeline.errors import BadInput
from vidstyle.pipeline.identity import Video
from vidstyle.pipeline.params import JobParams
from vidstyle.pipeline.run import VideoRun
from vidstyle.pipeline.settings import load_settings

log = logging.getLogger(__name__)


def video_run(context: Any, video: dict | None = None) -> VideoRun:
    """The run's VideoRun, pinned to the content version ``start`` recorded when given."""
    return VideoRun(load_settings(), JobParams.of(context["params"]), context["run_id"],
                    Video.from_dict(video) if video else None)


@contextlib.contextmanager
def failing_well(what: str, blob: str) -> Iterator[None]:
    """Name the video in every failure; bad input fails at once instead of retrying."""
    try:
        yield
    except AirflowException:
        raise
    except (BadInput, BlobChanged) as exc:
        raise AirflowFailException(f"video {blob}: {what}: bad input: {exc}") from exc
    except Exception as exc:
        raise RuntimeError(f"video {blob}: {what}: {type(exc).__name__}: {exc}") from exc


def state_value(state: Any) -> str | None:
    """A state as the value Airflow defines for it. Airflow's states are ``str`` enums, but the
    Task SDK's own ``DagRunState`` does not override ``str()``: ``str(DagRunState.RUNNING)`` is
    ``'DagRunState.RUNNING'``, never ``'running'``, and an enum hashes by its name, so it is not
    found in a set of plain strings either. Every comparison of a state goes through this."""
    return None if state is None else getattr(state, "value", state)


LIVE_RUN_STATES = frozenset({DagRunState.QUEUED.value, DagRunState.RUNNING.value})


def _not_found(exc: Exception) -> bool:
    """The Execution API's 404 for a run that does not exist (deleted, or never created)."""
    if isinstance(exc, AirflowRuntimeError):
        return (exc.error.detail or {}).get("status_code") == HTTPStatus.NOT_FOUND
    response = getattr(exc, "response", None)  # the API client's own error, where no supervisor translates it
    return getattr(response, "status_code", None) == HTTPStatus.NOT_FOUND


def dagrun_state(context: Any, dag_id: str, run_id: str) -> str | None:
    """A run's state asked through the Task SDK (a task has no database of its own); None when
    the run does not exist. Any other error is raised: a run whose state cannot be read is
    never taken as ended (that would break a live run's claim, or mark it failed)."""
    try:
        return state_value(context["ti"].get_dagrun_state(dag_id=dag_id, run_id=run_id))
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def run_is_live(context: Any, dag_id: str) -> Callable[[str], bool]:
    """Whether a run of ``dag_id`` is still queued or running. A run that does not exist is not live."""
    def is_live(run_id: str) -> bool:
        state = dagrun_state(context, dag_id, run_id)
        if state is None:
            log.info("run %s of %s does not exist: taken as ended", run_id, dag_id)
        return state in LIVE_RUN_STATES

    return is_live


def on_task_failure(context: Any) -> None:
    """Record the failure (video, task or chunk, cause) in the ledger; work blobs are kept."""
    ti = context["ti"]
    where = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
    task = context.get("task")
    work = getattr(task, "work", None)
    if isinstance(work, dict) and work.get("chunk_label"):
        where = f"{ti.task_id} ({work['chunk_label']})"
    error = str(context.get("exception") or "unknown error")
    log.error("FAILED %s of run %s: %s", where, context["run_id"], error)
    with contextlib.suppress(Exception):  # the callback must never mask the original failure
        pinned = ti.xcom_pull(task_ids="start")  # the content version this run works on, if known
        video_run(context, pinned).record_failure(where, error)


def cancel_leftover_jobs(context: Any) -> list[str]:
    """Once every chunk task has ended: any remote job still running for one of them, cancelled.
    A chunk marked failed before its trigger started is never handed to on_kill (Airflow deletes
    the trigger unstarted), so its job would run on; this finds it by its deterministic name.
    A job it could not cancel (or look for) is logged and fails this task: a job may be billing,
    and a failed task is what a person sees. The run's own outcome is the chunks'."""
    chunks = context["ti"].xcom_pull(task_ids="split") or []
    by_backend: dict[str, list[ChunkTask]] = {}
    for work in chunks:
        by_backend.setdefault(work["backend"], []).append(ChunkTask(**{k: v for k, v in work.items()
                                                                      if k != "backend"}))
    cancelled: list[str] = []
    for name, tasks in by_backend.items():
        try:
            cancelled += get_backend(name).cancel_leftovers(tasks, context["run_id"])
        except Exception as exc:
            log.error("%s jobs may be left running (and billing): %s: %s", name, type(exc).__name__, exc)
            raise
    return cancelled
