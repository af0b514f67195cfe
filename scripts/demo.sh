#!/usr/bin/env bash
# The whole pipeline on the embedded default, set-up included: installs what is missing, makes a
# sample video with audio, runs the video_stylize DAG on it (local Airflow, Azurite, local CPU
# scoring) and prints the stylized video's path on the last line. Options go to `vidstyle demo`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/bootstrap.sh" >&2
exec "$here/../.venv/bin/vidstyle" demo "$@"
