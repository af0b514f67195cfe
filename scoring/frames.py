"""Still images in and out: folders of frames, and a fast lossless PNG writer.

The pipeline's chunks travel as video (``scoring.video``); folders of images are for trying a
model on stills and for tools that want frames (the benchmark's reference loop).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def encode_png(frame: np.ndarray, level: int = 0) -> bytes:
    """An RGB uint8 HxWx3 frame as a lossless 8-bit PNG, written for speed.

    ``level`` is zlib's: 0 stores the rows uncompressed (a memory copy and two checksums),
    1 and up deflate them. Pillow and libpng pick a filter per row by trying them all, which
    is most of their encode time; here one fixed filter ("Up": each row minus the one above,
    vectorised in numpy) with zlib's run-length strategy compresses as well as Pillow's
    level 1 for under half its CPU. On a CPU every core-ms spent here is taken from the model.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 frame, got {frame.dtype} {frame.shape}")
    height, width, _ = frame.shape
    rows = frame.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    if level == 0:  # filtering cannot help what is stored as is
        filtered[:, 0] = 0
        filtered[:, 1:] = rows
    else:
        filtered[:, 0] = 2  # filter type "Up" on every row (the first row's "above" is zeros)
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 wraps mod 256, as PNG wants
    packer = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_RLE)
    idat = (packer.compress(filtered.data), packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    # One join at the end: the frame-sized IDAT is copied once, not once per concatenation.
    return b"".join([_PNG_SIGNATURE, *_png_chunk(b"IHDR", header), *_png_chunk(b"IDAT", *idat),
                     *_png_chunk(b"IEND")])


def _png_chunk(kind: bytes, *data: bytes) -> list[bytes]:
    """A PNG chunk's parts: length, type, data, CRC of type and data."""
    crc = zlib.crc32(kind)
    for part in data:
        crc = zlib.crc32(part, crc)
    return [struct.pack(">I", sum(map(len, data))), kind, *data, struct.pack(">I", crc)]


def image_paths(folder: Path) -> list[Path]:
    """Loose frames in a folder, in name order (listing only: nothing is read)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_folder(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB frame) for each image, decoded as the iterator is pulled."""
    for p in image_paths(folder):
        yield p.name, decode_image(p.read_bytes())


class FolderFrameWriter:
    """Writes each frame as a PNG named like its input (``photo.jpg`` -> ``photo.png``)."""

    def __init__(self, folder: Path, png_level: int = 1) -> None:
        self.folder, self.png_level = folder, png_level
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, frame: np.ndarray) -> None:
        (self.folder / png_name(name)).write_bytes(encode_png(frame, self.png_level))


def png_name(name: str) -> str:
    return str(Path(name).with_suffix(".png"))
