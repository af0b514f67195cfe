#!/usr/bin/env bash
# Start (default) or stop the local Azurite blob service on 127.0.0.1:10000.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
data="$ROOT/.cache/azurite"
pidfile="$data/azurite.pid"

up() { python3 - <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", 10000)) == 0 else 1)
PY
}

case "${1:-start}" in
  start)
    if up; then echo "[azurite] already listening on 127.0.0.1:10000"; exit 0; fi
    mkdir -p "$data"
    setsid azurite-blob --blobHost 127.0.0.1 --blobPort 10000 --location "$data" --disableTelemetry \
      --skipApiVersionCheck --loose >"$data/azurite.log" 2>&1 < /dev/null &
    echo $! >"$pidfile"
    for _ in $(seq 1 60); do up && { echo "[azurite] listening on 127.0.0.1:10000 (data in $data)"; exit 0; }; sleep 0.5; done
    echo "[azurite] did not start; log:" >&2; cat "$data/azurite.log" >&2; exit 1 ;;
  stop)
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null && rm -f "$pidfile" && echo "[azurite] stopped" || true ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
