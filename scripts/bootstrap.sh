#!/usr/bin/env bash
# Installs everything the demo and the tests need; cheap to re-run (each step checks first).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

say() { printf '[bootstrap] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  say "installing ffmpeg (Debian package)"
  as_root apt-get update -qq && as_root apt-get install -y -qq ffmpeg >/dev/null
fi

AZURITE_VERSION=3.37.0
if [ ! -x .tools/node_modules/.bin/azurite-blob ] || \
   ! grep -q "\"version\": \"$AZURITE_VERSION\"" .tools/node_modules/azurite/package.json 2>/dev/null; then
  command -v npm >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm >/dev/null; }
  say "installing Azurite $AZURITE_VERSION (npm)"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi

stamp=$(cat requirements.txt scoring/requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.stamp 2>/dev/null)" != "$stamp" ]; then
  say "creating the Python environment in .venv (torch is large: a few minutes the first time)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  mkdir -p .cache
  if ! { .venv/bin/pip install --upgrade pip && .venv/bin/pip install -r requirements-dev.txt; } >.cache/pip.log 2>&1; then
    tail -30 .cache/pip.log >&2
    say "pip failed; full log in .cache/pip.log"
    exit 1
  fi
  echo "$stamp" > .venv/.stamp
fi

[ -n "${VIDSTYLE_SKIP_DB:-}" ] && { say "ready (database left to the caller)"; exit 0; }
mkdir -p "$AIRFLOW_HOME"
case "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in
  postgresql*) "$(dirname "${BASH_SOURCE[0]}")/services.sh" start postgres ;;
esac
migrated="$AIRFLOW_HOME/.migrated-$(printf '%s %s' "$stamp" "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" | sha256sum | cut -c1-16)"
if [ ! -f "$migrated" ]; then
  say "initialising the Airflow database ($AIRFLOW_HOME)"
  airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/migrate.log"; exit 1; }
  touch "$migrated"
fi
# The pool bounds how many chunks score at once on this machine: a flood of uploads queues.
# Counting deferred tasks too: a chunk waiting on a remote (Azure ML) job holds its slot.
airflow pools set scoring "${VIDSTYLE_SCORING_SLOTS:-1}" "Concurrent chunk scoring tasks" --include-deferred >/dev/null 2>&1
say "ready"
