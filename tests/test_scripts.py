"""The shell environment the README's commands rely on."""

import json
import subprocess

from conftest import ROOT


def env_after(script: str) -> dict[str, str]:
    out = subprocess.run(["bash", "-c", f"{script}; env -0"], cwd=ROOT, capture_output=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}).stdout.decode()
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def test_env_can_be_sourced_twice_and_keeps_a_valid_connection():
    # demo.sh sources env.sh and then runs stylize-file.sh, which sources it again.
    env = env_after("source scripts/env.sh; source scripts/env.sh")
    conn = json.loads(env["AIRFLOW_CONN_WASB_DEFAULT"])
    assert conn["conn_type"] == "wasb"
    assert conn["extra"]["connection_string"] == "UseDevelopmentStorage=true"
    assert env["AIRFLOW_HOME"].endswith(".airflow")


def test_a_users_own_connection_is_kept():
    env = env_after("export AIRFLOW_CONN_WASB_DEFAULT='{\"conn_type\": \"wasb\", \"host\": \"h\"}'; "
                    "source scripts/env.sh")
    assert json.loads(env["AIRFLOW_CONN_WASB_DEFAULT"])["host"] == "h"
