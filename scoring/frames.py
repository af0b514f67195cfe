"""Lossless frame containers: a chunk is one uncompressed tar of PNG frames.

One tar per chunk keeps blob requests proportional to chunks, not frames, while every frame
stays a plain, lossless PNG that any tool can open. A folder of loose images works too.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# zlib level 1: PNG stays lossless; higher levels cost several times the CPU for ~10% size.
PNG_COMPRESS_LEVEL = 1


def decode_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def encode_png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def read_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    """Members of a frame tar in stored order (which is frame order)."""
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if member.isfile():
                yield member.name, tar.extractfile(member).read()


def tar_names(path: Path) -> list[str]:
    with tarfile.open(path, mode="r:") as tar:
        return [m.name for m in tar if m.isfile()]


def image_paths(folder: Path) -> list[Path]:
    """Loose frames in a folder, in name order (listing only: nothing is read)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_folder(folder: Path) -> Iterator[tuple[str, bytes]]:
    for p in image_paths(folder):
        yield p.name, p.read_bytes()


class TarFrameWriter:
    """Appends encoded frames to a tar; written to a temp name and renamed when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self._partial, mode="w:", format=tarfile.PAX_FORMAT)

    def write(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()
        self._partial.replace(self.path)


class FolderFrameWriter:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, data: bytes) -> None:
        (self.folder / name).write_bytes(data)

    def close(self) -> None:
        pass


def png_name(name: str) -> str:
    return str(Path(name).with_suffix(".png"))
