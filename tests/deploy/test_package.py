"""The project as a package: the wheel builds with everything the code reads at run time, and
installed as the images install it (their Dockerfiles' own steps from their build contexts,
tests/deploy/images.py: the stand-in for a ``docker build`` that cannot run here), it runs
outside any checkout with nothing on PYTHONPATH: the CLI, the plugin, the three DAGs, a video
end to end, and the Azure ML backend's split and chunks, whose jobs run in the scoring image's
environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.deploy.images import Build, replay
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


def test_the_wheel_holds_the_packages_the_dags_the_models_and_the_calibration_photos(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"vidstyle/dags/video_stylize.py", "vidstyle/dags/video_arrivals.py", "vidstyle/dags/video_backlog.py",
            "scoring/models/pop-art.pth", "scoring/models/pop-art.json", "scoring/calibration/rocket.jpg",
            "vidstyle/cli/main.py",
            "vidstyle/airflow/plugin.py", "vidstyle/airflow/videos/static/index.html",
            "vidstyle/airflow/videos/static/videos.js", "vidstyle/airflow/videos/static/videos.css"} <= names
    assert not any(n.startswith(("tests/", "images/", "scripts/")) or "__pycache__" in n for n in names)
    assert "vidstyle = vidstyle.cli.main:main" in entry_points
    assert "vidstyle = vidstyle.airflow.plugin:VidstylePlugin" in entry_points


def test_requirements_txt_is_the_airflow_side_of_the_lock(tmp_path):
    """requirements.txt is what scripts/requirements.py makes of uv.lock: uv's export (read from
    its standard output: ``-o -`` wrote a file named '-'), with the extras packages ask for pinned."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "requirements.py"), "--check"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert not any(tmp_path.iterdir()) and not (ROOT / "-").exists()  # nothing written, here or in the checkout
    text = (ROOT / "requirements.txt").read_text()
    # What pip before 23.3 needs in hash-checking mode: each extra a dependency asks for, pinned.
    assert "celery[redis]==5.6.3 \\" in text.splitlines() and "uvicorn[standard]==" in text
    exported = subprocess.run([uv(), "export", "--frozen", "--extra", "airflow", "--no-emit-project", "--project",
                               str(ROOT)], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    pins = lambda t: [line.split(" ")[0] for line in t.splitlines() if line and line[0].isalnum()]  # noqa: E731
    plain = [pin for pin in pins(text) if "[" not in pin]
    assert plain == pins(exported)  # every pin of the lock's export, in its order
    assert {re.sub(r"\[.*\]", "", pin) for pin in pins(text) if "[" in pin} <= set(plain)  # extras: pins again


@pytest.fixture(scope="module")
def airflow_image(tmp_path_factory) -> Build:
    """The Airflow image's Python environment, made by its Dockerfile's own steps from its build context."""
    return replay("airflow", tmp_path_factory.mktemp("image-airflow"), uv=uv())


@pytest.fixture(scope="module")
def scoring_image(tmp_path_factory) -> Build:
    """The scoring image's, likewise: what an Azure ML job runs."""
    return replay("scoring", tmp_path_factory.mktemp("image-scoring"), uv=uv())


@pytest.fixture(scope="module")
def installed(airflow_image, tmp_path_factory) -> dict[str, str]:
    """The environment the Airflow image gives its processes (its venv first on PATH, its DAGs
    folder, its Airflow home), to run from an empty folder with nothing on PYTHONPATH."""
    home = tmp_path_factory.mktemp("installed")
    image_env = airflow_image.env
    airflow_home = airflow_image.path(image_env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHONPATH"))}
    venv = airflow_image.path("/opt/vidstyle")
    return env | {k: v for k, v in image_env.items() if k not in ("PATH", "AIRFLOW_HOME")} | {
        "PATH": f"{venv / 'bin'}:{env['PATH']}", "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(airflow_image.path(image_env["AIRFLOW__CORE__DAGS_FOLDER"])),
        "VIDSTYLE_HOME": str(home), "VIDSTYLE_DB": "sqlite",
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


def test_the_airflow_image_holds_the_package_and_its_dags_where_its_settings_say(airflow_image):
    [sync] = airflow_image.syncs
    assert sync[:2] == ["sync", "--locked"] and "--no-editable" in sync  # the lock, checked; no checkout link
    assert [sync[i + 1] for i, a in enumerate(sync) if a == "--extra"] == ["airflow", "scorer"]
    dags = airflow_image.path(airflow_image.env["AIRFLOW__CORE__DAGS_FOLDER"])
    assert {p.name for p in dags.glob("*.py")} >= {"video_stylize.py", "video_arrivals.py", "video_backlog.py"}
    site = dags.parent.parent
    assert (site / "scoring" / "models" / "pop-art.pth").is_file()
    assert not any(str(ROOT) in p.read_text() for p in site.glob("*.pth"))  # nothing points at the checkout


def test_the_scoring_image_runs_the_scorer_from_any_folder_without_airflow(scoring_image, tmp_path):
    [sync] = scoring_image.syncs
    assert "--no-install-project" in sync and [sync[i + 1] for i, a in enumerate(sync) if a == "--extra"] == ["scorer"]
    app = scoring_image.path("/app")
    assert {p.relative_to(app).parts[0] for p in app.rglob("*") if p.is_file()} == {
        "pyproject.toml", "uv.lock", "scoring"}  # the scorer and what installed its dependencies
    env = {"PATH": f"{scoring_image.path('/opt/scorer/bin')}:/usr/bin:/bin",
           "PYTHONPATH": str(scoring_image.path(scoring_image.env["PYTHONPATH"]))}
    python = str(scoring_image.path("/opt/scorer/bin/python"))
    models = subprocess.run([python, "-m", "scoring", "models"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, check=False)
    assert models.returncode == 0 and "pop-art" in models.stdout, models.stderr
    probe = ("import importlib.util as u, torch; "
             "print([m for m in ('airflow', 'vidstyle', 'azure.ai.ml') if u.find_spec(m.split('.')[0])], "
             "bool(torch.version.cuda))")
    done = subprocess.run([python, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "True"]  # no Airflow or Azure SDK; the lock's CUDA build of torch


def test_the_installed_package_scores_a_video_on_azure_ml_in_the_scoring_images_environment(
        installed, scoring_image, tmp_path, monkeypatch, azurite):
    """The Azure ML backend from the Airflow image's environment: provision (from the checkout,
    as an operator does), then a run whose split pins the recorded environment and whose chunks
    are jobs of the local Azure ML service, each run by the scoring image's Python and scorer.
    The installed package reaches the service through its own azure-ai-ml, set up only by the
    SDK's settings for another cloud and a service principal's connection."""
    import dataclasses
    import json

    from tests.azureml_service.api import AzureMLService, client_environment, connection, serve
    from tests.azureml_service.jobs import JobService
    from tests.pipeline.azureml_support import register
    from vidstyle.hooks.azureml import AzureMLHook
    from vidstyle.pipeline.environment import environment_version
    from vidstyle.pipeline.provisioning import RESOURCES, provision
    from vidstyle.pipeline.settings import load_settings

    container = installed["AIRFLOW__VIDSTYLE__CONTAINER"]
    engine = JobService({"vidstyle": ("wasb_default", container)}, nodes=2, step=0.05,
                        python=str(scoring_image.path("/opt/scorer/bin/python")),
                        app_dir=scoring_image.path(scoring_image.env["PYTHONPATH"]))
    service = AzureMLService(engine)
    server, ca = serve(service, tmp_path / "tls")
    reach = client_environment(service, ca) | {"AIRFLOW_CONN_AZUREML_DEFAULT": json.dumps(connection(service))}
    try:
        for key, value in reach.items():
            monkeypatch.setenv(key, value)
        settings = dataclasses.replace(load_settings(), container=container, azureml_max_nodes=1)
        # The environment as provision registers it: its creation uploads the build context to the
        # workspace's storage account, which the local service does not serve (docs/azure-ml.md).
        register(service, settings, version=environment_version())
        service.assets.pop(f"/computes/{settings.azureml_compute}".lower())
        assert provision(AzureMLHook(settings.azureml_conn_id), settings, RESOURCES, False) == {
            "datastore": "created", "cluster": "created", "environment": "unchanged"}

        env = installed | reach | {
            "AIRFLOW__VIDSTYLE__AZUREML_DEVICE": "cpu", "AIRFLOW__VIDSTYLE__AZUREML_POLL_SECONDS": "0.2",
            "AIRFLOW__VIDSTYLE__AZUREML_MAX_POLL_SECONDS": "0.5"}
        video = make_video(tmp_path / "on-azure.mp4", seconds=0.5, size="64x48")
        done = run(env, "run", str(video), "--backend", "azureml", "--chunk-frames", "8", "--out",
                   str(tmp_path / "out"))
        assert done.returncode == 0, done.stderr[-3000:] + (tmp_path / "out" / "last-run.log").read_text()[-5000:]
    finally:
        server.shutdown()
        engine.stop()
    jobs = engine.jobs
    assert len(jobs) == 2 and {j.status for j in jobs.values()} == {"Completed"}
    # Every job on the version provisioning registered from the checkout (the installed package
    # has no images/ to hash: it read the record), as the SDK resolved it to an ARM id.
    assert {j.props["environmentId"].rsplit("/environments/", 1)[-1] for j in jobs.values()} == {
        f"{settings.azureml_environment}/versions/{environment_version()}"}
    [manifest] = (tmp_path / "out").glob("*manifest*.json")
    assert json.loads(manifest.read_text())["azureml"]["jobs"] == 2
