#!/usr/bin/env bash
# The whole pipeline on the embedded default: sets everything up, makes a sample video with
# audio, uploads it to Azurite, runs the video_stylize DAG on it with local scoring, and
# prints the path of the stylized video on the last line.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
"$here/bootstrap.sh"
"$here/azurite.sh" start
source "$here/env.sh"
mkdir -p "$ROOT/out"
sample="$ROOT/out/sample.mp4"
[ -f "$sample" ] || python -m vidstyle.sample "$sample" --seconds "${DEMO_SECONDS:-4}" >/dev/null
echo "[demo] sample video: $sample"
exec "$here/stylize-file.sh" "$sample" "$@"
