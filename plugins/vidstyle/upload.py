"""Upload local videos to the watched input prefix (what a media team's tool would do).

    python -m vidstyle.upload clip1.mp4 clip2.mov [--prefix incoming/team-a/]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidstyle.blobs import BlobStore
from vidstyle.config import load_settings


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--prefix", default=settings.input_prefix)
    a = p.parse_args(argv)
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()
    for f in a.files:
        blob = a.prefix + f.name
        store.upload(f, blob)
        print(f"wasb://{settings.container}/{blob}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
