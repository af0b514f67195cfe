"""The base images no registry here can give, made once from Debian's archive and npm and tagged
as the Dockerfiles and docker-compose.yaml name them (each skipped when already present).

- ``debian:bookworm-slim``: ``debootstrap --variant=minbase bookworm``, with this machine's extra
  CA certificates installed (its HTTPS traffic to PyPI and npm is re-signed by them) and pip and
  uv told to use the system's CA bundle, as this machine's own /etc/pip.conf and SSL_CERT_FILE do;
  apt uses plain http://deb.debian.org as the machine does.
- ``python:3.11-slim-bookworm``, ``postgres:16``, ``redis:7.2-bookworm`` and
  ``mcr.microsoft.com/azure-storage/azurite:3.37.0``: built from bases/*.Containerfile on it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.podman import engine

HERE = Path(__file__).resolve().parent / "bases"
DEBIAN = "docker.io/library/debian:bookworm-slim"
MIRROR = "http://deb.debian.org/debian"
AZURITE_VERSION = "3.37.0"
# Pointing every client at the system bundle: apt (http), pip (/etc/pip.conf), uv, requests, node.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_ENV = {"SSL_CERT_FILE": CA_BUNDLE, "REQUESTS_CA_BUNDLE": CA_BUNDLE, "PIP_CERT": CA_BUNDLE,
          "NODE_EXTRA_CA_CERTS": CA_BUNDLE}


@dataclass(frozen=True)
class StandIn:
    tags: tuple[str, ...]  # the first is built, the others tagged
    containerfile: str
    what: str  # how it differs from the real image


STAND_INS = (
    StandIn(("docker.io/library/python:3.11-slim-bookworm",), "python.Containerfile",
            "Debian's python3.11 (3.11.2 + security fixes) at /usr/local/bin, not a source build of the latest 3.11"),
    StandIn(("docker.io/library/postgres:16",), "postgres.Containerfile",
            "PostgreSQL 15 from bookworm (not 16); an entrypoint honouring POSTGRES_USER/PASSWORD/DB only"),
    StandIn(("docker.io/library/redis:7.2-bookworm",), "redis.Containerfile",
            "bookworm's redis-server 7.0 (not 7.2)"),
    StandIn((f"mcr.microsoft.com/azure-storage/azurite:{AZURITE_VERSION}",), "azurite.Containerfile",
            f"Azurite {AZURITE_VERSION} from npm on this machine's Node.js 20 on Debian (the real one: Node 22)"),
)


def make_all() -> dict[str, float]:
    """Every stand-in base, each made only when missing; the seconds each one took."""
    took = {}
    if not engine.image_exists(DEBIAN):
        took[DEBIAN] = timed(make_debian)
    for stand_in in STAND_INS:
        if not engine.image_exists(stand_in.tags[0]):
            took[stand_in.tags[0]] = timed(lambda s=stand_in: build(s))
    for tag in [DEBIAN, *(s.tags[0] for s in STAND_INS)]:
        engine.say(f"base {tag}: {engine.image_size(tag) / 2**20:.0f} MiB" +
                   (f", made in {took[tag]:.0f} s" if tag in took else " (cached)"))
    return took


def timed(step) -> float:
    start = time.monotonic()
    step()
    return time.monotonic() - start


def rootfs() -> Path:
    return engine.home() / "rootfs" / "bookworm-minbase"


def make_debian() -> None:
    """debootstrap once (the tree is kept: a lost image re-imports it), then import it."""
    tree = rootfs()
    if not (tree / "etc" / "debian_version").is_file():
        partial = tree.with_name(tree.name + ".tmp")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        engine.say(f"debootstrap --variant=minbase bookworm from {MIRROR}")
        engine.logged(["debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", str(partial),
                       MIRROR], "debootstrap")
        partial.rename(tree)
    trust_machine_cas(tree)
    engine.say(f"importing {tree} as {DEBIAN}")
    changes = [*(f"ENV {k}={v}" for k, v in CA_ENV.items()), 'CMD ["bash"]']  # one ENV each: import takes one
    tar = subprocess.Popen(["tar", "-C", str(tree), "--numeric-owner", "--exclude=./var/cache/apt/archives/*.deb",
                            "-c", "."], stdout=subprocess.PIPE)
    args = ["podman", "import", *(x for c in changes for x in ("--change", c)), "-", DEBIAN]
    engine.run(args, stdin=tar.stdout, capture=True)
    if tar.wait() != 0:
        raise SystemExit("tar of the debootstrap tree failed")


def trust_machine_cas(tree: Path) -> None:
    """This machine's extra CAs into the tree's trust store; pip configured as the host's is; apt
    told what slim images tell it (no recommends, no caches)."""
    if not (tree / "usr" / "sbin" / "update-ca-certificates").is_file():
        engine.run(["chroot", str(tree), "apt-get", "install", "-y", "-q", "--no-install-recommends",
                    "ca-certificates"])
    target = tree / "usr" / "local" / "share" / "ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    for cert in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        shutil.copyfile(cert, target / cert.name)
    engine.run(["chroot", str(tree), "update-ca-certificates"], capture=True)
    (tree / "etc" / "pip.conf").write_text(f"[global]\ncert = {CA_BUNDLE}\n")
    (tree / "etc" / "apt" / "apt.conf.d" / "90slim").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        'Acquire::Check-Valid-Until "false";\n')
    shutil.rmtree(tree / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (tree / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True, exist_ok=True)


def build(stand_in: StandIn) -> None:
    context = engine.home() / "contexts" / stand_in.containerfile.split(".")[0]
    context.mkdir(parents=True, exist_ok=True)
    for file in HERE.iterdir():
        shutil.copyfile(file, context / file.name)
        shutil.copymode(file, context / file.name)
    if stand_in.containerfile == "azurite.Containerfile":
        azurite_context(context)
    engine.say(f"building stand-in {stand_in.tags[0]} ({stand_in.what})")
    engine.logged(["podman", "build", "--pull=never", "--format", "docker", "-f",
                   str(context / stand_in.containerfile), "-t", stand_in.tags[0], str(context)],
                  "base-" + stand_in.containerfile.split(".")[0])
    for tag in stand_in.tags[1:]:
        engine.podman("tag", stand_in.tags[0], tag)


def azurite_context(context: Path) -> None:
    """Azurite from npm as the native setup installs it (kept: a rebuild installs nothing), and
    this machine's node binary."""
    installed = context / "node_modules" / "azurite" / "package.json"
    if not installed.is_file() or f'"version": "{AZURITE_VERSION}"' not in installed.read_text():
        engine.run(["npm", "install", "--prefix", str(context), "--no-audit", "--no-fund", "--loglevel=error",
                    f"azurite@{AZURITE_VERSION}"], capture=True)
    shutil.copyfile(engine.which("node"), context / "node")
    (context / "node").chmod(0o755)
