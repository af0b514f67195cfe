#!/usr/bin/env bash
# Sets up a fresh machine, up to where the project's own command takes over: Debian's ffmpeg,
# Node.js and Azurite (npm), uv, and the Python environment in .venv, installed from uv.lock
# with every extra (the project itself editable, so a checkout's edits take effect at once).
# Cheap to re-run: each step checks first. Everything after it is `.venv/bin/vidstyle ...`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[bootstrap] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Waits for another apt (a second set-up, an unattended upgrade) rather than failing on its lock.
apt_get() { as_root apt-get -o DPkg::Lock::Timeout=600 "$@"; }

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  say "Python 3.11 or newer is needed (python3 is $(python3 --version 2>&1))"; exit 1; }

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  say "installing ffmpeg (Debian package)"
  apt_get update -qq && apt_get install -y -qq ffmpeg >/dev/null
fi

AZURITE_VERSION=3.37.0
if [ ! -x .tools/node_modules/.bin/azurite-blob ] || \
   ! grep -q "\"version\": \"$AZURITE_VERSION\"" .tools/node_modules/azurite/package.json 2>/dev/null; then
  command -v npm >/dev/null || { apt_get update -qq && apt_get install -y -qq nodejs npm >/dev/null; }
  say "installing Azurite $AZURITE_VERSION (npm)"
  mkdir -p .tools
  npm install --prefix .tools --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi

UV_VERSION=0.13.9
uv=.tools/uv/bin/uv
if ! "$uv" --version 2>/dev/null | grep -q " $UV_VERSION"; then
  say "installing uv $UV_VERSION"
  python3 -m venv .tools/uv
  .tools/uv/bin/pip install -q "uv==$UV_VERSION"
fi

# The one install command, from the one lock (the images run the same, with their extras).
# Bytecode compiled at install, as in the images: a chunk's process imports torch, dynamo and
# inductor, ~15 s from source each time where Python may not write its caches
# (PYTHONDONTWRITEBYTECODE, a read-only install), ~3 s from bytecode.
mkdir -p .cache
if ! UV_PYTHON_DOWNLOADS=never "$uv" sync --locked --compile-bytecode --extra dev --python python3 >.cache/uv-sync.log 2>&1; then
  tail -30 .cache/uv-sync.log >&2
  say "uv sync failed; full log in .cache/uv-sync.log"
  exit 1
fi
say "ready: .venv/bin/vidstyle --help"
