"""The scoring environment: what builds its image, its version, and the version every worker uses.

The version is a hash of what builds the image (images/scoring/Dockerfile, the lock it installs
from, and scoring/). ``vidstyle provision``, run from the project's checkout, registers the
environment under that version in the workspace and records it in the pipeline's own storage
(``state/azureml/environment.json``); every worker reads the record, never its own files. So
a worker whose code differs by a byte (a local edit, CRLF endings, an image without images/)
still submits the version that exists, a run pins the recorded version once, in its split, for
all its chunks (a provision during a run does not switch images between them), and
re-provisioning an older scorer puts jobs back on the older image (``@latest`` could do neither).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pendulum

from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[3]  # the checkout: images/, the lock and scoring/
DOCKERFILE = ROOT / "images" / "scoring" / "Dockerfile"
SKIP = ("__pycache__", ".pyc", "/.")


class NoEnvironment(ValueError):
    """No scoring environment is recorded (provision has not run), or the record does not fit."""


def build_files(root: Path = ROOT) -> Iterator[tuple[str, Path]]:
    """(path inside the build context, file): the Dockerfile, the lock and scoring/, caches left out."""
    dockerfile = root / "images" / "scoring" / "Dockerfile"
    if not dockerfile.is_file():
        raise FileNotFoundError(
            f"the scoring image's sources are not here ({dockerfile} is missing): provisioning builds them "
            "from the project's checkout, so run `vidstyle provision` from one")
    yield "Dockerfile", dockerfile
    yield "pyproject.toml", root / "pyproject.toml"
    yield "uv.lock", root / "uv.lock"
    for path in sorted((root / "scoring").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(s in "/" + rel for s in SKIP):
            yield rel, path


def environment_version(root: Path = ROOT) -> str:
    """The version the checkout at ``root`` would register (provision's; workers read the record)."""
    digest = hashlib.sha256()
    for rel, path in build_files(root):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def record_path(layout: Layout) -> str:
    return f"{layout.settings.state_prefix}azureml/environment.json"


def record_environment(settings: Settings, version: str) -> dict:
    """What provision registered, where every worker reads it."""
    record = {"environment": settings.azureml_environment, "version": version,
              "registered_at": pendulum.now("UTC").to_iso8601_string()}
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()  # a new installation provisions before its first upload
    store.write_json(record_path(Layout(settings)), record)
    return record


def recorded_environment(settings: Settings) -> str:
    """``name:version`` of the scoring environment provision registered last."""
    store = BlobStore(settings.wasb_conn_id, settings.container)
    try:
        record = store.read_json(record_path(Layout(settings)))
    except FileNotFoundError:
        raise NoEnvironment(
            f"no scoring environment is registered for container {settings.container!r} (no "
            f"{record_path(Layout(settings))}): run `vidstyle provision` from the project's checkout "
            "(docs/azure-ml.md)") from None
    if record.get("environment") != settings.azureml_environment:
        raise NoEnvironment(
            f"the registered scoring environment is {record.get('environment')!r}, not azureml_environment "
            f"{settings.azureml_environment!r}: run `vidstyle provision` with these settings")
    return f"{record['environment']}:{record['version']}"
