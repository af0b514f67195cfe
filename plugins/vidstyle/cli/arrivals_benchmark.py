"""``vidstyle arrivals-benchmark``: what finding uploads costs, by listing and by event, as the
archive grows (README "Arrivals").

For each archive size (videos under ``incoming/``, each with its ledger entry, in an in-memory
Azurite of the benchmark's own on ports 10100/10101) and each watcher, it prints:

- storage requests per idle minute: the real trigger run for a minute with nothing new, at the
  default intervals, counted in Azurite's access log;
- the time of one check (best of three): one listing scan, or one queue read;
- the delay from an upload to its ``video_stylize`` run's creation, through a ``vidstyle cluster``
  (scheduler, triggerer, DAG processor, API server, a worker, on PostgreSQL): median of
  ``--samples`` uploads, each at a random moment of the poll cycle (only ``video_arrivals`` is
  unpaused: the processing runs are created and wait, the daily sweep does not run).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from azure.storage.blob._shared.parser import DEVSTORE_ACCOUNT_KEY

from vidstyle.cli import local, stack
from vidstyle.cli.cluster_run import cluster as _cluster
from vidstyle.cli.cluster_run import sql as _sql

BLOB_PORT, QUEUE_PORT = 10100, 10101
# Azurite's account and its public, documented key (the SDK's own constant): no secret.
CONNECTION = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEVSTORE_ACCOUNT_KEY};"
              f"BlobEndpoint=http://127.0.0.1:{BLOB_PORT}/devstoreaccount1;"
              f"QueueEndpoint=http://127.0.0.1:{QUEUE_PORT}/devstoreaccount1;")
CONTAINER = "bench"
MODES = ("listing", "storage_queue")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1000,10000,100000", help="archive sizes, ascending (default %(default)s)")
    p.add_argument("--samples", type=int, default=10,
                   help="uploads timed per watcher and size (default 10; 0: no cluster, the idle cost only)")
    p.add_argument("--phase-seconds", type=float, default=900,
                   help="the most one watcher's delay samples may take at one size; fewer samples are "
                        "reported if it runs out (default %(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="watchers to measure (default %(default)s)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--idle-seconds", type=float, default=60.0,
                   help="how long each watcher is counted idle (default %(default)s; requests are given per minute)")


class Azurite:
    """The benchmark's own in-memory Azurite, its access log the request count."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.procs = folder, []

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for service, port in (("blob", BLOB_PORT), ("queue", QUEUE_PORT)):
            program = shutil.which(f"azurite-{service}", path=os.pathsep.join([str(local.tools_bin()),
                                                                                 os.environ["PATH"]]))
            if not program:
                raise SystemExit("azurite is not installed: run ./scripts/bootstrap.sh")
            log = open(self.folder / f"{service}.log", "wb")  # open while Azurite runs
            self.procs.append(subprocess.Popen(
                [program, f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port), "--inMemoryPersistence",
                 "--disableTelemetry", "--skipApiVersionCheck", "--loose"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))
            if not stack.wait_until(lambda port=port: stack.listening(port), 30):
                raise SystemExit(f"the benchmark's Azurite {service} service did not start")

    def requests(self) -> int:
        """Requests served so far (one access-log line each, both services)."""
        total = 0
        for service in ("blob", "queue"):
            with open(self.folder / f"{service}.log", "rb") as f:
                total += sum(chunk.count(b" HTTP/1.1\" ") for chunk in iter(lambda f=f: f.read(1 << 20), b""))
        return total

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(30)


def fill(target: int, have: int, settings) -> None:
    """Archive videos (tiny blobs: the watcher reads names, never bytes), each with its ledger
    entry, from ``have`` up to ``target``."""
    from azure.storage.blob import BlobServiceClient, ContentSettings

    from vidstyle.pipeline.identity import Video
    from vidstyle.pipeline.layout import Layout

    container = BlobServiceClient.from_connection_string(CONNECTION).get_container_client(CONTAINER)
    layout = Layout(settings)

    def one(i: int) -> None:
        blob = f"{settings.input_prefix}archive/{i // 1000:03d}/video-{i:06d}.mp4"
        data = f"video {i}".encode()
        md5 = hashlib.md5(data).digest()  # the content version the watcher reads back
        container.upload_blob(blob, data, overwrite=True, content_settings=ContentSettings(content_md5=md5))
        video = Video(CONTAINER, blob, md5.hex())
        container.upload_blob(layout.state(video.video_id), b'{"status": "succeeded"}', overwrite=True)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(have, target)))


async def _idle_minute(trigger, seconds: float) -> None:
    async def watch():
        async for event in trigger.run():
            raise RuntimeError(f"the watcher fired on an idle store: {event}")

    try:
        await asyncio.wait_for(watch(), seconds)
    except TimeoutError:
        pass


def idle_cost(azurite: Azurite, mode: str, settings, seconds: float = 60.0) -> dict:
    """Requests in an idle minute, and one check's time (best of three)."""
    from azure.storage.blob.aio import BlobServiceClient
    from azure.storage.queue.aio import QueueClient

    from vidstyle.airflow.triggers.blob_events import StorageQueueEventTrigger
    from vidstyle.airflow.triggers.new_video import NewVideoTrigger
    from vidstyle.pipeline.settings import arrivals_queue

    if mode == "listing":
        trigger = NewVideoTrigger("wasb_default", CONTAINER, settings.input_prefix, settings.state_prefix,
                                  settings.video_suffixes, settings.sensor_poke_seconds)

        async def check():
            async with BlobServiceClient.from_connection_string(CONNECTION) as client:
                assert await trigger._scan(client) == []
    else:
        trigger = StorageQueueEventTrigger("wasb_default", arrivals_queue(settings), CONTAINER,
                                           settings.input_prefix, settings.video_suffixes,
                                           settings.arrivals_poll_seconds)

        async def check():
            async with QueueClient.from_connection_string(CONNECTION, arrivals_queue(settings)) as q:
                assert [m async for m in q.receive_messages(max_messages=32, visibility_timeout=30)] == []

    times = []
    for _ in range(3):
        started = time.perf_counter()
        asyncio.run(check())
        times.append(time.perf_counter() - started)
    before = azurite.requests()
    asyncio.run(_idle_minute(trigger, seconds))
    time.sleep(1)  # the last requests reach the log
    return {"requests_per_idle_minute": round((azurite.requests() - before) * 60 / seconds, 1),
            "check_seconds": round(min(times), 4)}


def delays(mode: str, settings, samples: int, budget: float, work: Path) -> list[float]:
    """Upload to run creation, through a real cluster watching the benchmark's store."""
    from vidstyle.hooks.blob_store import BlobStore
    from vidstyle.pipeline.arrivals import announce
    from vidstyle.pipeline.identity import current_video

    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "AIRFLOW_CONN_WASB_DEFAULT": json.dumps({"conn_type": "wasb", "extra": {"connection_string": CONNECTION}}),
        "VIDSTYLE_CLUSTER_DB": f"airflow_arrivals_{tag}", "VIDSTYLE_CLUSTER_CONTAINER": CONTAINER,
        "AIRFLOW__VIDSTYLE__ARRIVALS": mode,
        # Only the watcher runs: the daily sweep (which reads every ledger entry) would share the
        # store with it, and the processing runs would share the CPU.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    _cluster("reset", env=env)
    env = dict(line.split("=", 1) for line in _cluster("env", env=env).split("\0") if "=" in line)
    os.environ["AIRFLOW_CONN_WASB_DEFAULT"] = env["AIRFLOW_CONN_WASB_DEFAULT"]
    store = BlobStore("wasb_default", CONTAINER)
    rng = random.Random(7)
    got: list[float] = []
    try:
        _cluster("start", "1", env=env)
        deadline = time.monotonic() + 300
        while not _sql(env, "select 1 from dag where dag_id = 'video_stylize'") and time.monotonic() < deadline:
            time.sleep(1)
        _sql(env, "update dag set is_paused = false where dag_id = 'video_arrivals'")
        time.sleep(10)  # the watcher settles (the listing sensor's first scan, the queue's first poll)
        phase_end = time.monotonic() + budget
        for i in range(samples):
            if time.monotonic() > phase_end:
                break
            time.sleep(rng.uniform(0, settings.sensor_poke_seconds if mode == "listing"
                                   else settings.arrivals_poll_seconds))
            f = work / f"new-{tag}-{i}.mp4"
            f.write_bytes(f"new video {tag} {i}".encode())
            blob = f"{settings.input_prefix}new/{f.name}"
            uploaded = datetime.now(UTC)
            store.upload(f, blob)
            if mode != "listing":
                announce(store, settings, blob)  # what Event Grid does on Azure
            video_id = current_video(store, blob).video_id
            while True:
                rows = _sql(env, "select queued_at from dag_run where dag_id = 'video_stylize' and run_id like %s",
                            f"%{video_id}%")
                if rows and rows[0][0]:
                    got.append((rows[0][0] - uploaded).total_seconds())
                    print(f"    {mode}: upload {i + 1}: run created after {got[-1]:.1f} s", flush=True)
                    break
                if time.monotonic() > phase_end + 600:
                    raise SystemExit(f"{mode}: no run for {blob} after {budget + 600:.0f} s")
                time.sleep(0.2)
    finally:
        _cluster("stop", env=env)
        _cluster("drop", env=env)
        store.delete_prefix(f"{settings.input_prefix}new/")
    return got


def run(a: argparse.Namespace) -> int:
    local.apply()
    os.environ["AIRFLOW_CONN_WASB_DEFAULT"] = json.dumps(
        {"conn_type": "wasb", "extra": {"connection_string": CONNECTION}})
    from azure.storage.blob import BlobServiceClient

    from vidstyle.pipeline.arrivals import ensure_queue
    from vidstyle.pipeline.settings import Settings

    sizes = [int(s) for s in a.sizes.split(",")]
    modes = [m for m in a.modes.split(",") if m]
    settings = Settings(container=CONTAINER)
    work = local.home() / ".cache" / "arrivals-benchmark"
    azurite = Azurite(work / "azurite")
    for service in ("postgres", "redis"):
        subprocess.run([sys.executable, "-m", "vidstyle.cli.main", "services", "start", service], check=True,
                       stdout=subprocess.DEVNULL)
    azurite.start()
    figures: dict = {"date": datetime.now(UTC).date().isoformat(), "cpu": _cpu(), "sizes": {}}
    try:
        BlobServiceClient.from_connection_string(CONNECTION).create_container(CONTAINER)
        ensure_queue(settings)
        have = 0
        for size in sizes:
            started = time.monotonic()
            fill(size, have, settings)
            have = size
            print(f"{size} videos in the archive (filled in {time.monotonic() - started:.0f} s)", flush=True)
            row = {}
            for mode in modes:
                row[mode] = idle_cost(azurite, mode, settings, a.idle_seconds)
                taken = delays(mode, settings, a.samples, a.phase_seconds, work) if a.samples else []
                row[mode] |= {"delays_seconds": [round(d, 1) for d in taken],
                              "median_delay_seconds": round(statistics.median(taken), 1) if taken else None}
                print(f"  {mode}: {json.dumps(row[mode])}", flush=True)
            figures["sizes"][str(size)] = row
            if a.json:
                a.json.write_text(json.dumps(figures, indent=1))
    finally:
        azurite.stop()
    print(table(figures))
    return 0


def table(figures: dict) -> str:
    lines = ["| videos in the archive | watcher | requests per idle minute | one check | delay to the run "
             "(median) | samples |", "| --- | --- | --- | --- | --- | --- |"]
    for size, row in figures["sizes"].items():
        for mode, r in row.items():
            delay = f"{r['median_delay_seconds']} s" if r["median_delay_seconds"] is not None else "-"
            lines.append(f"| {int(size):,} | {mode} | {r['requests_per_idle_minute']} | {r['check_seconds']} s | "
                         f"{delay} | {len(r['delays_seconds'])} |")
    return "\n".join(lines)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    return "unknown"
