"""The scoring pool in Airflow's metadata database: its size from the settings, counting deferred
tasks (a chunk waiting on a remote job keeps its slot, so the pool bounds the jobs in flight)."""

from __future__ import annotations

from vidstyle.pipeline.settings import Settings, pool_slots

DESCRIPTION = "Chunks scoring at once (on Azure ML: chunks with a job in flight)"


def ensure_pool(settings: Settings) -> str:
    """Create or resize the pool in the database this process's Airflow config names."""
    from airflow.models.pool import Pool

    slots, existing = pool_slots(settings), Pool.get_pool(settings.scoring_pool)
    if existing and (existing.slots, existing.include_deferred) == (slots, True):
        return "unchanged"
    Pool.create_or_update_pool(settings.scoring_pool, slots, DESCRIPTION, include_deferred=True)
    return "created" if existing is None else "updated"
