"""Reconciling the ledger with Airflow: runs it calls queued or running that Airflow no longer runs.

A run killed hard (a worker lost with its machine, a local run's process killed, a metadata
database reset) never records how it ended, and its video would stay "running" forever, out
of the sweep's reach. Reconciling marks such runs failed, which the sweep picks up again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from vidstyle.pipeline.identity import Video
from vidstyle.pipeline.ledger import ACTIVE, FAILED, Ledger

log = logging.getLogger(__name__)

ENDED_UNSAID = "the Airflow run ended without recording how (killed or lost); the sweep starts the video again"


def reconcile(ledger: Ledger, is_live: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Mark failed every run the ledger calls active that is not queued or running in Airflow.
    Returns (video blob, run id) of each."""
    ended = []
    for entry in ledger.entries():
        video = Video.from_dict(entry["video"])
        for run_id, run in entry.get("runs", {}).items():
            if run.get("status") in ACTIVE and not is_live(run_id):
                ledger.end_run(video, run_id, FAILED, ENDED_UNSAID)
                log.warning("%s: run %s was %s in the ledger but has ended: marked failed", video.blob, run_id,
                            run["status"])
                ended.append((video.blob, run_id))
    return ended
