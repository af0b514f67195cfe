"""``vidstyle ui``: the local Airflow (standalone: API server and UI, scheduler, triggerer, DAG
processor, on PostgreSQL) wired to Azurite. Open http://localhost:8080; the admin password is
printed at start and kept in the Airflow home's ``simple_auth_manager_passwords.json.generated``.
Upload a video (``vidstyle upload my.mp4``, or drop it on the Videos page: http://localhost:8080/videos/,
also in the UI's navigation) to see the automatic path."""

from __future__ import annotations

import argparse
import os
import subprocess

from vidstyle.cli import local


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(a: argparse.Namespace) -> int:
    env = local.apply()
    from vidstyle.cli import stack

    stack.start_local(env)
    subprocess.run(["airflow", "dags", "reserialize"], env=env, capture_output=True, check=False)
    print("[ui] Airflow at http://localhost:8080; the Videos page at http://localhost:8080/videos/", flush=True)
    os.execvpe("airflow", ["airflow", "standalone"], env)
    return 0  # not reached: exec replaced this process
