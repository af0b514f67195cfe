"""Podman on this machine: Debian's packages, configured in a folder of their own, and the pieces a
Docker engine has that podman without systemd lacks (the Docker-compatible API on a socket, a loop
that runs containers' health checks).

Everything podman keeps (images, containers, volumes, networks, configuration) lives under
``VIDSTYLE_PODMAN_HOME`` (default /var/lib/vidstyle-containers), never in /etc/containers, so the
machine's own podman setup, if any, is left alone. Pure functions first (tested offline), then
those that run things."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# Debian bookworm's podman 4.3.1 / buildah 1.28 and what they need here. No recommends: those
# would pull in docker.io, which nothing here uses.
PACKAGES = ["podman", "buildah", "runc", "docker-compose", "debootstrap", "fuse-overlayfs", "slirp4netns", "uidmap",
            "netavark", "aardvark-dns", "containernetworking-plugins", "iptables", "catatonit", "ca-certificates"]
# The process here may not raise its limits to podman's defaults (1048576 open files).
ULIMITS = ["nofile=20000:20000", "nproc=32768:32768"]


def home() -> Path:
    return Path(os.environ.get("VIDSTYLE_PODMAN_HOME", "/var/lib/vidstyle-containers"))


def runroot() -> Path:
    return Path(os.environ.get("VIDSTYLE_PODMAN_RUN", "/run/vidstyle-containers"))


def containers_conf(state: Path, run: Path) -> str:
    """runc, not crun (crun refuses this machine's hybrid cgroup v1/v2 layout); cgroupfs and file
    events, there being no systemd; lowered default ulimits."""
    return (
        "[containers]\n"
        'log_driver = "k8s-file"\n'
        f"default_ulimits = {json.dumps(ULIMITS)}\n"
        "\n[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{run}/events.log"\n'
        f'tmp_dir = "{run}/libpod"\n'
        f'static_dir = "{state}/libpod"\n'
        f'volume_path = "{state}/volumes"\n'
        "\n[network]\n"
        'network_backend = "netavark"\n'
        f'network_config_dir = "{state}/networks"\n'
    )


def storage_conf(state: Path, run: Path) -> str:
    return (
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{state}/storage"\n'
        f'runroot = "{run}/storage"\n'
    )


def registries_conf() -> str:
    """Short names resolve as Docker resolves them (docker.io/library/...), where the stand-in
    bases are tagged; nothing is pulled (builds run with --pull=never)."""
    return 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n'


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env |= {"CONTAINERS_CONF": str(home() / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(home() / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(home() / "registries.conf")}
    return env


def say(message: str) -> None:
    print(f"[containers] {message}", flush=True)


def run(cmd: list[str], check: bool = True, capture: bool = False, timeout: float | None = None,
        env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=capture, timeout=timeout,
                          env=env or environment(), **kw)


def logs() -> Path:
    folder = home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def logged(cmd: list[str], name: str, **kw) -> None:
    """Run ``cmd`` with its output in logs/NAME.log (builds say a lot); on failure, show its end."""
    path = logs() / f"{name}.log"
    with open(path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=environment(), check=False, **kw)
    if done.returncode != 0:
        tail = path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed (exit {done.returncode}); the end of {path}:\n{tail}")


def podman(*args: str, check: bool = True, capture: bool = True, timeout: float | None = None,
           ) -> subprocess.CompletedProcess:
    return run(["podman", *args], check=check, capture=capture, timeout=timeout)


# -- installing and configuring ---------------------------------------------------------------------

def install() -> None:
    missing = [p for p in PACKAGES if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                      text=True, check=False).stdout != "install ok installed"]
    if missing:
        say(f"installing {' '.join(missing)} (Debian packages)")
        apt = {"DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=os.environ | apt)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=os.environ | apt)
    configure()


def configure() -> None:
    state, rundir = home(), runroot()
    for folder in (state / "networks", state / "volumes", state / "libpod", rundir):
        folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("containers.conf", containers_conf(state, rundir)),
                       ("storage.conf", storage_conf(state, rundir)), ("registries.conf", registries_conf())):
        path = state / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    version = podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    say(f"podman {version}: runc, cgroupfs, overlay storage in {state}")


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def image_size(name: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())


# -- the Docker-compatible API, for docker-compose ---------------------------------------------------

class ApiService:
    """``podman system service`` on a socket of its own: Debian's docker-compose 1.29 talks to it
    as to a Docker engine (DOCKER_HOST)."""

    def __init__(self) -> None:
        self.socket = runroot() / "podman.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        if self.answers():
            return
        self.socket.unlink(missing_ok=True)
        log = open(home() / "api-service.log", "ab")
        self.proc = subprocess.Popen(["podman", "system", "service", "--time=0", self.docker_host],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=environment(), start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"podman system service did not start: see {home() / 'api-service.log'}")
            time.sleep(0.2)
        say(f"Docker-compatible API at {self.docker_host}")

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b"OK" in s.recv(256)
            except OSError:
                return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


# -- health checks without systemd ------------------------------------------------------------------

@dataclass
class Check:
    """When a container's next health check is due, at Docker's pace: every ``interval``; within
    the ``start_period`` after the container's start (where failures do not count) and before it
    is healthy, at most every ``starting_every`` seconds, so a service is seen healthy soon."""

    interval: float
    start_period: float = 0.0
    started: float = 0.0  # POSIX time the container started
    starting_every: float = 5.0
    due: float = field(default=0.0)

    def next_after(self, now: float, status: str) -> float:
        starting = status != "healthy" and now < self.started + self.start_period
        self.due = now + (min(self.interval, self.starting_every) if starting else self.interval)
        return self.due


def parse_interval(value: int | str | None) -> float:
    """podman inspect gives the interval in nanoseconds or as a Go duration string."""
    if value in (None, "", 0):
        return 30.0
    if isinstance(value, int):
        return value / 1e9
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    i = 0
    while i < len(value):
        if value[i].isdigit() or value[i] == ".":
            number += value[i]
            i += 1
            continue
        unit = next(u for u in sorted(units, key=len, reverse=True) if value.startswith(u, i))
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    return total


class HealthLoop:
    """Runs ``podman healthcheck run`` for every running container that has a health check, each on
    its own schedule, in a background thread; podman records the result where the compatible API
    (and so docker-compose's ``condition: service_healthy``) reads it."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.checks: dict[str, Check] = {}
        self.without: set[str] = set()  # containers with no health check
        self.status: dict[str, str] = {}  # each one's last result, as the loop saw it
        self.running: dict[str, threading.Thread] = {}
        # Cleared while compose stops containers on purpose (down): those stay stopped.
        self.restarts = threading.Event()
        self.restarts.set()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="health-loop")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def _learn(self, ids: list[str]) -> None:
        """Inspect each container once: a check waiting on a busy container (a slow ``airflow
        jobs check``) must not hold up the others' schedules."""
        new = [i for i in ids if i not in self.checks and i not in self.without]
        for c in json.loads(podman("inspect", *new, check=False, timeout=120).stdout or "[]") if new else []:
            hc = (c.get("Config") or {}).get("Healthcheck") or {}
            if hc.get("Test") and hc["Test"] != ["NONE"]:
                self.checks[c["Id"]] = Check(parse_interval(hc.get("Interval")),
                                             parse_interval(hc.get("StartPeriod") or 0),
                                             started_at(c["State"].get("StartedAt", "")))
            else:
                self.without.add(c["Id"])

    def _check(self, cid: str) -> None:
        done = podman("healthcheck", "run", cid, check=False, timeout=600)
        self.status[cid] = "healthy" if done.returncode == 0 else "unhealthy"

    def _loop(self) -> None:
        while not self.stop_event.wait(2.0):
            try:
                ids = podman("ps", "--no-trunc", "--format", "{{.ID}}", check=False, timeout=120).stdout.split()
                self._learn(ids)
            except (subprocess.SubprocessError, json.JSONDecodeError, OSError):
                continue
            now = time.time()
            for cid in ids:
                check = self.checks.get(cid)
                busy = cid in self.running and self.running[cid].is_alive()
                if check and now >= check.due and not busy:
                    check.next_after(now, self.status.get(cid, "starting"))
                    t = threading.Thread(target=self._check, args=(cid,), daemon=True)
                    self.running[cid] = t
                    t.start()
            for cid in set(self.checks) - set(ids):
                self.checks.pop(cid)
            with contextlib.suppress(subprocess.SubprocessError, json.JSONDecodeError, OSError):
                self._restart_exited()

    def _restart_exited(self) -> None:
        """What Docker's restart policy does and podman 4.3.1 did not do here: start again a
        container that exited under ``restart: always`` (or ``on-failure`` with an error)."""
        if not self.restarts.is_set():
            return
        ids = podman("ps", "-a", "--no-trunc", "--filter", "status=exited", "--filter", "status=stopped",
                     "--format", "{{.ID}}", check=False, timeout=120).stdout.split()
        for c in json.loads(podman("inspect", *ids, check=False, timeout=120).stdout or "[]") if ids else []:
            if self.restarts.is_set() and should_restart(c):
                name, code = c.get("Name", c["Id"][:12]), c["State"].get("ExitCode")
                say(f"restarting {name} (its restart policy; it exited with {code})")
                podman("start", c["Id"], check=False, timeout=300)


def should_restart(container: dict) -> bool:
    """Docker's restart policies, for an inspected container that has exited."""
    policy = ((container.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name", "")
    exit_code = (container.get("State") or {}).get("ExitCode", 0)
    return policy in ("always", "unless-stopped") or (policy == "on-failure" and exit_code != 0)


def started_at(value: str) -> float:
    """podman's StartedAt (RFC 3339 with nanoseconds) as a POSIX time; 0 when unknown."""
    m = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?\s*(Z|[+-]\d\d:?\d\d)?", value or "")
    if not m:
        return 0.0
    zone = "+0000" if m[4] in (None, "Z") else m[4].replace(":", "")
    base = datetime.fromisoformat(f"{m[1]}T{m[2]}{zone[:3]}:{zone[3:]}")
    return base.timestamp() + (float("0." + m[3]) if m[3] else 0.0)


def need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("this command runs podman as root (rootful networking and storage): run it as root")


def which(program: str) -> str:
    found = shutil.which(program)
    if not found:
        raise SystemExit(f"{program} is not installed")
    return found
