"""docker-compose.yaml as it is, run by Debian's docker-compose 1.29 against podman's Docker-compatible
API, and real work driven through it:

1. ``up``: every service healthy (the health loop runs the checks), each one's start-up timed;
2. the UI answers on its port and the admin login the compose file documents works;
3. a video uploaded with its blob-created event (``vidstyle upload``, as a media team would) ends as
   a styled video, manifest and preview in Azurite, frame-exact against the source;
4. a second video while the worker running one of its chunks is killed mid-chunk (``podman kill``):
   it ends exact, and that chunk alone has a second try;
5. ``down`` then ``up``: the runs, the ledger and the task logs are all still there.

What podman needs and Docker does not lives here, not in the compose file: the API service, the
health-check loop, the stand-in base images (bases.py). A small override file sets what only this
exercise needs (test-sized chunks, two workers, the host ports picked free).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import yaml

from deploy.podman import engine

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
PROJECT = "vidstyle-podman"
WORKERS = 2  # so that killing one leaves another: the README's --scale airflow-worker=N
CHUNK_FRAMES = 12  # test-sized chunks: several per short video (a 12-frame chunk takes a minute on a busy CPU)
DAG = "video_stylize"
PORT_VARIABLES = ("AIRFLOW_API_PORT", "AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "FLOWER_PORT")
LONG_RUNNING = ("postgres", "redis", "azurite", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker")
# The file's dependency order (see Stack.up): the stores, airflow-init, then every Airflow service.
STAGES = (("postgres", "redis", "azurite"), ("airflow-init",), LONG_RUNNING[3:])


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Ports free on this machine now, one per name (other agents run Azurite and Airflow on the defaults)."""
    sockets, ports = [], {}
    for name in names:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports[name] = s.getsockname()[1]
    for s in sockets:
        s.close()
    return ports


def override(chunk_frames: int) -> str:
    """The exercise's own settings on top of the file: nothing here changes what the file defines."""
    return yaml.safe_dump({"version": "3.8", "services": {
        "airflow-worker": {"environment": {"AIRFLOW__VIDSTYLE__CHUNK_FRAMES": str(chunk_frames)}}}})


def host_connection(compose: dict, ports: dict[str, int]) -> str:
    """The compose file's own storage connection (Azurite's public emulator key), pointed at the
    ports published on this host."""
    conn = json.loads(compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_WASB_DEFAULT"])
    text = conn["extra"]["connection_string"]
    text = text.replace("http://azurite:10000", f"http://127.0.0.1:{ports['AZURITE_BLOB_PORT']}")
    text = text.replace("http://azurite:10001", f"http://127.0.0.1:{ports['AZURITE_QUEUE_PORT']}")
    return text


def go_time(value: str) -> float:
    """A Go or Python RFC 3339 time (nanoseconds, a zone or Z) as a POSIX timestamp."""
    seconds = engine.started_at(value)
    if not seconds:
        raise ValueError(value)
    return seconds


@dataclass
class Service:
    name: str
    cid: str
    state: str
    exit_code: int
    health: str
    started: float  # POSIX time the container's process started


@dataclass
class Stack:
    ports: dict[str, int]
    api: engine.ApiService
    workdir: Path
    health: engine.HealthLoop | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.workdir / "override.yaml").write_text(override(CHUNK_FRAMES))
        self.env = engine.environment() | {
            "DOCKER_HOST": self.api.docker_host, "COMPOSE_PROJECT_NAME": PROJECT, "COMPOSE_HTTP_TIMEOUT": "900",
            "AIRFLOW_JWT_SECRET": jwt_secret(), **{k: str(v) for k, v in self.ports.items()}}

    def compose(self, *args: str, capture: bool = False, timeout: float = 1800) -> str:
        cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "-f", str(self.workdir / "override.yaml"), *args]
        done = subprocess.run(cmd, cwd=ROOT, env=self.env, text=True, capture_output=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"docker-compose {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
        return done.stdout + done.stderr if capture else ""

    def services(self) -> list[Service]:
        ids = engine.podman("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split()
        if not ids:
            return []
        found = []
        for c in json.loads(engine.podman("inspect", *ids, check=False).stdout or "[]"):
            state = c["State"]
            health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "")
            found.append(Service(c["Config"]["Labels"].get("com.docker.compose.service", "?"), c["Id"],
                                 state["Status"], state.get("ExitCode", 0), health,
                                 go_time(state["StartedAt"]) if state.get("StartedAt") else 0.0))
        return found

    def up(self, timeout: float = 1800) -> dict[str, float]:
        """Start the stack and wait for every service; each one's seconds from its container's
        start to healthy (airflow-init: to its successful exit), and the whole stack's from the start.

        In stages, in the file's own dependency order: podman 4.3.1's compatible API reports an
        exited container as "stopped" where Docker says "exited", so docker-compose 1.29 never sees
        airflow-init complete (``service_completed_successfully``). Each stage is ``up --no-deps`` of
        services whose dependencies the stages before met; compose still orders a stage's own
        services (the workers wait for the API server's health)."""
        began, ready = time.time(), {}
        deadline = time.monotonic() + timeout
        for stage in STAGES:
            scale = ["--scale", f"airflow-worker={WORKERS}"] if "airflow-worker" in stage else []
            files = ["-f", str(COMPOSE_FILE), "-f", str(self.workdir / "override.yaml")]
            proc = subprocess.Popen(["docker-compose", *files, "up", "-d", "--no-build", "--no-deps", *scale, *stage],
                                    cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            while not (proc.poll() == 0 and complete(ready, stage)):
                if proc.poll() not in (None, 0):
                    raise SystemExit(f"docker-compose up failed:\n{proc.stdout.read()[-4000:]}")
                if time.monotonic() > deadline:
                    states = {s.name: (s.state, s.health) for s in self.services()}
                    raise SystemExit(f"the stack was not healthy after {timeout:.0f} s: {states}")
                self._note_ready(ready, began)
                time.sleep(1)
        for key, (own, since_up) in sorted(ready.items(), key=lambda kv: kv[1][1]):
            engine.say(f"  {key}: ready {own:.0f} s after its start, {since_up:.0f} s after `up`")
        whole = round(time.time() - began, 1)
        return {k: round(v[0], 1) for k, v in ready.items()} | {"whole stack (from `up`)": whole}

    def _note_ready(self, ready: dict[str, tuple[float, float]], began: float) -> None:
        now = time.time()
        for s in self.services():
            key = s.name if s.name != "airflow-worker" else f"airflow-worker-{s.cid[:6]}"
            if key in ready:
                continue
            if s.name == "airflow-init" and s.state in ("exited", "stopped"):
                if s.exit_code != 0:
                    logs = self.compose("logs", "airflow-init", capture=True)
                    raise SystemExit(f"airflow-init failed:\n{logs[-4000:]}")
                ready[key] = (now - s.started, now - began)
            elif s.health == "healthy":
                ready[key] = (now - s.started, now - began)

    def down(self, *args: str) -> None:
        """``down``, with the health loop's restarts paused: these containers stop on purpose."""
        if self.health:
            self.health.restarts.clear()
        try:
            self.compose("down", *args, timeout=900)
        finally:
            if self.health:
                self.health.restarts.set()


def complete(ready: dict, services: tuple[str, ...]) -> bool:
    """Every one of ``services`` ready (healthy, or airflow-init done), each worker."""
    names = {k.rsplit("-", 1)[0] if k.startswith("airflow-worker-") else k for k in ready}
    workers = sum(k.startswith("airflow-worker-") for k in ready)
    return set(services) <= names and ("airflow-worker" not in services or workers >= WORKERS)


def jwt_secret() -> str:
    """A signing key of this installation's own, kept (0600) so that a restart keeps it."""
    path = engine.home() / "jwt-secret"
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


# -- the Airflow REST API, as the UI's user -----------------------------------------------------------

class Api:
    def __init__(self, port: int, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.password = password
        self.token = ""

    def login(self) -> None:
        body = json.dumps({"username": "admin", "password": self.password}).encode()
        req = urllib.request.Request(f"{self.base}/auth/token", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            self.token = json.load(r)["access_token"]

    def get(self, path: str, raw: bool = False):
        req = urllib.request.Request(f"{self.base}{path}", headers={"Authorization": f"Bearer {self.token}",
                                                                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read() if raw else json.load(r)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                self.login()
                return self.get(path, raw)
            raise

    def runs(self) -> list[dict]:
        return self.get(f"/api/v2/dags/{DAG}/dagRuns?limit=100")["dag_runs"]

    def task_instances(self, run_id: str) -> list[dict]:
        quoted = urllib.request.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{DAG}/dagRuns/{quoted}/taskInstances?limit=1000")["task_instances"]

    def log(self, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        quoted = urllib.request.quote(run_id, safe="")
        data = self.get(f"/api/v2/dags/{DAG}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}"
                        f"?map_index={map_index}&full_content=true")
        return json.dumps(data.get("content", data))


def admin_password(stack: Stack) -> str:
    """The password the API server logged at its start (the compose file's header says where)."""
    logs = stack.compose("logs", "--no-color", "airflow-apiserver", capture=True)
    found = re.findall(r"Password for user 'admin': (\S+)", logs)
    if not found:
        raise SystemExit("the API server logged no admin password")
    return found[-1]


def check_ui(stack: Stack) -> Api:
    port = stack.ports["AIRFLOW_API_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        page = r.read().decode(errors="replace")
        if r.status != 200 or "<html" not in page.lower():
            raise SystemExit(f"the UI on port {port} answered {r.status}")
    api = Api(port, admin_password(stack))
    api.login()
    dags = {d["dag_id"] for d in api.get("/api/v2/dags")["dags"]}
    if DAG not in dags:
        raise SystemExit(f"the API lists no {DAG}: {dags}")
    engine.say(f"UI answers on http://127.0.0.1:{port}/; admin logged in; DAGs: {', '.join(sorted(dags))}")
    return api


# -- videos through it ----------------------------------------------------------------------------

@dataclass
class Storage:
    connection: str

    def client(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection).get_container_client("videos")

    def names(self, prefix: str) -> dict[str, str]:
        return {b.name: b.etag for b in self.client().list_blobs(name_starts_with=prefix)}

    def download(self, name: str, path: Path) -> Path:
        path.write_bytes(self.client().download_blob(name).readall())
        return path


def make_video(path: Path, frames: int, size: str = "128x72") -> Path:
    rate = Fraction(30000, 1001)
    engine.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-frames:v", str(frames),
                "-t", f"{float(frames / rate):.3f}", "-c:v", "libx264", "-g", str(CHUNK_FRAMES), "-pix_fmt", "yuv420p",
                "-c:a", "aac", str(path)], env=dict(os.environ))
    return path


def frame_times(path: Path) -> list[Fraction]:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=time_base:frame=pts", "-of", "json", str(path)], capture_output=True, text=True,
                          check=True)
    data = json.loads(done.stdout)
    base = Fraction(data["streams"][0]["time_base"])
    times = sorted(Fraction(f["pts"]) * base for f in data["frames"])
    return [t - times[0] for t in times]


def upload(stack: Stack, storage: Storage, video: Path) -> float:
    """``vidstyle upload``: the blob and its blob-created event on the arrivals queue, as Event Grid
    would post it; the project's own command, from this checkout, against the stack's Azurite."""
    home = Path(tempfile.mkdtemp(prefix="airflow-home-", dir=stack.workdir))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIDSTYLE"))} | {
        "AIRFLOW_HOME": str(home), "VIDSTYLE_DB": "sqlite", "AIRFLOW_CONN_WASB_DEFAULT": json.dumps(
            {"conn_type": "wasb", "extra": {"connection_string": storage.connection}}),
        "AIRFLOW__VIDSTYLE__CONTAINER": "videos", "AIRFLOW__VIDSTYLE__ARRIVALS": "storage_queue"}
    at = time.time()
    engine.run([str(ROOT / ".venv" / "bin" / "vidstyle"), "upload", "--event", "always", str(video)], env=env)
    return at


def wait_for_run(api: Api, blob: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = [r for r in api.runs() if blob in json.dumps(r.get("conf") or {})]
        if mine:
            return mine[-1]
        time.sleep(2)
    raise SystemExit(f"no {DAG} run for {blob} after {timeout:.0f} s (arrivals)")


def wait_for_end(api: Api, run_id: str, timeout: float, watch=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = next(r for r in api.runs() if r["dag_run_id"] == run_id)
        if run["state"] in ("success", "failed"):
            return run
        if watch:
            watch()
        time.sleep(2)
    raise SystemExit(f"run {run_id} did not end in {timeout:.0f} s")


def check_result(storage: Storage, stem: str, source: Path, work: Path) -> dict:
    """The styled video, its manifest and its preview are in Azurite; the video has exactly the
    source's frames at exactly the source's times."""
    outputs = [n for n in storage.names("outputs/") if n.split("/")[-1].startswith(stem + ".")]
    kinds = {k: [n for n in outputs if n.endswith(k)] for k in (".mp4", ".manifest.json", ".preview.png")}
    if not all(kinds.values()):
        raise SystemExit(f"results for {stem} are incomplete: {outputs}")
    styled = storage.download(kinds[".mp4"][0], work / f"{stem}.styled.mp4")
    want, got = frame_times(source), frame_times(styled)
    if want != got:
        raise SystemExit(f"{stem}: the styled video has {len(got)} frames, the source {len(want)}, "
                         "or their times differ")
    return {"outputs": sorted(outputs), "frames": len(got)}


def seconds_to(run: dict, since: float) -> float:
    return go_time(run["end_date"]) - since


class Killer:
    """Kills the worker container running one of the run's chunks, mid-chunk: a chunk running for
    a few seconds on a worker that runs no other chunk, so that only that chunk is interrupted."""

    def __init__(self, stack: Stack, api: Api, run_id: str) -> None:
        self.stack, self.api, self.run_id = stack, api, run_id
        self.killed: dict | None = None
        self.seen_running: dict[int, float] = {}

    def __call__(self) -> None:
        if self.killed:
            return
        chunks = [t for t in self.api.task_instances(self.run_id) if t["task_id"] == "stylize_chunk"]
        running = [t for t in chunks if t["state"] == "running"]
        now = time.monotonic()
        for t in running:
            self.seen_running.setdefault(t["map_index"], now)
        workers = {}
        for s in self.stack.services():
            if s.name == "airflow-worker" and s.state == "running":
                hostname = engine.podman("inspect", "--format", "{{.Config.Hostname}}", s.cid).stdout.strip()
                workers[hostname] = s.cid
        for t in running:
            host = (t.get("hostname") or "").split(".")[0]
            alone = sum((o.get("hostname") or "").split(".")[0] == host for o in running) == 1
            if host in workers and alone and now - self.seen_running[t["map_index"]] >= 3:
                engine.podman("kill", workers[host])
                self.killed = {"map_index": t["map_index"], "chunk": t.get("rendered_map_index"),
                               "worker": host, "try_number": t["try_number"]}
                engine.say(f"killed worker {host} (podman kill) while it ran {t.get('rendered_map_index')}, "
                           f"try {t['try_number']}")
                return


def exercise(keep_up: bool = False) -> dict:
    api_service = engine.ApiService()
    api_service.start()
    health = engine.HealthLoop()
    health.start()
    work = Path(tempfile.mkdtemp(prefix="compose-", dir=engine.home()))
    stack = Stack(free_ports(PORT_VARIABLES), api_service, work, health)
    storage = Storage(host_connection(yaml.safe_load(COMPOSE_FILE.read_text()), stack.ports))
    figures: dict = {"ports": stack.ports, "lines": []}
    lines = figures["lines"]
    try:
        stack.down("--volumes")  # a clean start: an old ledger would skip known videos
        engine.say(f"docker-compose up (project {PROJECT}, ports {stack.ports}, {WORKERS} workers)")
        figures["startup_s"] = stack.up()
        lines += [f"start-up, {k}: {v:.0f} s" for k, v in figures["startup_s"].items()]
        api = check_ui(stack)
        figures["first"] = first_video(stack, api, storage)
        lines.append(f"first video ({figures['first']['frames']} frames, 2 chunks): upload to result "
                     f"{figures['first']['upload_to_result_s']:.0f} s, frame-exact")
        engine.say(lines[-1])
        figures["second"] = second_video(stack, api, storage)
        lines.append(f"second video ({figures['second']['frames']} frames, 3 chunks), worker killed mid-chunk: "
                     f"upload to result {figures['second']['upload_to_result_s']:.0f} s, frame-exact; only "
                     f"{figures['second']['killed']['chunk']} retried (tries: {figures['second']['tries']})")
        engine.say(lines[-1])
        figures["restart"] = restart(stack, api, storage)
        lines.append(f"down and up: runs, ledger and logs all kept; start-up again "
                     f"{figures['restart']['startup_s']['whole stack (from `up`)']:.0f} s")
        engine.say(lines[-1])
    except BaseException:
        with contextlib.suppress(Exception):
            (work / "compose-logs.txt").write_text(stack.compose("logs", "--no-color", "--tail", "300", capture=True))
            engine.say(f"the stack's logs: {work / 'compose-logs.txt'}")
        raise
    finally:
        if not keep_up:
            with contextlib.suppress(SystemExit, subprocess.SubprocessError):
                stack.down()
            api_service.stop()
        health.stop()
    return figures


def first_video(stack: Stack, api: Api, storage: Storage) -> dict:
    source = make_video(stack.workdir / "first.mp4", 2 * CHUNK_FRAMES)
    at = upload(stack, storage, source)
    run = wait_for_run(api, source.name, 600)
    run = wait_for_end(api, run["dag_run_id"], 3600)
    if run["state"] != "success":
        raise SystemExit(f"the first video's run {run['dag_run_id']} {run['state']}")
    return check_result(storage, "first", source, stack.workdir) | {"upload_to_result_s": round(seconds_to(run, at), 1)}


def second_video(stack: Stack, api: Api, storage: Storage) -> dict:
    """A worker killed mid-chunk: the run ends exact, and the killed chunk alone has a second try."""
    # Larger frames: each chunk scores for a minute or more, so the kill lands well inside one
    # (a 128x72 chunk took 20 s, and a kill a few seconds after "running" met a finished chunk).
    source = make_video(stack.workdir / "second.mp4", 3 * CHUNK_FRAMES, size="384x216")
    at = upload(stack, storage, source)
    run = wait_for_run(api, source.name, 600)
    killer = Killer(stack, api, run["dag_run_id"])
    run = wait_for_end(api, run["dag_run_id"], 3600, watch=killer)
    if not killer.killed:
        raise SystemExit("no moment came to kill a worker mid-chunk")
    if run["state"] != "success":
        raise SystemExit(f"the second video's run {run['dag_run_id']} {run['state']}")
    tries = {(t["task_id"], t["map_index"]): t["try_number"] for t in api.task_instances(run["dag_run_id"])}
    retried = {k: v for k, v in tries.items() if v > 1}
    if retried != {("stylize_chunk", killer.killed["map_index"]): killer.killed["try_number"] + 1}:
        raise SystemExit(f"expected only the killed chunk retried, once: {retried}")
    return check_result(storage, "second", source, stack.workdir) | {
        "upload_to_result_s": round(seconds_to(run, at), 1), "killed": killer.killed,
        "tries": {f"{k[0]}[{k[1]}]" if k[1] >= 0 else k[0]: v for k, v in sorted(tries.items())}}


def restart(stack: Stack, api: Api, storage: Storage) -> dict:
    """``down`` (containers and network gone, volumes kept) and ``up``: nothing is lost."""
    runs = {r["dag_run_id"]: r["state"] for r in api.runs()}
    ledger = storage.names("state/videos/")
    some_run = next(iter(r for r, s in runs.items() if s == "success"))
    log_before = api.log(some_run, "stitch", 1)
    stack.down()
    engine.say("docker-compose down; up again")
    startup = stack.up()
    api = check_ui(stack)
    after_runs = {r["dag_run_id"]: r["state"] for r in api.runs()}
    missing = {k: v for k, v in runs.items() if after_runs.get(k) != v}
    if missing:
        raise SystemExit(f"runs lost or changed by the restart: {missing}")
    if storage.names("state/videos/") != ledger:
        raise SystemExit("the ledger changed across the restart")
    if api.log(some_run, "stitch", 1) != log_before or len(log_before) < 100:
        raise SystemExit("a task's log was lost across the restart")
    return {"runs": len(runs), "ledger_entries": len(ledger), "startup_s": startup}


def down(volumes: bool = False) -> None:
    api_service = engine.ApiService()
    api_service.start()
    work = Path(tempfile.mkdtemp(prefix="compose-", dir=engine.home()))
    stack = Stack(free_ports(PORT_VARIABLES), api_service, work)
    stack.compose("down", *(["--volumes"] if volumes else []))
    engine.say("the stack is down" + (" and its volumes removed" if volumes else " (volumes kept)"))
