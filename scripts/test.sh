#!/usr/bin/env bash
# The test suite: real Azurite, real ffmpeg, real torch, real Airflow runs of the DAGs.
# Extra arguments go to pytest (e.g. -k watcher, -m "not slow").
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# Tests get a throw-away Airflow home and database: their runs never show up in the demo or UI.
export AIRFLOW_HOME="$(cd "$here/.." && pwd)/.cache/airflow-test"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
rm -rf "$AIRFLOW_HOME"
"$here/bootstrap.sh"
"$here/azurite.sh" start
source "$here/env.sh"
cd "$ROOT"
ruff check .
exec python -m pytest "$@"
