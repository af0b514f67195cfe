"""The scoring environment's version: a hash of what builds its image (images/scoring/Dockerfile,
the lock it installs from, and scoring/). Provisioning registers the environment under exactly
this version, and each run pins ``name:version`` once, in its split, for all its chunks. So a run never switches images
between chunks when someone provisions meanwhile, and re-provisioning an older scorer puts
jobs back on the older image (``@latest`` stayed on the newest one created).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the checkout: images/, the lock and scoring/
DOCKERFILE = ROOT / "images" / "scoring" / "Dockerfile"
SKIP = ("__pycache__", ".pyc", "/.")


def build_files(root: Path = ROOT) -> Iterator[tuple[str, Path]]:
    """(path inside the build context, file): the Dockerfile, the lock and scoring/, caches left out."""
    yield "Dockerfile", root / "images" / "scoring" / "Dockerfile"
    yield "pyproject.toml", root / "pyproject.toml"
    yield "uv.lock", root / "uv.lock"
    for path in sorted((root / "scoring").rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not any(s in "/" + rel for s in SKIP):
            yield rel, path


def environment_version(root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for rel, path in build_files(root):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
