"""Shared fixtures: real Azurite, real ffmpeg, real torch, real Airflow (SQLite).

The tests of pure logic (media, planning, layout, checkpoints, the scorer) need none of them; the
fixtures below bring up what the others use. ``./scripts/test.sh`` installs everything, starts
Azurite and runs ``pytest``; plain ``pytest`` works once Azurite runs (``vidstyle azurite start``).
The tests' Airflow has a home and a database of its own, so their runs never show in the demo or UI.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support import ROOT

# Before anything imports Airflow (it reads its config once): the test home, SQLite, the rest as a
# local installation has it (the DAGs, Azurite's connection).
TEST_HOME = ROOT / ".cache" / "airflow-test"
os.environ.setdefault("AIRFLOW_HOME", str(TEST_HOME))
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{os.environ['AIRFLOW_HOME']}/airflow.db")
# Compiled packages (scoring.aot_package) of this session's own, so every run builds what it tests.
if "VIDSTYLE_AOT_CACHE" not in os.environ:
    os.environ["VIDSTYLE_AOT_CACHE"] = tempfile.mkdtemp(prefix="vidstyle-aot-test-")
    atexit.register(shutil.rmtree, os.environ["VIDSTYLE_AOT_CACHE"], ignore_errors=True)
from vidstyle.cli import local  # noqa: E402  (after the environment it completes)

local.apply()


@pytest.fixture(scope="session")
def azurite() -> None:
    from vidstyle.cli.stack import listening

    for port, service in ((10000, "blob"), (10001, "queue")):
        if not listening(port):
            pytest.exit(f"Azurite's {service} service is not listening on 127.0.0.1:{port}: start it with "
                        "`vidstyle azurite start`", returncode=2)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The tests' Airflow database, migrated (once per Airflow version)."""
    from vidstyle.cli.stack import migrate

    migrate(dict(os.environ))


@pytest.fixture(scope="session")
def serialized_dags(airflow_db) -> None:
    """The DAGs in the (test) metadata DB, as the DAG processor would put them there."""
    subprocess.run(["airflow", "dags", "reserialize"], check=True, capture_output=True, timeout=300)


@pytest.fixture
def container(azurite, monkeypatch) -> str:
    """A fresh container per test, made the installation's container through Airflow config."""
    name = f"t{uuid.uuid4().hex[:20]}"
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__CONTAINER", name)
    from vidstyle.hooks.blob_store import BlobStore
    from vidstyle.pipeline.settings import load_settings

    store = BlobStore(load_settings().wasb_conn_id, name)
    store.ensure_container()
    yield name
    store.hook.blob_service_client.delete_container(name)


@pytest.fixture
def store(container):
    from vidstyle.hooks.blob_store import BlobStore
    from vidstyle.pipeline.settings import load_settings

    return BlobStore(load_settings().wasb_conn_id, container)


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    """A small TransformerNet checkpoint in the pytorch/examples format (random weights)."""
    import torch

    from scoring.transformer_net import TransformerNet

    torch.manual_seed(0)
    path = tmp_path / "tiny.pth"
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), path)
    return path
