"""``vidstyle cluster``: the pipeline on Airflow's CeleryExecutor, as separate processes on this
machine: PostgreSQL and Redis (``vidstyle services``), Azurite, and the API server, scheduler, DAG
processor, triggerer and Celery workers, each worker with a hostname and a scratch folder of its
own, as if on machines of their own (nothing shares local disk: everything goes through storage).

    vidstyle cluster start [WORKERS]     2 workers by default; UI/API on http://127.0.0.1:8090
    vidstyle cluster stop [NAME]         all, or one process (SIGTERM: it shuts down as it would)
    vidstyle cluster status
    vidstyle cluster kill NAME           SIGKILL a process and everything it started (a lost machine)
    vidstyle cluster pause|resume NAME   SIGSTOP|SIGCONT it and everything it started (a frozen machine)
    vidstyle cluster run NAME            (re)start one: scheduler, triggerer, worker1, ... (triggerer2,
                                         worker3: one more of them)
    vidstyle cluster airflow ARGS...     the airflow CLI against this cluster
    vidstyle cluster env                 its environment, NUL-separated (for tests and tools)
    vidstyle cluster reset | drop        a fresh database next start | the database and container gone

Its Airflow home, database (``airflow_cluster``), container (``cluster``) and logs
(``.cache/cluster/logs``) are its own: the demo, the UI and the tests are not touched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from vidstyle.cli import local, stack

CORE = ("api-server", "scheduler", "dag-processor", "triggerer")


def folder() -> Path:
    return local.home() / ".cache" / "cluster"


def environment() -> dict[str, str]:
    """The cluster's processes' environment: the caller's settings (``AIRFLOW__VIDSTYLE__*`` and
    the like), the cluster's own home, database, executor and ports, then the local defaults."""
    base = dict(os.environ)
    api_port = base.get("VIDSTYLE_CLUSTER_API_PORT", "8090")
    db = base.get("VIDSTYLE_CLUSTER_DB", "airflow_cluster")
    pg, redis = base.get("VIDSTYLE_PG_PORT", local.PG_PORT), base.get("VIDSTYLE_REDIS_PORT", local.REDIS_PORT)
    conn = f"postgresql+psycopg2://airflow:{local.LOCAL_PG_PASSWORD}@127.0.0.1:{pg}/{db}"
    secret_file = folder() / "jwt-secret"
    if not secret_file.is_file():
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        secret_file.write_text(secrets.token_urlsafe(48))
    base |= {
        "AIRFLOW_HOME": str(folder() / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis}/0",
        # The driver named: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, which is not installed.
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{conn}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": base.get("VIDSTYLE_WORKER_CONCURRENCY", "2"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__PORT": api_port, "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # a local cluster on loopback
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "vidstyle.airflow.hostname.hostname",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text().strip(),
        "AIRFLOW__VIDSTYLE__CONTAINER": base.get("VIDSTYLE_CLUSTER_CONTAINER", "cluster"),
        "VIDSTYLE_CLUSTER_API_PORT": api_port, "VIDSTYLE_CLUSTER_DB": db,
    }
    # A worker that vanishes (its machine lost) is noticed within this, and its tasks retried; a
    # restarted scheduler takes over the tasks its predecessor had queued this often (default 300 s).
    base.setdefault("AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT", base.get("VIDSTYLE_HEARTBEAT_TIMEOUT", "45"))
    base.setdefault("AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL", base.get("VIDSTYLE_ORPHAN_CHECK", "30"))
    base.setdefault("AIRFLOW__CORE__PARALLELISM", "16")
    base.setdefault("AIRFLOW__VIDSTYLE__SCORING_POOL_SLOTS", "2")  # two workers: two chunks at once
    return local.environment(base=base)


def pidfile(name: str) -> Path:
    return folder() / "run" / f"{name}.pid"


def pid_of(name: str) -> int | None:
    """The process group of a running member of the cluster, or None."""
    path = pidfile(name)
    if not path.is_file():
        return None
    pid = int(path.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def command_for(name: str, api_port: str) -> list[str]:
    if name == "api-server":
        return ["airflow", "api-server", "--port", api_port]
    if name in CORE:
        return ["airflow", name]
    if name.startswith("triggerer") and name[len("triggerer"):].isdigit():  # another triggerer, beside the first
        return ["airflow", "triggerer"]
    if name.startswith("worker"):
        return ["airflow", "celery", "worker", "--celery-hostname", f"{name}@%h"]
    raise SystemExit(f"unknown process {name!r}: {', '.join(CORE)}, triggererN or workerN")


def say(what: str) -> None:
    print(f"[cluster] {what}", flush=True)


def start_one(name: str, env: dict[str, str]) -> None:
    """A process in a session of its own: ``kill`` then takes it with all it started."""
    if pid := pid_of(name):
        say(f"{name} already running (pid {pid})")
        return
    cmd = command_for(name, env["VIDSTYLE_CLUSTER_API_PORT"])
    own = dict(env)
    if name.startswith("worker"):  # its own "machine": hostname and scratch disk
        scratch = folder() / name / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        own |= {"VIDSTYLE_HOSTNAME": name, "TMPDIR": str(scratch)}
    logs = folder() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=own, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pidfile(name).write_text(str(proc.pid))
    say(f"started {name} (pid {proc.pid}, log .cache/cluster/logs/{name}.log)")


def kill(name: str) -> None:
    if not (pid := pid_of(name)):
        say(f"{name} is not running")
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    pidfile(name).unlink(missing_ok=True)
    say(f"killed {name} and everything it started (SIGKILL)")


def signal_group(name: str, sig: signal.Signals) -> None:
    """A signal to a member and everything it started: SIGSTOP freezes it as a paused VM or a
    stalled machine would be (it misses its heartbeats), SIGCONT lets it go on where it was."""
    if not (pid := pid_of(name)):
        raise SystemExit(f"[cluster] {name} is not running")
    os.killpg(pid, sig)
    say(f"{'paused' if sig == signal.SIGSTOP else 'resumed'} {name} and everything it started ({sig.name})")


def stop(name: str) -> None:
    if not (pid := pid_of(name)):
        pidfile(name).unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    stack.wait_until(lambda: pid_of(name) is None, 10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    pidfile(name).unlink(missing_ok=True)
    say(f"stopped {name}")


def members() -> list[str]:
    return sorted(p.stem for p in (folder() / "run").glob("*.pid"))


def wait_for_api(port: str, seconds: float = 180) -> None:
    def healthy() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2)
        except OSError:
            return False
        return True

    if not stack.wait_until(healthy, seconds, every=1):
        raise SystemExit("[cluster] the API server did not come up; see .cache/cluster/logs/api-server.log")


def start(workers: int, env: dict[str, str]) -> None:
    stack.install()
    stack.start_postgres()
    stack.start_redis()
    stack.start_azurite()
    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    if not (airflow_home / ".migrated").is_file():
        say(f"creating database {env['VIDSTYLE_CLUSTER_DB']}")
        stack.create_database(env["VIDSTYLE_CLUSTER_DB"])
        done = subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, text=True, check=False)
        (folder() / "logs").mkdir(parents=True, exist_ok=True)
        (folder() / "logs" / "migrate.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"[cluster] db migrate failed:\n{(done.stdout + done.stderr)[-3000:]}")
        (airflow_home / ".migrated").touch()
    for command in ("pool", "queue"):
        subprocess.run([sys.executable, "-m", "vidstyle.cli.main", command], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    for name in [*CORE, *(f"worker{n}" for n in range(1, workers + 1))]:
        start_one(name, env)
    wait_for_api(env["VIDSTYLE_CLUSTER_API_PORT"])
    say(f"up: UI and API at http://127.0.0.1:{env['VIDSTYLE_CLUSTER_API_PORT']}")


def drop(env: dict[str, str]) -> None:
    """The cluster's database and container gone (a test cluster's)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from vidstyle.hooks.queue_store import poison_queue

    for name in members():
        stop(name)
    stack.drop_database(env["VIDSTYLE_CLUSTER_DB"])
    with contextlib.suppress(ResourceNotFoundError):
        BlobServiceClient.from_connection_string("UseDevelopmentStorage=true").delete_container(
            env["AIRFLOW__VIDSTYLE__CONTAINER"])
    queues = QueueServiceClient.from_connection_string("UseDevelopmentStorage=true")
    arrivals = env.get("AIRFLOW__VIDSTYLE__ARRIVALS_QUEUE") or f"{env['AIRFLOW__VIDSTYLE__CONTAINER']}-arrivals"
    for queue in (arrivals, poison_queue(arrivals)):
        with contextlib.suppress(ResourceNotFoundError):
            queues.delete_queue(queue)
    (Path(env["AIRFLOW_HOME"]) / ".migrated").unlink(missing_ok=True)


ONE_MEMBER = {  # the actions on one member, by name
    "kill": lambda name, env: kill(name),
    "run": start_one,
    "pause": lambda name, env: signal_group(name, signal.SIGSTOP),
    "resume": lambda name, env: signal_group(name, signal.SIGCONT),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("start", "stop", "status", "kill", "pause", "resume", "run", "airflow",
                                      "env", "reset", "drop"))
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="start: WORKERS; stop, kill, pause, resume, run: NAME; airflow: its ARGS")


def run(a: argparse.Namespace) -> int:
    env = environment()
    if a.action == "env":
        sys.stdout.write("".join(f"{k}={v}\0" for k, v in env.items()))
        return 0
    if a.action == "airflow":
        os.execvpe("airflow", ["airflow", *a.args], env)
    if a.action == "start":
        start(int(a.args[0]) if a.args else 2, env)
    elif a.action == "stop":
        for name in a.args or members():
            stop(name)
    elif a.action == "status":
        for name in members():
            print(f"{name} running (pid {pid})" if (pid := pid_of(name)) else f"{name} dead")
    elif a.action in ONE_MEMBER:
        if not a.args:
            raise SystemExit(f"vidstyle cluster {a.action} NAME")
        ONE_MEMBER[a.action](a.args[0], env)
    elif a.action == "reset":  # a fresh database for the next start
        for name in members():
            stop(name)
        (Path(env["AIRFLOW_HOME"]) / ".migrated").unlink(missing_ok=True)
    else:
        drop(env)
    return 0
