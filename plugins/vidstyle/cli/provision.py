"""``vidstyle provision``: create or update what the Azure ML backend needs, idempotently
(vidstyle.pipeline.provisioning): the datastore, the GPU cluster and the scoring environment,
whose version it records for the workers. Run it from the project's checkout (it builds the
scoring image from it). ``--dry-run`` prints the specs and contacts nothing. The scoring pool is
Airflow's: ``vidstyle pool`` makes it where Airflow runs."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidstyle.pipeline.provisioning import RESOURCES

    p.add_argument("--only", action="append", choices=RESOURCES, help="a resource to handle (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the specs; contact nothing")


def run(a: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError

    from vidstyle.hooks.azureml import AzureMLHook
    from vidstyle.pipeline.provisioning import RESOURCES, ProvisionError, provision
    from vidstyle.pipeline.settings import load_settings

    settings = load_settings()
    try:
        hook = None if a.dry_run else AzureMLHook(settings.azureml_conn_id)
        provision(hook, settings, tuple(a.only or RESOURCES), a.dry_run)
    except (ProvisionError, ValueError, FileNotFoundError, AzureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
