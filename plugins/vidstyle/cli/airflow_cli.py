"""``vidstyle airflow ARGS...``: Airflow's own command line against the local installation, e.g.

    vidstyle airflow backfill create --dag-id video_backlog --from-date 2026-01-01 --to-date 2026-01-31
"""

from __future__ import annotations

import argparse
import os

from vidstyle.cli import local


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs=argparse.REMAINDER, help="what to pass to airflow")


def run(a: argparse.Namespace) -> int:
    env = local.environment()
    os.execvpe("airflow", ["airflow", *a.args], env)
    return 0  # not reached
