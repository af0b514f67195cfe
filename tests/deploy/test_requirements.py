"""``requirements.txt`` as an Airflow user installs it (docs/kubernetes.md, "Installing with pip
from requirements.txt", lists the same commands): a fresh virtual environment outside the checkout,
the pip it comes with, ``pip install -r requirements.txt`` (hash-checking mode: every line has its hashes),
then the project's wheel beside it with ``--no-deps``, and Airflow, from an empty folder with a
fresh home on SQLite, finds the plugin and parses the three DAGs without an import error.

Minutes, mostly pip downloading and unpacking ~270 wheels (its cache makes a re-run cheaper):
marked slow, run in CI all the same."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DAG_IDS = {"video_stylize", "video_arrivals", "video_backlog"}


def uv() -> str:
    found = ROOT / ".tools" / "uv" / "bin" / "uv"
    return str(found) if found.is_file() else shutil.which("uv") or pytest.fail("uv is not installed")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without its venv, Airflow settings or PYTHONPATH, and pip
    reading no config file: PyPI only (this machine's pip.conf adds local wheel folders). The
    CA bundle pip is told to use (PIP_CERT) stays: it is how this machine reaches PyPI."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH", "VIDSTYLE", "UV_"))
           and k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX")}
    return env | {"PIP_CONFIG_FILE": os.devnull} | extra


def step(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 1200) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.monotonic() - start
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    print(f"{' '.join(Path(a).name if a.startswith('/') else a for a in argv[:4])}: {seconds:.0f} s")
    return done.stdout + done.stderr, seconds


def test_pip_installs_requirements_txt_then_the_wheel_and_the_dags_parse(tmp_path_factory):
    user = tmp_path_factory.mktemp("user")  # outside the checkout: the user's folder, empty
    assert not user.is_relative_to(ROOT)
    venv = user / "venv"
    env = clean_env()
    # Built here as a release would be; the user has the wheel file, not the checkout.
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([uv(), "build", "--wheel", "--out-dir", str(dist)], cwd=ROOT, check=True, capture_output=True)
    [wheel] = dist.glob("video_style_pipeline-*.whl")
    requirements = shutil.copy(ROOT / "requirements.txt", user / "requirements.txt")

    step([sys.executable, "-m", "venv", str(venv)], env, user)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    # The pip the new venv comes with, as a user has it: Python 3.11's is 23.2.1, which stops on a
    # dependency's extra that the file does not pin (scripts/requirements.py pins them).
    version, _ = step([*pip, "--version"], env, user)
    print(version.strip())
    out, seconds = step([*pip, "install", "-r", str(requirements)], env, user)
    print(f"pip install -r requirements.txt: {seconds:.0f} s")
    step([*pip, "install", "--no-deps", str(wheel)], env, user)
    out, _ = step([*pip, "check"], env, user)  # the wheel's own dependencies came with requirements.txt
    assert "No broken requirements found" in out

    listed = subprocess.run([*pip, "list", "--format", "json"], env=env, cwd=user, capture_output=True, text=True,
                            check=True)
    installed = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert installed["apache-airflow"] == "3.3.2" and installed["celery"] == "5.6.3"  # the lock's, not PyPI's newest
    assert {"apache-airflow-providers-fab", "redis", "video-style-pipeline"} <= set(installed)
    assert not {"torch", "torchvision", "opencv-python-headless"} & set(installed)  # the Airflow side only

    site = next((venv / "lib").glob("python3.*/site-packages"))
    airflow = clean_env(PATH=f"{venv / 'bin'}:{os.environ['PATH']}", AIRFLOW_HOME=str(user / "airflow"),
                        AIRFLOW__CORE__DAGS_FOLDER=str(site / "vidstyle" / "dags"),
                        AIRFLOW__CORE__LOAD_EXAMPLES="False")
    plugins, _ = step(["airflow", "plugins"], airflow, user)
    assert "vidstyle" in plugins
    step(["airflow", "db", "migrate"], airflow, user)
    step(["airflow", "dags", "reserialize"], airflow, user)  # what the DAG processor does
    listed, _ = step(["airflow", "dags", "list", "-o", "plain"], airflow, user)
    assert DAG_IDS <= set(listed.split()), listed
    assert str(site / "vidstyle" / "dags") in listed  # the installed package's files, not the checkout's
    errors, _ = step(["airflow", "dags", "list-import-errors"], airflow, user)
    assert "No data found" in errors, errors
