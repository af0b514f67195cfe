"""Run the processing DAG on a local video file against the configured blob store.

Uploads the file under the input prefix (by its own name, Unicode and all), runs
``video_stylize`` in-process with Airflow's ``dag.test()`` (real tasks, real XCom, real mapped
chunks), downloads the result, manifest and preview, and prints the result's path last.

    python -m vidstyle.localrun my-video.mov --style pop-art --out out/

A run here lives only as long as this process. Stopped (Ctrl-C, SIGTERM) it records itself
failed; killed outright, it is found by the next local run (``reap_dead_runs``), which marks
it failed in Airflow and in the ledger, so the sweep picks the video up again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from vidstyle.blobs import BlobStore
from vidstyle.config import load_settings
from vidstyle.layout import Layout, OutputSpec, Video
from vidstyle.ledger import FAILED, Ledger

log = logging.getLogger("vidstyle.localrun")
PROCESSING_DAG = "video_stylize"
MARK = "_localrun"  # conf key naming the process a local run lives in


def load_dag(dag_id: str = PROCESSING_DAG):
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=conf.get("core", "dags_folder"))
    if dag_id not in bag.dags:
        raise RuntimeError(f"DAG {dag_id} did not load: {bag.import_errors}")
    return bag.dags[dag_id]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_runs(runs, why: str, session) -> list[str]:
    """Mark local runs failed in Airflow (in ``session``, not committed) and in the ledger."""
    from airflow.utils.state import DagRunState, State, TaskInstanceState

    settings = load_settings()
    store = BlobStore(settings.wasb_conn_id, settings.container)
    ledger, failed = Ledger(store, Layout(settings)), []
    for dr in runs:
        for ti in dr.get_task_instances(session=session):
            if ti.state not in State.finished:
                ti.set_state(TaskInstanceState.FAILED, session=session)
        dr.set_state(DagRunState.FAILED)
        conf = dr.conf or {}
        if conf.get("video_version"):
            with contextlib.suppress(Exception):  # the ledger is best kept, never the reason to stop
                ledger.end_run(Video(settings.container, conf["video_blob"], conf["video_version"]), dr.run_id,
                               FAILED, why)
        failed.append(dr.run_id)
    return failed


def reap_dead_runs() -> list[str]:
    """Local runs of this host whose process is gone: marked failed. Returns their run ids."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    host = socket.gethostname()
    with create_session() as session:
        running = session.query(DagRun).filter(DagRun.dag_id == PROCESSING_DAG,
                                               DagRun.state == DagRunState.RUNNING).all()
        dead = [dr for dr in running if (m := (dr.conf or {}).get(MARK)) and m.get("host") == host
                and not _alive(int(m.get("pid", 0)))]
        failed = _fail_runs(dead, "its local process was killed before the run ended", session)
    for run_id in failed:
        print(f"marked failed: local run {run_id}, whose process was killed", flush=True)
    return failed


def _fail_own_run(why: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        running = session.query(DagRun).filter(DagRun.dag_id == PROCESSING_DAG,
                                               DagRun.state == DagRunState.RUNNING).all()
        mine = [dr for dr in running if (dr.conf or {}).get(MARK, {}).get("pid") == os.getpid()]
        _fail_runs(mine, why, session)


def _stop_on_sigterm() -> None:
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def run_file(video: Path, out_dir: Path, return_run: bool = False, **params):
    from airflow.sdk import DagRunState

    from vidstyle.runtime import state_value

    settings = load_settings()
    if not video.is_file():
        raise FileNotFoundError(f"{video} does not exist")
    reap_dead_runs()
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()
    blob = f"{settings.input_prefix}local/{video.name}"  # the name as given: blob names are Unicode
    store.upload(video, blob)
    version = store.video(blob).version
    print(f"uploaded {video} to wasb://{settings.container}/{blob}", flush=True)
    conf = {"video_blob": blob, "video_version": version, **{k: v for k, v in params.items() if v is not None},
            MARK: {"host": socket.gethostname(), "pid": os.getpid()}}
    _stop_on_sigterm()
    try:
        dagrun = load_dag().test(run_conf=conf)
    except KeyboardInterrupt:
        _fail_own_run("its local process was stopped before the run ended")
        raise
    if state_value(dagrun.state) != DagRunState.SUCCESS.value:
        entry = Ledger(store, Layout(settings)).get(Video(settings.container, blob, version).video_id) or {}
        error = entry.get("runs", {}).get(dagrun.run_id, {}).get("error")
        raise RuntimeError(f"run {dagrun.run_id} ended {state_value(dagrun.state)}: {error}")
    spec = OutputSpec(conf.get("style", settings.default_style), conf.get("output_height") or 0,
                      conf.get("crf", 18), conf.get("output_prefix", settings.output_prefix))
    outputs = Layout(settings).outputs(blob, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    local = {kind: store.download(name, out_dir / Path(name).name) for kind, name in outputs.items()}
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
    except (Exception, KeyboardInterrupt) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads(files["manifest"].read_text())
    print(f"{manifest['frames']} frames, {manifest['duration']:.2f} s, scoring "
          f"{manifest['scoring']['frames_per_second']} frames/s; preview: {files['preview']}")
    print(files["video"].resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
