"""``vidstyle upload FILE...``: upload local videos into the watched input prefix (what a media
team's tool would do); with the UI running, ``video_arrivals`` picks them up.

On Azure, Event Grid tells the arrivals queue of each upload. Azurite emits no events, so there
the command posts the blob-created event itself, exactly as Event Grid writes it (``--event``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidstyle.cli import local


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--prefix", help="where under the container (default: the input_prefix setting, incoming/)")
    p.add_argument("--event", choices=("auto", "always", "never"), default="auto",
                   help="post the blob-created event to the arrivals queue: auto (on Azurite, where no Event "
                        "Grid does it), always, never")


def run(a: argparse.Namespace) -> int:
    local.apply()
    from vidstyle.hooks.blob_store import BlobStore
    from vidstyle.pipeline.arrivals import announce, posts_events
    from vidstyle.pipeline.settings import arrivals_queue, load_settings

    settings = load_settings()
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()
    post = a.event == "always" or (a.event == "auto" and posts_events(store, settings))
    for f in a.files:
        blob = (a.prefix or settings.input_prefix) + f.name
        store.upload(f, blob)
        if post:
            announce(store, settings, blob)
        print(f"wasb://{settings.container}/{blob}" + (f" (event posted to {arrivals_queue(settings)})" if post
                                                          else ""))
    return 0
