#!/usr/bin/env bash
# Build and run the deployment on this machine with podman (Debian's packages): the stand-in base
# images, both images from their Dockerfiles, their smoke checks, and docker-compose.yaml with a
# video through it. Heavy (several GB of wheels, an hour on 2 CPUs): not part of CI.
#   ./scripts/containers.sh                 every step (setup bases build smoke compose)
#   ./scripts/containers.sh build smoke     some of them; ./scripts/containers.sh down [--volumes]
# docs/containers.md says what it does, how the stand-ins differ from the real images, and what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/bootstrap.sh
exec .venv/bin/python -m deploy.podman "$@"
