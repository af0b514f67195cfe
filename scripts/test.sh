#!/usr/bin/env bash
# The test suite: real Azurite, real ffmpeg, real torch, real Airflow runs of the DAGs.
# Extra arguments go to pytest (e.g. -k watcher, -m "not slow").
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
"$here/bootstrap.sh"
"$here/azurite.sh" start
source "$here/env.sh"
cd "$ROOT"
ruff check .
exec python -m pytest "$@"
