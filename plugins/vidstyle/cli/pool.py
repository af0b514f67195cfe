"""``vidstyle pool``: create or resize Airflow's scoring pool from the settings (``scoring_pool``,
``scoring_pool_slots``; on Azure ML twice ``azureml_max_nodes`` unless set), counting deferred
tasks. Run where Airflow's database is: the bootstrap, ``vidstyle cluster``, compose's
``airflow-init`` and the Helm values all create the pool this way."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="print nothing when the pool is as configured")


def run(a: argparse.Namespace) -> int:
    from vidstyle.airflow.pool import ensure_pool
    from vidstyle.pipeline.settings import load_settings, pool_slots

    settings = load_settings()
    outcome = ensure_pool(settings)
    if not (a.quiet and outcome == "unchanged"):
        print(f"pool {settings.scoring_pool}: {pool_slots(settings)} slots, counting deferred tasks: {outcome}")
    return 0
