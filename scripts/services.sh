#!/usr/bin/env bash
# PostgreSQL (Airflow's database) and Redis (the Celery broker) for the local Airflow, from
# Debian's packages, listening on loopback only, their data under .cache/.
#   ./scripts/services.sh start [postgres|redis]   (both by default; already running: nothing to do)
#   ./scripts/services.sh stop  [postgres|redis]
#   ./scripts/services.sh createdb NAME            (a database of its own, e.g. for a test cluster)
#   ./scripts/services.sh dropdb NAME
# PostgreSQL refuses to run as root: as root, it runs as Debian's "postgres" user.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

say() { printf '[services] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

install() {
  local missing=()
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]} (Debian packages)"
  as_root apt-get update -qq
  # The packages' own services stay off: ours run with data under .cache, on other ports.
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The data folder must be reachable by the user PostgreSQL runs as (a checkout under /root is not).
pg_data() {
  local data="$ROOT/.cache/postgres"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$ROOT/.cache" 2>/dev/null; then
    data="/var/tmp/vidstyle-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
  fi
  echo "$data"
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_up() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$VIDSTYLE_PG_PORT" 2>/dev/null; }
psql_() { PGPASSWORD=airflow "$(pg_bin)/psql" -h 127.0.0.1 -p "$VIDSTYLE_PG_PORT" -U airflow -v ON_ERROR_STOP=1 -qtA "$@"; }

start_postgres() {
  if pg_up; then say "PostgreSQL already listening on 127.0.0.1:$VIDSTYLE_PG_PORT"; return; fi
  local data; data=$(pg_data)
  mkdir -p "$ROOT/.cache" "$data"
  [ "$(id -u)" = 0 ] && chown postgres: "$data" && chmod 700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "creating the database cluster in $data"
    local pw; pw=$(mktemp); echo airflow >"$pw"; chmod 644 "$pw"
    as_pg "$(pg_bin)/initdb" -D "$data" -U airflow --pwfile="$pw" --auth-host=scram-sha-256 --auth-local=peer \
      -E UTF8 >/dev/null
    rm -f "$pw"
  fi
  as_pg "$(pg_bin)/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-p $VIDSTYLE_PG_PORT -c listen_addresses=127.0.0.1 -k $data -c max_connections=200" start >/dev/null
  for db in airflow; do
    [ "$(psql_ -d postgres -c "select 1 from pg_database where datname='$db'")" = 1 ] || psql_ -d postgres -c "create database $db"
  done
  say "PostgreSQL listening on 127.0.0.1:$VIDSTYLE_PG_PORT (data in $data)"
}

stop_postgres() {
  local data; data=$(pg_data)
  [ -f "$data/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null && say "PostgreSQL stopped" || true
}

start_redis() {
  if redis-cli -p "$VIDSTYLE_REDIS_PORT" ping >/dev/null 2>&1; then say "Redis already listening on 127.0.0.1:$VIDSTYLE_REDIS_PORT"; return; fi
  local data="$ROOT/.cache/redis"
  mkdir -p "$data"
  redis-server --port "$VIDSTYLE_REDIS_PORT" --bind 127.0.0.1 --protected-mode yes --dir "$data" --daemonize yes \
    --pidfile "$data/redis.pid" --logfile "$data/redis.log" --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -p "$VIDSTYLE_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.2; done
  say "Redis listening on 127.0.0.1:$VIDSTYLE_REDIS_PORT (data in $data)"
}

stop_redis() {
  redis-cli -p "$VIDSTYLE_REDIS_PORT" shutdown nosave >/dev/null 2>&1 && say "Redis stopped" || true
}

what=${2:-all}
case "${1:-start}" in
  start)
    install
    case $what in postgres) start_postgres ;; redis) start_redis ;; *) start_postgres; start_redis ;; esac ;;
  stop)
    case $what in postgres) stop_postgres ;; redis) stop_redis ;; *) stop_postgres; stop_redis ;; esac ;;
  createdb)
    [ -n "${2:-}" ] || { echo "usage: $0 createdb NAME" >&2; exit 2; }
    psql_ -d postgres -c "drop database if exists $2 with (force)" -c "create database $2" ;;
  dropdb)
    [ -n "${2:-}" ] || { echo "usage: $0 dropdb NAME" >&2; exit 2; }
    pg_up && psql_ -d postgres -c "drop database if exists $2 with (force)" || true ;;
  *) echo "usage: $0 start|stop [postgres|redis] | createdb NAME | dropdb NAME" >&2; exit 2 ;;
esac
