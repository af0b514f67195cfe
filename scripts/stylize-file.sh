#!/usr/bin/env bash
# Run the pipeline on any local video: upload to the embedded Azurite, run the same
# video_stylize DAG, download the result into out/ (options: see the usage line below).
# Prints the result path last.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
[ $# -ge 1 ] || { echo "usage: $0 VIDEO [--style NAME|PATH] [--chunk-frames N] [--output-height H] [--crf Q] [--backend local|azureml] [--out DIR]" >&2; exit 2; }
"$here/bootstrap.sh" >&2
"$here/azurite.sh" start >&2
source "$here/env.sh"
log="$ROOT/out/last-run.log"
mkdir -p "$ROOT/out"
echo "[run] running the video_stylize DAG (full Airflow log: $log)" >&2
set +e
python -m vidstyle.localrun "$@" >"$log" 2>&1
rc=$?
set -e
grep -E "uploaded|frames/s|^error" "$log" | sed 's/^/[run] /' >&2 || true
[ $rc -eq 0 ] || { echo "[run] failed; see $log" >&2; exit $rc; }
tail -n 1 "$log"
