"""Run the processing DAG on a local video file against the configured blob store.

Uploads the file under the input prefix, runs ``video_stylize`` in-process with Airflow's
``dag.test()`` (real tasks, real XCom, real mapped chunks, SQLite metadata), downloads the
result, manifest and preview, and prints the result's path on the last line.

    python -m vidstyle.localrun my-video.mov --style pop-art --out out/
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from vidstyle.blobs import BlobStore
from vidstyle.config import load_settings
from vidstyle.layout import Layout, slug

log = logging.getLogger("vidstyle.localrun")


def load_dag(dag_id: str = "video_stylize"):
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    if dag_id not in bag.dags:
        raise RuntimeError(f"DAG {dag_id} did not load: {bag.import_errors}")
    return bag.dags[dag_id]


def run_file(video: Path, out_dir: Path, return_run: bool = False, **params):
    settings = load_settings()
    if not video.is_file():
        raise FileNotFoundError(f"{video} does not exist")
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()
    blob = f"{settings.input_prefix}local/{slug(video.stem)}{video.suffix.lower()}"
    store.upload(video, blob)
    print(f"uploaded {video} to wasb://{settings.container}/{blob}", flush=True)
    conf = {"video_blob": blob, **{k: v for k, v in params.items() if v is not None}}
    dagrun = load_dag().test(run_conf=conf)
    if str(dagrun.state) != "success":
        record = store.read_json(Layout(settings).state(store.video(blob).video_id))
        raise RuntimeError(f"run {dagrun.run_id} ended {dagrun.state}: {record.get('error')}")
    outputs = Layout(settings).outputs(blob, conf.get("style", settings.default_style),
                                       conf.get("output_prefix"))
    out_dir.mkdir(parents=True, exist_ok=True)
    local = {}
    for kind, name in outputs.items():
        local[kind] = store.download(name, out_dir / Path(name).name)
    return (local, dagrun) if return_run else local


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", type=Path)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("ROOT", ".")) / "out",
                   help="where the result, manifest and preview are downloaded (default: out/)")
    p.add_argument("--style")
    p.add_argument("--chunk-frames", type=int)
    p.add_argument("--output-height", type=int)
    p.add_argument("--crf", type=int)
    p.add_argument("--backend")
    a = p.parse_args(argv)
    try:
        files = run_file(a.video, a.out, style=a.style, chunk_frames=a.chunk_frames,
                         output_height=a.output_height, crf=a.crf, backend=a.backend)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads(files["manifest"].read_text())
    print(f"{manifest['frames']} frames, {manifest['duration']:.2f} s, scoring "
          f"{manifest['scoring']['frames_per_second']} frames/s; preview: {files['preview']}")
    print(files["video"].resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
