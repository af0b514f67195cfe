"""What the benchmarks drive a ``vidstyle cluster`` with: its command in a child process, and
queries on its Airflow database."""

from __future__ import annotations

import subprocess
import sys

from vidstyle.cli import local


def cluster(*args: str, env: dict, timeout: float = 900) -> str:
    """``vidstyle cluster ARGS`` with this interpreter; its output, or SystemExit saying why not."""
    done = subprocess.run([sys.executable, "-m", "vidstyle.cli.main", "cluster", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"vidstyle cluster {' '.join(args)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def sql(env: dict, query: str, *args) -> list[tuple]:
    """Rows of a query on the cluster's database (none for a statement)."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=env["VIDSTYLE_PG_PORT"], user="airflow",
                            password=local.LOCAL_PG_PASSWORD, dbname=env["VIDSTYLE_CLUSTER_DB"])
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
