"""Chunk tars on the Airflow side: pack split frames, unpack styled ones (format: scoring.frames)."""

from __future__ import annotations

import tarfile
from pathlib import Path


def pack(folder: Path, names: list[str], tar_path: Path) -> None:
    with tarfile.open(tar_path, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            tar.add(folder / name, arcname=name, recursive=False)


def unpack(tar_path: Path, folder: Path) -> list[str]:
    """Extract a frame tar; returns member names in stored order. Only plain PNG files allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, mode="r:") as tar:
        members = [m for m in tar if m.isfile()]
        bad = [m.name for m in members if "/" in m.name or not m.name.endswith(".png")]
        if bad:
            raise ValueError(f"{tar_path.name}: unexpected members {bad[:3]}")
        tar.extractall(folder, members=members, filter="data")
    return [m.name for m in members]
