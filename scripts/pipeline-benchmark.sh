#!/usr/bin/env bash
# The pipeline benchmark (README "Pipeline benchmark"): sets up what it needs, then runs the
# whole video_stylize DAG per generated video. Arguments go to python -m vidstyle.pipeline_benchmark.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
"$here/bootstrap.sh" >&2
"$here/azurite.sh" start >&2
source "$here/env.sh"
cd "$ROOT"
exec python -m vidstyle.pipeline_benchmark "$@"
