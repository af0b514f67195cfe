"""The local stack the pipeline runs on here: Azurite (the blob store), PostgreSQL (Airflow's
database) and Redis (the Celery broker), from npm and Debian's packages, on loopback only, their
data under the home's ``.cache``; and the local Airflow's database, migrated and with its pool.

    vidstyle azurite start|stop
    vidstyle services start|stop [postgres|redis]
    vidstyle services createdb|dropdb NAME        (a database of its own, e.g. for a test cluster)

PostgreSQL refuses to run as root: as root, it runs as Debian's ``postgres`` user.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from vidstyle.cli import local

AZURITE_PORTS = {"blob": 10000, "queue": 10001}
PIDFILES = {"blob": "azurite.pid", "queue": "azurite-queue.pid"}  # the blob one as before


def say(what: str, tag: str = "services") -> None:
    print(f"[{tag}] {what}", flush=True)


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server about to start (a benchmark's, a test's)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def as_root(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() == 0 else ["sudo", *cmd]


def wait_until(check, seconds: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


# -- Azurite ---------------------------------------------------------------------------------------

def azurite_data() -> Path:
    return local.home() / ".cache" / "azurite"


def start_azurite() -> None:
    """Azurite's blob service and its queue service (the arrivals queue), each its own process."""
    data = azurite_data()
    data.mkdir(parents=True, exist_ok=True)
    for service, port in AZURITE_PORTS.items():
        if listening(port):
            say(f"{service} service already listening on 127.0.0.1:{port}", "azurite")
            continue
        program = shutil.which(f"azurite-{service}",
                               path=os.pathsep.join([str(local.tools_bin()), os.environ["PATH"]]))
        if not program:
            raise SystemExit(f"[azurite] azurite-{service} is not installed: run ./scripts/bootstrap.sh "
                             "(npm install azurite)")
        with open(data / f"azurite-{service}.log", "ab") as log:
            proc = subprocess.Popen([program, f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port),
                                     "--location", str(data), "--disableTelemetry", "--skipApiVersionCheck",
                                     "--loose"],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        (data / PIDFILES[service]).write_text(str(proc.pid))
        if not wait_until(lambda port=port: listening(port), 30):
            raise SystemExit(f"[azurite] the {service} service did not start; log: "
                             f"{(data / f'azurite-{service}.log').read_text()[-2000:]}")
        say(f"{service} service listening on 127.0.0.1:{port} (data in {data})", "azurite")


def stop_azurite() -> None:
    for service, name in PIDFILES.items():
        pidfile = azurite_data() / name
        if pidfile.is_file():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
                say(f"{service} service stopped", "azurite")
            pidfile.unlink()


# -- PostgreSQL and Redis --------------------------------------------------------------------------

def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(found[-1]) if found else None


# Wait for another apt (an unattended upgrade, a second set-up) instead of failing at once on its lock.
APT_WAIT = ["-o", "DPkg::Lock::Timeout=600"]


def install() -> None:
    missing = [pkg for pkg, present in (("postgresql", pg_bin()), ("redis-server", shutil.which("redis-server")))
               if not present]
    if not missing:
        return
    say(f"installing {' '.join(missing)} (Debian packages)")
    subprocess.run(as_root(["apt-get", *APT_WAIT, "update", "-qq"]), check=True, stdout=subprocess.DEVNULL)
    # The packages' own services stay off: ours run with data under .cache, on other ports.
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    subprocess.run(as_root(["apt-get", *APT_WAIT, "install", "-y", "-qq", "--no-install-recommends", *missing]),
                   check=True, env=env, stdout=subprocess.DEVNULL)


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def pg_data() -> Path:
    """The data folder; one the ``postgres`` user can reach when running as root (a checkout under
    /root is not)."""
    data = local.home() / ".cache" / "postgres"
    if os.geteuid() == 0:
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(data.parent)],
                               capture_output=True, check=False)
        if probe.returncode != 0:
            data = Path("/var/tmp") / f"vidstyle-postgres-{hashlib.sha256(str(local.home()).encode()).hexdigest()[:12]}"
    return data


def pg_port() -> str:
    return os.environ.get("VIDSTYLE_PG_PORT", local.PG_PORT)


def pg_up() -> bool:
    binary = pg_bin()
    return bool(binary) and subprocess.run([str(binary / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", pg_port()],
                                           capture_output=True, check=False).returncode == 0


def psql(database: str, *sql: str) -> str:
    args = [str(pg_bin() / "psql"), "-h", "127.0.0.1", "-p", pg_port(), "-U", "airflow", "-v", "ON_ERROR_STOP=1",
            "-qtA", "-d", database]
    for statement in sql:
        args += ["-c", statement]
    password = {"PGPASSWORD": local.LOCAL_PG_PASSWORD}
    done = subprocess.run(args, capture_output=True, text=True, env=os.environ | password, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"psql: {done.stderr.strip()}")
    return done.stdout.strip()


def start_postgres() -> None:
    if pg_up():
        say(f"PostgreSQL already listening on 127.0.0.1:{pg_port()}")
        return
    binary, data = pg_bin(), pg_data()
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        data.chmod(0o700)
    if not (data / "PG_VERSION").is_file():
        say(f"creating the database cluster in {data}")
        with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as pw:
            pw.write(local.LOCAL_PG_PASSWORD + "\n")
        os.chmod(pw.name, 0o644)
        try:
            initdb = [str(binary / "initdb"), "-D", str(data), "-U", "airflow", f"--pwfile={pw.name}",
                      "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8"]
            subprocess.run(_as_postgres(initdb), check=True, stdout=subprocess.DEVNULL)
        finally:
            os.unlink(pw.name)
    options = f"-p {pg_port()} -c listen_addresses=127.0.0.1 -k {data} -c max_connections=200"
    subprocess.run(_as_postgres([str(binary / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w",
                                 "-t", "60", "-o", options, "start"]), check=True, stdout=subprocess.DEVNULL)
    if psql("postgres", "select 1 from pg_database where datname='airflow'") != "1":
        psql("postgres", "create database airflow")
    say(f"PostgreSQL listening on 127.0.0.1:{pg_port()} (data in {data})")


def stop_postgres() -> None:
    data = pg_data()
    if (data / "postmaster.pid").is_file() and pg_bin():
        subprocess.run(_as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       stdout=subprocess.DEVNULL, check=False)
        say("PostgreSQL stopped")


def redis_port() -> str:
    return os.environ.get("VIDSTYLE_REDIS_PORT", local.REDIS_PORT)


def redis_up() -> bool:
    return bool(shutil.which("redis-cli")) and subprocess.run(
        ["redis-cli", "-p", redis_port(), "ping"], capture_output=True, check=False).returncode == 0


def start_redis() -> None:
    if redis_up():
        say(f"Redis already listening on 127.0.0.1:{redis_port()}")
        return
    data = local.home() / ".cache" / "redis"
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(["redis-server", "--port", redis_port(), "--bind", "127.0.0.1", "--protected-mode", "yes",
                    "--dir", str(data), "--daemonize", "yes", "--pidfile", str(data / "redis.pid"),
                    "--logfile", str(data / "redis.log"), "--save", "", "--appendonly", "no"], check=True)
    wait_until(redis_up, 10)
    say(f"Redis listening on 127.0.0.1:{redis_port()} (data in {data})")


def stop_redis() -> None:
    if redis_up():
        subprocess.run(["redis-cli", "-p", redis_port(), "shutdown", "nosave"], capture_output=True, check=False)
        say("Redis stopped")


def create_database(name: str) -> None:
    """A fresh, empty database (one that existed is dropped first)."""
    psql("postgres", f'drop database if exists "{name}" with (force)', f'create database "{name}"')


def drop_database(name: str) -> None:
    if pg_up():
        psql("postgres", f'drop database if exists "{name}" with (force)')


# -- the local Airflow -----------------------------------------------------------------------------

def start_local(env: dict[str, str]) -> None:
    """What a local run needs up: Azurite, PostgreSQL when the database is there, the Airflow
    database migrated (once per Airflow version and database) and the scoring pool. ``env`` is
    this process's environment with the local defaults applied (``local.apply``)."""
    from vidstyle.airflow.pool import ensure_pool
    from vidstyle.pipeline.settings import load_settings

    start_azurite()
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql"):
        install()
        start_postgres()
    migrate(env)
    ensure_pool(load_settings())
    ensure_arrivals_queue()


def ensure_arrivals_queue() -> None:
    """The queue the arrivals watcher reads (and its poison queue), where the settings use one."""
    from vidstyle.pipeline.arrivals import ensure_queue
    from vidstyle.pipeline.settings import load_settings

    for name in ensure_queue(load_settings()):
        say(f"created queue {name}", "arrivals")


def migrate(env: dict[str, str]) -> None:
    from importlib.metadata import version

    airflow_home = Path(env["AIRFLOW_HOME"])
    key = f"{version('apache-airflow')} {env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}"
    stamp = airflow_home / f".migrated-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if stamp.is_file():
        return
    airflow_home.mkdir(parents=True, exist_ok=True)
    say(f"initialising the Airflow database ({airflow_home})", "airflow")
    done = subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, text=True, check=False)
    (airflow_home / "migrate.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"[airflow] db migrate failed:\n{(done.stdout + done.stderr)[-3000:]}")
    stamp.touch()


# -- commands --------------------------------------------------------------------------------------

def add_azurite_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=("start", "stop"), default="start")


def run_azurite(a: argparse.Namespace) -> int:
    start_azurite() if a.action == "start" else stop_azurite()
    return 0


def add_services_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("start", "stop", "createdb", "dropdb"))
    p.add_argument("what", nargs="?", help="postgres or redis (start, stop: both by default); a database's name")


def run_services(a: argparse.Namespace) -> int:
    if a.action in ("createdb", "dropdb"):
        if not a.what:
            raise SystemExit(f"vidstyle services {a.action} NAME")
        create_database(a.what) if a.action == "createdb" else drop_database(a.what)
        return 0
    which = [a.what] if a.what in ("postgres", "redis") else ["postgres", "redis"]
    if a.action == "start":
        install()
    for service in which:
        {("start", "postgres"): start_postgres, ("start", "redis"): start_redis,
         ("stop", "postgres"): stop_postgres, ("stop", "redis"): stop_redis}[(a.action, service)]()
    return 0
