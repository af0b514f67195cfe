"""deploy/helm/values.yaml rendered by the official Airflow Helm chart with a real helm: ``helm
lint`` and ``helm template`` pass, and the objects the chart makes of the values (not the values'
text) are what the pipeline needs: the migration job that makes the pool and the queue by
workload identity, the worker sets and their KEDA queries, the GPU set on GPU nodes, the identity
on every pod of the project's image, an auth manager the image has and whose user job runs in its
environment, and no secret in the values.

helm comes from ``scripts/install-helm.sh`` (``scripts/test.sh`` runs it) and the chart from
``<checkout>/../shared/charts`` (never copied into the project). Both are there in CI: when one is
missing the tests fail, they do not skip. No Kubernetes cluster, KEDA or Azure AD is here:
docs/kubernetes.md says what that leaves unchecked."""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from werkzeug.security import check_password_hash

from tests.deploy.images import IMAGES, assignments, instructions
from tests.support import ROOT
from vidstyle.pipeline.settings import Settings

VALUES = ROOT / "deploy" / "helm" / "values.yaml"
HELM = ROOT / ".tools" / "helm" / "helm"
HELM_VERSION = "v4.1.4"
# The chart the values are rendered with (docs/kubernetes.md pins the same): the official chart,
# packaged unmodified; its sha256 is the one shared/charts/README.md gives.
CHART_VERSION = "1.19.0"
CHART = ROOT.parent / "shared" / "charts" / f"airflow-{CHART_VERSION}.tgz"
CHART_SHA256 = "a169dda931e2c2e5a71e66e8509811cb61a675ae6317be2ce536e5743d439dd4"
RELEASE, NAMESPACE = "vidstyle", "vidstyle"
IDENTITY_LABEL = "azure.workload.identity/use"
CLIENT_ID = "azure.workload.identity/client-id"
POD_KINDS = ("Deployment", "StatefulSet", "Job")


def helm(*args: str) -> subprocess.CompletedProcess:
    if not HELM.is_file():
        pytest.fail(f"helm is not installed at {HELM}: run ./scripts/install-helm.sh (scripts/test.sh does)")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def chart() -> Path:
    if not CHART.is_file():
        pytest.fail(f"the official Airflow chart {CHART_VERSION} is not at {CHART} (shared/ beside the checkout, "
                    "as CI has it: docs/kubernetes.md)")
    assert hashlib.sha256(CHART.read_bytes()).hexdigest() == CHART_SHA256, f"{CHART} is not the pinned chart"
    return CHART


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def rendered(chart) -> list[dict]:
    """Every object ``helm template`` makes of the chart with the project's values."""
    start = time.monotonic()
    done = helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, "-f", str(VALUES))
    assert done.returncode == 0, done.stderr
    print(f"helm template: {time.monotonic() - start:.1f} s")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(rendered: list[dict], kind: str, name: str) -> dict:
    [found] = [d for d in rendered if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pods(rendered: list[dict]) -> dict[str, dict]:
    """Each workload's pod template, by the workload's name."""
    return {d["metadata"]["name"]: d["spec"]["template"] for d in rendered if d["kind"] in POD_KINDS}


def of_the_project_image(pod: dict, values: dict) -> bool:
    repository = values["images"]["airflow"]["repository"]
    return any(c["image"].startswith(f"{repository}:") for c in pod["spec"]["containers"])


def airflow_cfg(rendered: list[dict]) -> configparser.ConfigParser:
    """The airflow.cfg the chart mounts into every Airflow pod."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(find(rendered, "ConfigMap", f"{RELEASE}-config")["data"]["airflow.cfg"])
    return cfg


def test_helm_is_the_pinned_one_and_lints_the_chart_with_the_values(chart):
    assert helm("version", "--template", "{{.Version}}").stdout == HELM_VERSION
    linted = helm("lint", "--strict", str(chart), "-f", str(VALUES))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in linted.stdout


def test_every_object_comes_from_the_pinned_chart_and_the_project_image(rendered, values):
    assert {d["metadata"]["labels"]["chart"] for d in rendered if d["metadata"].get("labels", {}).get("chart", "")
            .startswith("airflow-")} == {f"airflow-{CHART_VERSION}"}
    version = re.search(r"^version = \"(.*)\"", (ROOT / "pyproject.toml").read_text(), re.M)[1]
    image = f"{values['images']['airflow']['repository']}:{version}"
    assert values["images"]["airflow"]["repository"].endswith("/video-style-airflow")
    airflow_pods = {name: pod for name, pod in pods(rendered).items() if of_the_project_image(pod, values)}
    assert {f"{RELEASE}-{c}" for c in ("scheduler", "triggerer", "dag-processor", "api-server", "worker",
                                       "worker-gpu", "run-airflow-migrations", "create-user")} == set(airflow_pods)
    for name, pod in airflow_pods.items():
        assert {c["image"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])} == {image}, name
        assert pod["spec"]["securityContext"]["runAsUser"] == 50000, name  # the image's user
    # The DAGs come with the image: no git-sync container, no DAG volume.
    assert not any(c["name"] == "git-sync" for pod in airflow_pods.values() for c in pod["spec"]["containers"])
    assert not any(d["kind"] == "PersistentVolumeClaim" and "dags" in d["metadata"]["name"] for d in rendered)


def test_the_config_is_the_pipelines(rendered):
    cfg = airflow_cfg(rendered)
    assert cfg["core"]["executor"] == "CeleryExecutor"
    python = next(assignments(i.args, {})["PYTHON"] for i in instructions(IMAGES["airflow"])
                  if i.name == "ARG" and i.args.startswith("PYTHON="))
    image_env: dict[str, str] = {}
    for ins in (i for i in instructions(IMAGES["airflow"]) if i.name == "ENV"):
        image_env |= assignments(ins.args, {"PYTHON": python})
    assert cfg["core"]["dags_folder"] == image_env["AIRFLOW__CORE__DAGS_FOLDER"]
    fields = {f.name: f.type for f in dataclasses.fields(Settings)}
    for key, value in cfg["vidstyle"].items():
        assert key in fields, f"[vidstyle] {key} is not a setting (vidstyle.pipeline.settings)"
        if fields[key] in ("int", "float"):
            float(value)
    json.loads(cfg["vidstyle"]["azureml_prices"])
    for dotted in (cfg["secrets"]["backend"], cfg["core"]["hostname_callable"]):
        module, _, name = dotted.rpartition(".")
        assert getattr(importlib.import_module(module), name), dotted
    kwargs = json.loads(cfg["secrets"]["backend_kwargs"])
    assert kwargs["vault_url"].startswith("https://") and kwargs["connections_prefix"]


def test_the_migration_job_makes_the_pool_and_the_queue_by_workload_identity(rendered):
    job = find(rendered, "Job", f"{RELEASE}-run-airflow-migrations")["spec"]["template"]
    [container] = job["spec"]["containers"]
    script = " ".join(container["command"] + container["args"])
    assert container["command"] == ["bash", "-c"]
    assert [step.strip() for step in container["args"][0].split("&&")] == [
        "airflow db migrate", "vidstyle pool", "vidstyle queue"]  # each only after the one before succeeded
    assert "pools set" not in script  # the pool is made the one way, at the settings' size
    # `vidstyle queue` makes the arrivals queue in the storage account: it needs the identity.
    assert job["metadata"]["labels"][IDENTITY_LABEL] == "true"
    account = find(rendered, "ServiceAccount", job["spec"]["serviceAccountName"])
    assert account["metadata"]["annotations"][CLIENT_ID]


def test_every_pod_of_the_project_image_signs_in_by_workload_identity_and_no_other_does(rendered, values):
    client_ids = set()
    for name, pod in pods(rendered).items():
        labelled = pod["metadata"].get("labels", {}).get(IDENTITY_LABEL) == "true"
        if not of_the_project_image(pod, values):
            assert not labelled, f"{name} (not the project's image) needs no Azure identity"
            continue
        assert labelled, name
        account = find(rendered, "ServiceAccount", pod["spec"]["serviceAccountName"])
        client_ids.add(account["metadata"].get("annotations", {}).get(CLIENT_ID))
    assert len(client_ids) == 1 and None not in client_ids  # one identity, on every account
    for name, pod in pods(rendered).items():
        env = {e["name"]: e for c in pod["spec"]["containers"] for e in c.get("env", [])}
        if "AIRFLOW_CONN_WASB_DEFAULT" in env:  # storage and Azure ML by identity: a host, no key
            assert json.loads(env["AIRFLOW_CONN_WASB_DEFAULT"]["value"])["host"].startswith("https://"), name
            extra = json.loads(env["AIRFLOW_CONN_AZUREML_DEFAULT"]["value"])["extra"]
            assert set(extra) == {"subscriptionId", "resource_group_name", "workspace_name"}, name


def worker_sets(rendered: list[dict]) -> dict[str, tuple[dict, dict]]:
    """Each Celery worker set's Deployment and KEDA ScaledObject, by the queue it consumes."""
    found = {}
    for d in rendered:
        if d["kind"] == "Deployment" and d["metadata"]["labels"].get("component") == "worker":
            [container] = [c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
            argv = shlex.split(container["args"][-1].replace("\\\n", " "))
            assert argv[:4] == ["exec", "airflow", "celery", "worker"], argv
            queue = argv[argv.index("-q") + 1] if "-q" in argv else "default"  # Celery's default_queue
            [scaler] = [s for s in rendered if s["kind"] == "ScaledObject"
                        and s["spec"]["scaleTargetRef"]["name"] == d["metadata"]["name"]]
            found[queue] = (d, scaler)
    return found


def test_the_worker_sets_and_their_keda_queries(rendered, values):
    sets = worker_sets(rendered)
    assert set(sets) == {"default", "gpu"}
    concurrency = int(airflow_cfg(rendered)["celery"]["worker_concurrency"])
    for queue, (deployment, scaler) in sets.items():
        [trigger] = scaler["spec"]["triggers"]
        assert trigger["type"] == "postgresql" and trigger["metadata"]["connectionFromEnv"] == "AIRFLOW_CONN_AIRFLOW_DB"
        query = " ".join(trigger["metadata"]["query"].split())
        # A replica per worker_concurrency tasks queued or running on the set's own queue.
        assert f"COUNT(*)::decimal / {concurrency})" in query, query
        assert "state='running'" in query and "state='queued'" in query, query
        assert re.search(r"queue IN \('([^']*)'\)", query)[1] == queue, query
        assert deployment["spec"]["template"]["metadata"]["labels"][IDENTITY_LABEL] == "true"
    assert sets["default"][1]["spec"]["minReplicaCount"] >= 1
    assert sets["gpu"][1]["spec"]["minReplicaCount"] == 0  # no GPU node billed while its queue is empty
    scoring_queue = airflow_cfg(rendered)["vidstyle"]["scoring_queue"]
    assert scoring_queue in ("", *sets), "[vidstyle] scoring_queue names a queue no worker set consumes"


def test_the_gpu_set_runs_on_gpu_nodes_with_a_gpu_and_the_default_set_does_not(rendered):
    sets = worker_sets(rendered)
    gpu = sets["gpu"][0]["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"agentpool": "gpu"}
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in gpu["tolerations"]
    [worker] = [c for c in gpu["containers"] if c["name"] == "worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    default = sets["default"][0]["spec"]["template"]["spec"]
    assert not default.get("nodeSelector") and not default.get("tolerations")
    assert all("nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}) for c in default["containers"])


def test_the_auth_manager_is_one_the_image_has(rendered):
    """FAB, from apache-airflow-providers-fab in the package's `airflow` extra: the Airflow side of
    the lock (requirements.txt), which the image installs too."""
    dotted = airflow_cfg(rendered)["core"]["auth_manager"]
    module, _, name = dotted.rpartition(".")
    assert dotted == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert getattr(importlib.import_module(module), name)
    distributions = importlib.metadata.packages_distributions()
    [provider] = {d for d in distributions["airflow"] if d.startswith("apache-airflow-providers-fab")}
    pins = re.findall(r"^([a-z0-9-]+)==", (ROOT / "requirements.txt").read_text(), re.M)
    assert provider in pins


def test_the_user_job_runs_in_the_images_environment_with_its_password_from_a_secret(rendered, tmp_path):
    """The create-user job's own command line, run with the image's Airflow (the lock's airflow
    extra, as .venv has it) against a fresh database with the rendered auth manager: the user it
    makes exists. Its password comes from a Kubernetes Secret, never from the values."""
    job = find(rendered, "Job", f"{RELEASE}-create-user")["spec"]["template"]
    [container] = job["spec"]["containers"]
    args = container["args"]
    password_ref = args[args.index("-p") + 1]
    variable = re.fullmatch(r"\$\((\w+)\)", password_ref)[1]  # Kubernetes puts the value in at start
    [source] = [e for e in container["env"] if e["name"] == variable]
    assert set(source["valueFrom"]) == {"secretKeyRef"}
    assert job["metadata"]["labels"][IDENTITY_LABEL] == "true"

    cfg = airflow_cfg(rendered)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__AUTH_MANAGER": cfg["core"]["auth_manager"],
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags")}
    bin_dir = Path(sys.executable).parent
    migrated = subprocess.run([str(bin_dir / "airflow"), "db", "migrate"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, check=False)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    password = "s3cret-from-the-secret"
    argv = [a.replace(password_ref, password) for a in args]
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    created = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    listed = subprocess.run([str(bin_dir / "airflow"), "users", "list", "--output", "json"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=True)
    [user] = json.loads(listed.stdout)
    username = args[args.index("-u") + 1]
    assert (user["username"], user["roles"]) == (username, ["Admin"])
    assert password not in created.stdout + created.stderr + listed.stdout
    with sqlite3.connect(tmp_path / "airflow.db") as db:  # the Secret's password is the one it signs in with
        [(stored,)] = db.execute("SELECT password FROM ab_user WHERE username = ?", (username,)).fetchall()
    assert check_password_hash(stored, password) and not check_password_hash(stored, "admin")


def test_no_secret_is_written_in_the_values(values, rendered):
    text = VALUES.read_text()
    assert not re.search(r"AccountKey=|SharedAccessSignature|sig=|client_secret|password:\s*(?!\$\()\S", text, re.I)
    assert not {"fernetKey", "webserverSecretKey", "apiSecretKey", "jwtSecret"} & set(values)
    assert "data" not in values  # the metadata database's password stays the chart's Secret's (or Azure's)
    # The chart makes its own random keys: none came from the values.
    secrets = {d["metadata"]["name"] for d in rendered if d["kind"] == "Secret"}
    assert {f"{RELEASE}-fernet-key", f"{RELEASE}-api-secret-key", f"{RELEASE}-jwt-secret"} <= secrets


def test_every_placeholder_in_the_values_is_in_the_docs_table():
    placeholders = set(re.findall(r"<[^<>\n]+>", VALUES.read_text())) - {"<...>"}
    table = {m for m in re.findall(r"^\| `(<[^`]+>)` \|", (ROOT / "docs" / "kubernetes.md").read_text(), re.M)}
    assert placeholders == table
