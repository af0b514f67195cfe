"""ArrivalOrder: every task of a video's run ranks by when the video arrived; first come, first served.

Airflow queues the highest priority weight first. With the default ("downstream") weights,
the chunks of every video weigh the same, so a video uploaded first could wait behind many
uploaded after it (seen: a video queued at +67 s started at +886 s). This strategy weighs each
task by its run's arrival time, read from the run id (the scheduler computes weights before
the run is even committed, so the id is all it can read): ``video__<upload time>__<id>`` for
runs the watcher and the sweep start, ``manual__<time>`` and the like for the rest.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow.task.priority_strategy import PriorityWeightStrategy

if TYPE_CHECKING:
    from airflow.models.taskinstance import TaskInstance

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
TOP = 2_000_000_000  # below 2**31: Airflow keeps weights in 32 bits; arrivals until 2087 fit
_VIDEO = re.compile(r"^video__(\d{8}T\d{6})__")
_ISO = re.compile(r"__(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?)")


def arrival(run_id: str) -> datetime | None:
    if m := _VIDEO.match(run_id):
        return datetime.strptime(m[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    if m := _ISO.search(run_id):
        t = datetime.fromisoformat(m[1].replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None


def weight(run_id: str) -> int:
    """Earlier arrivals weigh more; an id without a time weighs least."""
    t = arrival(run_id)
    return 1 if t is None else max(1, TOP - int((t - EPOCH).total_seconds()))


class ArrivalOrder(PriorityWeightStrategy):
    def get_weight(self, ti: TaskInstance) -> int:
        return weight(ti.run_id)


# How a DAG names it (default_args keep a name: an instance there would be serialized as its repr).
ARRIVAL_ORDER = f"{ArrivalOrder.__module__}.{ArrivalOrder.__qualname__}"


class FirstPathArrivalOrder(ArrivalOrder):
    """The same strategy under its first import path, ``vidstyle.priority.ArrivalOrder``: DAG
    versions serialized before the code was sorted into floors name it so, and Airflow refuses
    to load a DAG version whose strategy is not registered (the UI's view of an old run, a run
    still going at the upgrade). Registered by the plugin beside the current one; that module
    re-exports it, so the old path imports too."""


# Airflow finds a registered strategy by its class's module and name.
FirstPathArrivalOrder.__module__, FirstPathArrivalOrder.__qualname__ = "vidstyle.priority", "ArrivalOrder"
