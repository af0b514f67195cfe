"""Build and run the deployment on this machine with podman: ``scripts/containers.sh [STEP...]``
(``python -m deploy.podman`` from the checkout).

Steps, in order (default: all of them):
  setup    install podman and its parts from Debian's packages; configure them (engine.py)
  bases    make the stand-in base images once: debootstrap, python, postgres, redis, azurite (bases.py)
  build    build images/airflow and images/scoring from their Dockerfiles (images.py)
  smoke    each image's smoke checks; the scoring image run as an Azure ML job runs it (images.py)
  compose  docker-compose.yaml with Debian's docker-compose against podman, and real work through
           it: an upload, a worker killed mid-chunk, down and up again, the UI (stack.py)
  down     stop the compose stack (its volumes are kept; --volumes removes them)

It prints what it measured, and writes it as JSON to $VIDSTYLE_PODMAN_HOME/figures.json.
Runs as root (podman's rootful networking and storage).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from deploy.podman import bases, engine, images

STEPS = ("setup", "bases", "build", "smoke", "compose")


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps", nargs="*", choices=[*STEPS, "down"], default=list(STEPS))
    parser.add_argument("--volumes", action="store_true", help="with down: remove the stack's volumes too")
    parser.add_argument("--keep-up", action="store_true", help="leave the compose stack running at the end")
    a = parser.parse_args(argv)
    engine.need_root()
    # A background job's SIGINT is ignored: SIGTERM stops the command cleanly (the stack goes down).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpu": cpu(),
                     "cpus": len([x for x in Path("/proc/cpuinfo").read_text().splitlines()
                                  if x.startswith("processor")])}
    start = time.monotonic()
    if "setup" in a.steps or any(s in a.steps for s in ("bases", "build", "smoke", "compose", "down")):
        engine.install()
    if "bases" in a.steps:
        figures["bases_s"] = {k: round(v) for k, v in bases.make_all().items()}
    if "build" in a.steps:
        figures["images"] = [images.build(images.AIRFLOW), images.build(images.SCORING)]
    if "smoke" in a.steps:
        work = images.scratch()
        figures["smoke"] = {"airflow": images.smoke_airflow(), "scoring": images.smoke_scoring(work)}
    if "compose" in a.steps or "down" in a.steps:
        from deploy.podman import stack

        if "compose" in a.steps:
            figures["compose"] = stack.exercise(keep_up=a.keep_up)
        else:
            stack.down(volumes=a.volumes)
    figures["total_s"] = round(time.monotonic() - start)
    report(figures)
    return 0


def report(figures: dict) -> None:
    path = engine.home() / "figures.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(old | figures, indent=2) + "\n")
    print(f"\n== figures ({figures['date']}, {figures['cpus']} x {figures['cpu']}, machine shared with other agents)")
    for image in figures.get("images", []):
        print(f"  image {image['image']}: build {image['build_s']:.0f} s, {image['size_mib']} MiB")
    for tag, seconds in figures.get("bases_s", {}).items():
        print(f"  stand-in base {tag}: made in {seconds} s")
    if smoke := figures.get("smoke"):
        print(f"  scoring image, Azure ML style: {smoke['scoring']['chunk_frames']} frames on the CPU in "
              f"{smoke['scoring']['stylize_s']} s, frame-exact")
    if compose := figures.get("compose"):
        for line in compose.get("lines", []):
            print(f"  {line}")
    print(f"  total: {figures['total_s']} s (all figures also in {path})")


if __name__ == "__main__":
    sys.exit(main())
