"""The project as a package: the wheel builds with everything the code reads at run time, and
installed from the lock into a new virtual environment, by the images' own install command,
it runs outside any checkout with nothing on PYTHONPATH: the CLI, the plugin, the three DAGs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT, make_video

pytestmark = pytest.mark.timeout(1200)


def uv() -> str:
    found = ROOT / ".tools" / "uv" / "bin" / "uv"
    return str(found) if found.is_file() else shutil.which("uv") or pytest.fail("uv is not installed")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([uv(), "build", "--wheel", "--out-dir", str(out)], cwd=ROOT, check=True, capture_output=True)
    [built] = out.glob("video_style_pipeline-*.whl")
    return built


def test_the_wheel_holds_the_packages_the_dags_and_the_models(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"vidstyle/dags/video_stylize.py", "vidstyle/dags/video_arrivals.py", "vidstyle/dags/video_backlog.py",
            "scoring/models/pop-art.pth", "scoring/models/pop-art.json", "vidstyle/cli/main.py",
            "vidstyle/airflow/plugin.py"} <= names
    assert not any(n.startswith(("tests/", "images/", "scripts/")) or "__pycache__" in n for n in names)
    assert "vidstyle = vidstyle.cli.main:main" in entry_points
    assert "vidstyle = vidstyle.airflow.plugin:VidstylePlugin" in entry_points


def test_requirements_txt_is_the_airflow_side_of_the_lock():
    done = subprocess.run([uv(), "export", "--frozen", "--extra", "airflow", "--no-emit-project", "-o", "-"],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    pins = lambda text: [line for line in text.splitlines() if line and not line.startswith("#")]  # noqa: E731
    assert pins(done.stdout) == pins((ROOT / "requirements.txt").read_text()), \
        "requirements.txt is out of date: uv export --frozen --extra airflow --no-emit-project -o requirements.txt"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """A new virtual environment with the package as the Airflow image installs it (the same
    command, the same lock), and an environment for running it from an empty folder."""
    base = tmp_path_factory.mktemp("installed")
    venv = base / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))}
    done = subprocess.run([uv(), "sync", "--frozen", "--no-editable", "--no-dev", "--extra", "airflow",
                           "--extra", "scorer", "--python", sys.executable],
                          cwd=ROOT, env=env | {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    home = base / "home"
    home.mkdir()
    return env | {"PATH": f"{venv / 'bin'}:{env['PATH']}", "VIDSTYLE_HOME": str(home), "VIDSTYLE_DB": "sqlite",
                  "AIRFLOW__VIDSTYLE__CONTAINER": f"installed-{uuid.uuid4().hex[:12]}",  # its own storage
                  "AIRFLOW__VIDSTYLE__SENSOR_POKE_SECONDS": "2", "VENV": str(venv), "HOME_DIR": str(home)}


def run(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A command of the installed package, in an empty folder, with nothing on PYTHONPATH."""
    return subprocess.run([f"{env['VENV']}/bin/vidstyle", *args], cwd=env["HOME_DIR"], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_the_installed_package_is_not_the_checkout(installed):
    code = "import vidstyle, scoring; print(vidstyle.__file__); print(scoring.__file__)"
    done = subprocess.run([f"{installed['VENV']}/bin/python", "-c", code], cwd=installed["HOME_DIR"], env=installed,
                          capture_output=True, text=True, check=True)
    assert all(path.startswith(installed["VENV"]) for path in done.stdout.split())
    assert run(installed, "--help").returncode == 0


def test_airflow_finds_the_plugin_and_the_three_dags_of_the_installed_package(installed):
    plugins = run(installed, "airflow", "plugins")
    assert plugins.returncode == 0 and "vidstyle" in plugins.stdout, plugins.stdout + plugins.stderr
    run(installed, "airflow", "db", "migrate")
    reserialized = run(installed, "airflow", "dags", "reserialize")  # what the DAG processor does
    assert reserialized.returncode == 0, reserialized.stderr[-3000:]
    dags = run(installed, "airflow", "dags", "list", "-o", "plain")
    assert {"video_stylize", "video_arrivals", "video_backlog"} <= set(dags.stdout.split()), dags.stdout + dags.stderr
    assert f"{installed['VENV']}/lib" in dags.stdout  # their files are the package's
    errors = run(installed, "airflow", "dags", "list-import-errors")
    assert "No data found" in errors.stdout + errors.stderr, errors.stdout


@pytest.mark.usefixtures("azurite")
def test_the_installed_package_runs_a_video_end_to_end(installed, tmp_path):
    video = make_video(tmp_path / "clip.mp4", seconds=0.5, size="64x48")
    done = run(installed, "run", str(video), "--chunk-frames", "8")
    assert done.returncode == 0, done.stderr[-3000:]
    result = Path(done.stdout.strip().splitlines()[-1])
    assert result.is_file() and result.is_relative_to(installed["HOME_DIR"])
    assert "frames/s" in done.stderr
    # The watcher and the sweep, as Airflow's own `dags test` runs them, on a second upload.
    assert run(installed, "upload", str(make_video(tmp_path / "second.mp4", seconds=0.2))).returncode == 0
    for dag_id in ("video_arrivals", "video_backlog"):
        tested = run(installed, "airflow", "dags", "test", dag_id, timeout=300)
        assert tested.returncode == 0 and "state=success" in tested.stdout + tested.stderr, tested.stdout[-3000:]
