"""Shared fixtures: real Azurite, real ffmpeg, real torch, real Airflow (SQLite).

Run through ./scripts/test.sh, which installs and starts everything and sets the environment.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

if "AIRFLOW_HOME" not in os.environ or "AIRFLOW_CONN_WASB_DEFAULT" not in os.environ:
    pytest.exit("run the tests with ./scripts/test.sh (or `source scripts/env.sh` first)", returncode=2)


def _azurite_up() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 10000)) == 0


@pytest.fixture(scope="session", autouse=True)
def azurite() -> None:
    if not _azurite_up():
        pytest.exit("Azurite is not listening on 127.0.0.1:10000: start it with ./scripts/azurite.sh", returncode=2)


@pytest.fixture(scope="session")
def serialized_dags() -> None:
    """The DAGs in the (test) metadata DB, as the DAG processor would put them there."""
    import subprocess

    subprocess.run(["airflow", "dags", "reserialize"], check=True, capture_output=True, timeout=300)


@pytest.fixture
def container(monkeypatch) -> str:
    """A fresh container per test, made the installation's container through Airflow config."""
    name = f"t{uuid.uuid4().hex[:20]}"
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__CONTAINER", name)
    from vidstyle.blobs import BlobStore
    from vidstyle.config import load_settings

    store = BlobStore(load_settings().wasb_conn_id, name)
    store.ensure_container()
    yield name
    store.hook.blob_service_client.delete_container(name)


@pytest.fixture
def store(container):
    from vidstyle.blobs import BlobStore
    from vidstyle.config import load_settings

    return BlobStore(load_settings().wasb_conn_id, container)


def make_video(path: Path, seconds: float = 1.0, size: str = "96x64", rate: str = "30000/1001",
               audio: bool = True, vfr: bool = False) -> Path:
    """A small synthetic video: moving test pattern, optional tone, optional variable frame rate."""
    import ffmpeg

    if vfr:
        # Two halves at different rates, joined: frame durations change mid-stream.
        parts = []
        for i, r in enumerate(("24", "60")):
            part = path.with_name(f"{path.stem}-part{i}.mkv")
            ffmpeg.input(f"testsrc2=size={size}:rate={r}", f="lavfi", t=seconds / 2).output(
                str(part), vcodec="libx264", pix_fmt="yuv420p").overwrite_output().run(quiet=True)
            parts.append(part)
        listing = path.with_name(f"{path.stem}-parts.txt")
        listing.write_text("".join(f"file '{p.name}'\n" for p in parts))
        ffmpeg.input(str(listing), f="concat", safe=0).output(str(path), c="copy").overwrite_output().run(quiet=True)
        return path
    streams = [ffmpeg.input(f"testsrc2=size={size}:rate={rate}", f="lavfi", t=seconds)]
    opts = {"vcodec": "libx264", "pix_fmt": "yuv420p", "t": seconds}
    if audio:
        streams.append(ffmpeg.input("sine=frequency=440:sample_rate=48000", f="lavfi", t=seconds))
        opts |= {"acodec": "aac"}
    ffmpeg.output(*streams, str(path), **opts).overwrite_output().run(quiet=True)
    return path


def cut_chunks(video: Path, folder: Path, chunk_frames: int = 1000, output_height: int = 0) -> list[Path]:
    """The chunk folders (chunk.json + piece.nut) the pipeline's split makes of ``video``."""
    import shutil

    from scoring.chunk import Encoding
    from vidstyle import media
    from vidstyle.cutting import Cutter, Geometry

    info, index = media.probe(video, max_gop=2 * chunk_frames)
    geometry = Geometry.of(info, output_height)

    def emit(i: int, name: str, path: Path) -> None:
        (folder / f"{i}").mkdir(parents=True, exist_ok=True)
        shutil.move(path, folder / f"{i}" / name)

    chunks = Cutter(video, info, index, video.name, chunk_frames, geometry,
                    Encoding(frame_rate=info.frame_rate, sar=geometry.sar), folder / ".cut", emit).run()
    return [folder / f"{c.index}" for c in chunks]


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    """A small TransformerNet checkpoint in the pytorch/examples format (random weights)."""
    import torch

    from scoring.transformer_net import TransformerNet

    torch.manual_seed(0)
    path = tmp_path / "tiny.pth"
    torch.save(TransformerNet(width=4, blocks=1).state_dict(), path)
    return path
