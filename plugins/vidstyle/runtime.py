"""Glue between Airflow task contexts and the steps: building a VideoRun, failing well."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from vidstyle import steps
from vidstyle.backends.base import ScorerRejected
from vidstyle.blobs import BlobChanged
from vidstyle.config import load_settings
from vidstyle.layout import Video
from vidstyle.params import job_params

log = logging.getLogger(__name__)


def video_run(context: Any, video: dict | None = None) -> steps.VideoRun:
    """The run's VideoRun, pinned to the content version ``start`` recorded when given."""
    return steps.VideoRun(load_settings(), job_params(context["params"]), context["run_id"],
                          Video.from_dict(video) if video else None)


@contextlib.contextmanager
def failing_well(what: str, blob: str) -> Iterator[None]:
    """Name the video in every failure; bad input fails at once instead of retrying."""
    try:
        yield
    except AirflowException:
        raise
    except (steps.BadInput, ScorerRejected, BlobChanged) as exc:
        raise AirflowFailException(f"video {blob}: {what}: bad input: {exc}") from exc
    except Exception as exc:
        raise RuntimeError(f"video {blob}: {what}: {type(exc).__name__}: {exc}") from exc


LIVE_STATES = frozenset({"queued", "running"})


def run_is_live(context: Any, dag_id: str) -> Callable[[str], bool]:
    """Whether another run of ``dag_id`` is still queued or running, asked through the Task SDK
    (a task has no database of its own). A run that does not exist is not live."""
    def is_live(run_id: str) -> bool:
        try:
            return str(context["ti"].get_dagrun_state(dag_id=dag_id, run_id=run_id)) in LIVE_STATES
        except Exception as exc:  # the API answers "not found" with an error
            log.info("run %s of %s: no state (%s): taken as ended", run_id, dag_id, type(exc).__name__)
            return False

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
        steps.record_failure(video_run(context, pinned), where, error)
