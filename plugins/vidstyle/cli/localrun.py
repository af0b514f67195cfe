"""The processing DAG on a local video file, in this process, against the configured blob store.

Uploads the file under the input prefix (by its own name, Unicode and all), runs
``video_stylize`` in-process with Airflow's ``dag.test()`` (real tasks, real XCom, real mapped
chunks) and downloads the result, manifest and preview (``vidstyle run`` and ``vidstyle demo``).

A run here lives only as long as this process. Stopped (Ctrl-C, SIGTERM) it records itself
failed; killed outright, it is found by the next local run (``reap_dead_runs``), which marks
it failed in Airflow and in the ledger, so the sweep picks the video up again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

from scoring.chunk import DEFAULT_CRF
from vidstyle.hooks.blob_store import BlobStore
from vidstyle.pipeline.dispatch import PROCESSING_DAG
from vidstyle.pipeline.identity import OutputSpec, Video, current_video
from vidstyle.pipeline.layout import Layout
from vidstyle.pipeline.ledger import FAILED, Ledger
from vidstyle.pipeline.settings import load_settings

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

    from vidstyle.airflow.tasks import state_value

    settings = load_settings()
    if not video.is_file():
        raise FileNotFoundError(f"{video} does not exist")
    reap_dead_runs()
    store = BlobStore(settings.wasb_conn_id, settings.container)
    store.ensure_container()
    blob = f"{settings.input_prefix}local/{video.name}"  # the name as given: blob names are Unicode
    store.upload(video, blob)
    version = current_video(store, blob).version
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
                      conf.get("crf", DEFAULT_CRF), conf.get("output_prefix", settings.output_prefix))
    outputs = Layout(settings).outputs(blob, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    local = {kind: store.download(name, out_dir / Path(name).name) for kind, name in outputs.items()}
    return (local, dagrun) if return_run else local
