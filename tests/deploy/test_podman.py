"""scripts/containers.sh's driver (deploy/podman), the parts that run without podman: the engine's
configuration, the health-check schedule, the times podman reports, the compose override and the
storage connection it derives from the compose file. The driver itself is heavy (image builds,
the compose stack) and runs by hand, its figures in docs/containers.md."""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path

import pytest
import yaml

from deploy.podman import bases, engine, stack
from tests.support import ROOT


def test_podman_is_configured_as_this_machine_needs_in_a_folder_of_its_own(tmp_path):
    conf = tomllib.loads(engine.containers_conf(tmp_path / "state", tmp_path / "run"))
    assert conf["engine"]["runtime"] == "runc" and conf["engine"]["cgroup_manager"] == "cgroupfs"
    assert conf["containers"]["default_ulimits"] == ["nofile=20000:20000", "nproc=32768:32768"]
    assert conf["network"]["network_config_dir"].startswith(str(tmp_path))
    storage = tomllib.loads(engine.storage_conf(tmp_path / "state", tmp_path / "run"))["storage"]
    assert storage["driver"] == "overlay" and storage["graphroot"].startswith(str(tmp_path))
    registries = tomllib.loads(engine.registries_conf())
    assert registries["unqualified-search-registries"] == ["docker.io"]


def test_the_environment_points_podman_at_that_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDSTYLE_PODMAN_HOME", str(tmp_path))
    env = engine.environment({})
    assert {env[k] for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF")} == {
        str(tmp_path / n) for n in ("containers.conf", "storage.conf", "registries.conf")}


@pytest.mark.parametrize(("value", "seconds"), [(30_000_000_000, 30.0), ("30s", 30.0), ("1m30s", 90.0),
                                                ("500ms", 0.5), (None, 30.0), ("", 30.0)])
def test_health_check_intervals_read_as_podman_gives_them(value, seconds):
    assert engine.parse_interval(value) == pytest.approx(seconds)


def test_health_checks_run_often_only_within_the_start_period_then_at_their_interval():
    """Failures inside the start period do not count, so checking often there cannot make a
    container unhealthy sooner than Docker would; after it, Docker's interval."""
    check = engine.Check(interval=30.0, start_period=30.0, started=100.0)
    assert check.next_after(100.0, "starting") == 105.0
    assert check.next_after(125.0, "starting") == 130.0
    assert check.next_after(131.0, "starting") == 161.0  # past the start period: the interval
    assert check.next_after(110.0, "healthy") == 140.0
    assert engine.Check(interval=10.0).next_after(0.0, "starting") == 10.0  # no start period: the interval


@pytest.mark.parametrize("text", ["2026-12-06T08:48:47.806609106Z", "2026-12-06 08:48:47.806609106 +0000 UTC",
                                  "2026-12-06T08:48:47.806609+00:00", "2026-12-06T09:48:47.806609106+01:00"])
def test_times_in_podmans_and_airflows_formats(text):
    assert stack.go_time(text) == pytest.approx(1796546927.806609, abs=1e-5)


def test_the_override_only_sizes_chunks_for_the_exercise():
    data = yaml.safe_load(stack.override(24))
    assert data["services"] == {"airflow-worker": {"environment": {"AIRFLOW__VIDSTYLE__CHUNK_FRAMES": "24"}}}


def test_the_hosts_storage_connection_is_the_compose_files_own_on_the_published_ports():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    text = stack.host_connection(compose, {"AZURITE_BLOB_PORT": 41000, "AZURITE_QUEUE_PORT": 41001})
    assert "BlobEndpoint=http://127.0.0.1:41000/devstoreaccount1" in text
    assert "QueueEndpoint=http://127.0.0.1:41001/devstoreaccount1" in text
    assert "azurite:" not in text
    inside = json.loads(compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_WASB_DEFAULT"])
    assert text.split(";BlobEndpoint")[0] == inside["extra"]["connection_string"].split(";BlobEndpoint")[0]


def test_free_ports_are_distinct_and_bindable():
    ports = stack.free_ports(stack.PORT_VARIABLES)
    assert len(set(ports.values())) == len(stack.PORT_VARIABLES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports["AIRFLOW_API_PORT"]))


def test_each_stage_is_complete_only_with_every_service_and_each_worker():
    every = {name: (1.0, 1.0) for name in stack.LONG_RUNNING if name != "airflow-worker"} | {"airflow-init": (1.0, 1.0)}
    last = stack.STAGES[-1]
    assert stack.complete(every, stack.STAGES[0]) and stack.complete(every, stack.STAGES[1])
    assert not stack.complete(every, last)
    assert not stack.complete(every | {"airflow-worker-abc123": (1.0, 1.0)}, last)
    assert stack.complete(every | {"airflow-worker-abc123": (1.0, 1.0), "airflow-worker-def456": (1.0, 1.0)}, last)


def test_the_stages_start_every_service_in_the_files_dependency_order():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    started: set[str] = set()
    for stage in stack.STAGES:
        for name in stage:
            needs = set(compose[name].get("depends_on", {})) - set(stage)
            assert needs <= started, f"{name} needs {needs - started} before its stage"
        started |= set(stage)
    assert started == {n for n, s in compose.items() if not s.get("profiles")}


def test_every_stand_in_is_an_image_the_compose_file_or_a_dockerfile_names():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    wanted = {s["image"] for s in compose["services"].values() if "image" in s and "${" not in s["image"]}
    wanted = {n if "/" in n.split(":")[0] else f"docker.io/library/{n}" for n in wanted}
    wanted.add("docker.io/library/python:3.11-slim-bookworm")  # both Dockerfiles' FROM (PYTHON=3.11)
    made = {tag for s in bases.STAND_INS for tag in s.tags}
    assert wanted == made
    for stand_in in bases.STAND_INS:
        assert (Path(bases.HERE) / stand_in.containerfile).is_file()


@pytest.mark.parametrize(("policy", "exit_code", "restart"), [
    ("always", 0, True), ("always", 137, True), ("unless-stopped", 0, True), ("on-failure", 1, True),
    ("on-failure", 0, False), ("no", 1, False), ("", 1, False)])
def test_exited_containers_restart_as_dockers_policies_say(policy, exit_code, restart):
    container = {"HostConfig": {"RestartPolicy": {"Name": policy}}, "State": {"ExitCode": exit_code}}
    assert engine.should_restart(container) is restart
