#!/usr/bin/env bash
# The test suite: real Azurite, ffmpeg, torch and Airflow runs, PostgreSQL and Redis for the
# cluster tests. Installs what is missing, then checks style (ruff) and the floors' import
# contract (import-linter), and runs pytest. Extra arguments go to pytest (-k watcher, -m "not cluster").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/bootstrap.sh
./scripts/install-helm.sh  # the rendered Helm chart's tests (tests/deploy/test_helm_values.py)
# Debian's docker-compose validates docker-compose.yaml offline (tests/deploy/test_compose.py).
if ! command -v docker-compose >/dev/null; then
  echo "[test] installing docker-compose (Debian package)"
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq && $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker-compose >/dev/null
fi
# Debian's chromium and its chromedriver drive the Videos page's browser test (tests/videos).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "[test] installing chromium and chromium-driver (Debian packages)"
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
rm -rf .cache/airflow-test  # the tests' Airflow gets a fresh database every run
.venv/bin/vidstyle azurite start
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
