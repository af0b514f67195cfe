"""docker-compose.yaml, as Debian's docker-compose resolves it (``docker-compose config``, no
engine needed): the official Airflow 3 layout, one image and one set of settings for every
Airflow service, and an airflow-init whose own commands, run here against a database of
their own, make the scoring pool counting deferred tasks at the size compose sets."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                    "airflow-triggerer", "airflow-init", "airflow-cli", "flower"}
LONG_RUNNING = AIRFLOW_SERVICES - {"airflow-init", "airflow-cli"} | {"postgres", "redis", "azurite"}


def config(**env: str) -> dict:
    compose = shutil.which("docker-compose") or pytest.fail(
        "docker-compose is not installed: scripts/test.sh installs Debian's package")
    done = subprocess.run([compose, "-f", str(ROOT / "docker-compose.yaml"), "config"], cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIDSTYLE"))} | env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return config()["services"]


def test_the_compose_file_has_the_official_layout_and_azurite(services):
    assert set(services) == AIRFLOW_SERVICES | {"postgres", "redis", "azurite"}
    assert services["flower"]["profiles"] == ["flower"] and services["airflow-cli"]["profiles"] == ["debug"]
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in AIRFLOW_SERVICES:
        needs = services[name]["depends_on"]
        assert {needs[s]["condition"] for s in ("postgres", "redis", "azurite")} == {"service_healthy"}, name
        if name not in ("airflow-init", "airflow-cli"):
            assert needs["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_every_airflow_service_runs_the_same_image_with_the_same_settings(services):
    airflow = {name: services[name] for name in AIRFLOW_SERVICES}
    first = airflow["airflow-scheduler"]
    assert first["image"].startswith("video-style-airflow:")
    assert first["build"]["dockerfile"] == "images/airflow/Dockerfile" and Path(first["build"]["context"]) == ROOT
    for name, service in airflow.items():
        for key in ("image", "build", "environment", "user"):
            assert service[key] == first[key], f"{name}: {key} differs"
        assert "airflow-logs:/opt/airflow/logs:rw" in service["volumes"], name
    env = first["environment"]
    assert "AIRFLOW__CORE__DAGS_FOLDER" not in env  # the image's: its package's DAGs
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    wasb = json.loads(env["AIRFLOW_CONN_WASB_DEFAULT"])["extra"]["connection_string"]
    assert "BlobEndpoint=http://azurite:10000/" in wasb and "QueueEndpoint=http://azurite:10001/" in wasb


def test_the_containers_run_as_airflow_uid_in_group_0():
    assert {s["user"] for n, s in config()["services"].items() if n in AIRFLOW_SERVICES} == {"50000:0"}
    assert {s["user"] for n, s in config(AIRFLOW_UID="1234")["services"].items() if n in AIRFLOW_SERVICES} == {
        "1234:0"}


def test_azurite_is_the_native_setups_version_with_blob_and_queue(services):
    version = re.search(r"^AZURITE_VERSION=(\S+)$", (ROOT / "scripts" / "bootstrap.sh").read_text(), re.M)[1]
    azurite = services["azurite"]
    assert azurite["image"] == f"mcr.microsoft.com/azure-storage/azurite:{version}"
    command = " ".join(azurite["command"]) if isinstance(azurite["command"], list) else azurite["command"]
    assert "--disableTelemetry" in command and "--blobPort 10000" in command and "--queuePort 10001" in command


PORTS = {"airflow-apiserver": [("AIRFLOW_API_PORT", 8080)], "flower": [("FLOWER_PORT", 5555)],
         "azurite": [("AZURITE_BLOB_PORT", 10000), ("AZURITE_QUEUE_PORT", 10001)]}


def test_every_published_port_is_the_usual_one_unless_the_environment_says_otherwise(services):
    """Another Airflow or Azurite on the machine need not stop the stack: each host port is a variable."""
    published = {name: [(p["published"], p["target"]) for p in s.get("ports", [])] for name, s in services.items()}
    assert {n: p for n, p in published.items() if p} == {n: [(d, d) for _, d in v] for n, v in PORTS.items()}
    moved = config(**{var: str(20000 + i) for i, (var, _) in enumerate(v for vs in PORTS.values() for v in vs)})
    for i, (name, (var, target)) in enumerate((n, v) for n, vs in PORTS.items() for v in vs):
        assert {"published": 20000 + i, "target": target} in [
            {k: p[k] for k in ("published", "target")} for p in moved["services"][name]["ports"]], var


def test_health_checks_name_the_container_by_its_hostname_not_a_variable(services):
    """podman runs a health check in an exec session without HOSTNAME (what ran here: the
    workers' ``inspect ping -d celery@`` never answered); ``$(hostname)`` is the same on both."""
    tests = {n: " ".join(s.get("healthcheck", {}).get("test", [])) for n, s in services.items()}
    assert not [n for n, t in tests.items() if "HOSTNAME" in t]
    assert '"celery@$$(hostname)"' in tests["airflow-worker"]  # $$: compose config keeps the escape


def test_every_airflow_container_shares_one_fernet_key(services):
    """Left unset, each container writes its own airflow.cfg with a random key, and the triggerer
    cannot decrypt what the workers deferred (what ran with podman: InvalidToken, the triggerer
    exits). Empty is the official file's default (no encryption); AIRFLOW_FERNET_KEY sets one."""
    keys = {n: s["environment"].get("AIRFLOW__CORE__FERNET_KEY") for n, s in services.items() if n in AIRFLOW_SERVICES}
    assert set(keys.values()) == {""}, keys
    key = "a" * 43 + "="
    assert {s["environment"]["AIRFLOW__CORE__FERNET_KEY"] for n, s in config(AIRFLOW_FERNET_KEY=key)["services"].items()
            if n in AIRFLOW_SERVICES} == {key}


def test_no_health_check_passes_an_argument_with_spaces_as_an_exec_array(services):
    """Podman's Docker-compatible API splits such an argument at its spaces (what ran here): a
    command with spaces goes through the shell (CMD-SHELL), as Docker and podman both run it."""
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test", ["NONE"])
        if test[0] == "CMD":
            assert not [arg for arg in test[1:] if " " in arg], f"{name}: {test}"


def test_airflow_init_makes_the_pool_counting_deferred_tasks_at_the_size_compose_sets(services, tmp_path):
    """airflow-init's own script, run here with compose's [vidstyle] settings against a new
    database: the pool it leaves counts deferred tasks (``airflow pools set`` would not)."""
    init = services["airflow-init"]
    assert init["command"][:2] == ["bash", "-c"]
    script = init["command"][2]
    assert "airflow pools set" not in (ROOT / "docker-compose.yaml").read_text()
    settings = {k: v for k, v in init["environment"].items() if k.startswith("AIRFLOW__VIDSTYLE__")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | settings | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'init.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    pools = subprocess.run(["airflow", "pools", "list", "-o", "json"], env=env, capture_output=True, text=True,
                           check=True)
    [pool] = [p for p in json.loads(pools.stdout) if p["pool"] == "scoring"]
    assert int(pool["slots"]) == int(settings["AIRFLOW__VIDSTYLE__SCORING_POOL_SLOTS"]) == 2
    assert str(pool["include_deferred"]) == "True"
    assert "videos-arrivals: " in done.stdout  # the queue Event Grid (here: vidstyle upload) writes to
