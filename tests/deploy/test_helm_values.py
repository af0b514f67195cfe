"""deploy/helm/values.yaml for the official Airflow Helm chart, checked against what this
project and Airflow define (no helm, no chart, no cluster here: README "Kubernetes" says what
that leaves unchecked): every [vidstyle] key is a setting, every class it names imports, the
image and its DAGs folder are the Airflow image's, the pool is made the one way, and no secret
is in it."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re

import pytest
import yaml

from tests.deploy.images import IMAGES, assignments, instructions
from tests.support import ROOT
from vidstyle.pipeline.settings import Settings

VALUES = ROOT / "deploy" / "helm" / "values.yaml"


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def test_the_chart_runs_celery_with_keda_on_the_project_image(values):
    assert values["executor"] == "CeleryExecutor"
    assert values["workers"]["celery"]["keda"]["enabled"] is True
    assert values["images"]["airflow"]["repository"].endswith("/video-style-airflow")
    assert (values["uid"], values["gid"]) == (50000, 0)  # the image's user
    version = re.search(r"^version = \"(.*)\"", (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert values["images"]["airflow"]["tag"] == version
    assert values["dags"]["gitSync"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False


def test_the_dags_folder_is_the_one_the_image_sets(values):
    python = next(assignments(i.args, {})["PYTHON"] for i in instructions(IMAGES["airflow"])
                  if i.name == "ARG" and i.args.startswith("PYTHON="))
    image_env = {}
    for ins in (i for i in instructions(IMAGES["airflow"]) if i.name == "ENV"):
        image_env |= assignments(ins.args, {"PYTHON": python})
    assert values["config"]["core"]["dags_folder"] == image_env["AIRFLOW__CORE__DAGS_FOLDER"]


def test_every_vidstyle_key_is_a_setting_of_the_right_kind(values):
    fields = {f.name: f.type for f in dataclasses.fields(Settings)}
    for key, value in values["config"]["vidstyle"].items():
        assert key in fields, f"[vidstyle] {key} is not a setting (vidstyle.pipeline.settings)"
        if fields[key] in ("int", "float"):
            float(value)
    json.loads(values["config"]["vidstyle"]["azureml_prices"])


def test_every_class_the_values_name_imports(values):
    for dotted in (values["config"]["secrets"]["backend"], values["config"]["core"]["hostname_callable"]):
        module, _, name = dotted.rpartition(".")
        assert getattr(importlib.import_module(module), name), dotted
    kwargs = json.loads(values["config"]["secrets"]["backend_kwargs"])
    assert kwargs["vault_url"].startswith("https://") and kwargs["connections_prefix"]


def test_the_migration_job_makes_the_pool_the_one_way(values):
    job = values["migrateDatabaseJob"]
    assert job["enabled"] is True and "airflow db migrate" in job["args"][0] and "vidstyle pool" in job["args"][0]
    assert "vidstyle queue" in job["args"][0]
    assert "pools set" not in VALUES.read_text()


def test_every_pod_signs_in_by_workload_identity_and_no_secret_is_written_down(values):
    assert values["labels"]["azure.workload.identity/use"] == "true"
    for component in ("workers", "scheduler", "triggerer", "dagProcessor", "apiServer"):
        assert "azure.workload.identity/client-id" in values[component]["serviceAccount"]["annotations"], component
    connections = {e["name"]: json.loads(e["value"]) for e in values["env"] if e["name"].startswith("AIRFLOW_CONN_")}
    assert connections["AIRFLOW_CONN_WASB_DEFAULT"]["host"].startswith("https://")
    assert set(connections["AIRFLOW_CONN_AZUREML_DEFAULT"]["extra"]) == {
        "subscriptionId", "resource_group_name", "workspace_name"}
    text = VALUES.read_text()
    assert not re.search(r"AccountKey=|SharedAccessSignature|sig=|client_secret|password:", text, re.I)


def test_the_gpu_worker_set_takes_the_queue_the_scoring_queue_setting_names(values):
    celery = values["workers"]["celery"]
    [gpu] = celery["sets"]
    assert gpu["queue"] == "gpu" and celery["enableDefault"] is True and celery["queue"] == "default"
    assert gpu["keda"]["minReplicaCount"] == 0  # no GPU node billed while its queue is empty
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert values["config"]["vidstyle"]["scoring_queue"] in ("", gpu["queue"])
