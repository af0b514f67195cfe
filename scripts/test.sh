#!/usr/bin/env bash
# The test suite: real Azurite, ffmpeg, torch and Airflow runs, PostgreSQL and Redis for the
# cluster tests. Installs what is missing, then checks style (ruff) and the floors' import
# contract (import-linter), and runs pytest. Extra arguments go to pytest (-k watcher, -m "not cluster").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/bootstrap.sh
./scripts/install-helm.sh  # the rendered Helm chart's tests (tests/deploy/test_helm_values.py)
# Debian's packages the tests drive: docker-compose validates docker-compose.yaml offline
# (tests/deploy/test_compose.py); chromium and its chromedriver run the Videos page (tests/videos).
missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[test] installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
  apt_get() { $sudo apt-get -o DPkg::Lock::Timeout=600 "$@"; }  # waits for another apt's lock
  apt_get update -qq && apt_get install -y -qq "${missing[@]}" >/dev/null
fi
rm -rf .cache/airflow-test  # the tests' Airflow gets a fresh database every run
.venv/bin/vidstyle azurite start
.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
