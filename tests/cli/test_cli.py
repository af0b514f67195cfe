"""The ``vidstyle`` command: every subcommand answers ``--help`` with its options, cheaply, and the
local environment its pipeline commands run in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT
from vidstyle.cli import local
from vidstyle.cli.main import COMMANDS


def vidstyle(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidstyle.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def test_the_top_help_lists_every_command_and_loads_neither_airflow_nor_torch():
    code = ("import sys; from vidstyle.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('airflow', 'torch', 'cv2', 'av') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"  # what keeps --help cheap, asserted as such rather than timed
    done = vidstyle("--help")
    assert done.returncode == 0 and all(name in done.stdout for name in COMMANDS)


@pytest.mark.parametrize(("command", "option"), [
    ("demo", "--seconds"), ("run", "--chunk-frames"), ("ui", "--help"), ("cluster", "kill"), ("upload", "--prefix"),
    ("airflow", "args"), ("services", "createdb"), ("azurite", "start"), ("pool", "--quiet"),
    ("provision", "--dry-run"), ("stylize", "--compile-min-pixels"), ("preview", "--image"), ("flicker", "--strip"),
    ("models", "--help"), ("sample", "--no-audio"), ("benchmark", "--forward-only"),
    ("pipeline-benchmark", "--sizes"), ("arrivals-benchmark", "--idle-seconds"),
    ("train-filter", "--stability"), ("train-style", "--vgg-weights")])
def test_each_command_says_what_it_takes(command, option):
    done = vidstyle(command, "--help")
    assert done.returncode == 0, done.stderr
    assert option in done.stdout


def test_the_scorer_has_the_same_options_under_either_name():
    mine, its = vidstyle("stylize", "--help").stdout, subprocess.run(
        [sys.executable, "-m", "scoring", "stylize", "--help"], capture_output=True, text=True, check=True).stdout
    assert mine.split("options:", 1)[1] == its.split("options:", 1)[1]


def test_the_local_environment_fills_in_what_is_unset_and_keeps_what_is_set():
    env = local.environment(base={"PATH": "/usr/bin", "HOME": "/tmp"})
    assert json.loads(env["AIRFLOW_CONN_WASB_DEFAULT"])["extra"]["connection_string"] == "UseDevelopmentStorage=true"
    assert env["AIRFLOW_HOME"] == str(local.home() / ".airflow") and local.home() == ROOT  # a checkout keeps its home
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    mine = local.environment(base={"AIRFLOW_CONN_WASB_DEFAULT": '{"conn_type": "wasb", "host": "h"}',
                                   "VIDSTYLE_DB": "sqlite", "AIRFLOW_HOME": "/srv/af"})
    assert json.loads(mine["AIRFLOW_CONN_WASB_DEFAULT"])["host"] == "h"
    assert mine["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "sqlite:////srv/af/airflow.db"
    assert local.environment(base=mine) == mine  # applying it twice changes nothing


def test_a_home_can_be_named(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSTYLE_HOME", str(tmp_path))
    assert local.home() == tmp_path and local.environment(base={})["AIRFLOW_HOME"] == str(tmp_path / ".airflow")


def test_a_command_of_an_extra_that_is_missing_says_which_extra(tmp_path):
    """A scorer command in an installation without torch (the Airflow image's orchestrating workers)."""
    blocker = tmp_path / "torch.py"
    blocker.write_text("raise ModuleNotFoundError('no torch here', name='torch')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = vidstyle("benchmark", "--help", env=env)
    assert done.returncode == 2 and "'scorer' extra" in done.stderr
