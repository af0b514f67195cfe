"""``vidstyle upload FILE...``: upload local videos into the watched input prefix (what a media
team's tool would do); with the UI running, ``video_arrivals`` picks them up."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidstyle.cli import local


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--prefix", help="where under the container (default: the input_prefix setting, incoming/)")


def run(a: argparse.Namespace) -> int:
    local.apply()
    from vidstyle.hooks.blob_store import BlobStore
    from vidstyle.pipeline.settings import load_settings

    settings = load_settings()
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()
    for f in a.files:
        blob = (a.prefix or settings.input_prefix) + f.name
        store.upload(f, blob)
        print(f"wasb://{settings.container}/{blob}")
    return 0
