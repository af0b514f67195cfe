#!/usr/bin/env bash
# The pipeline on Airflow's CeleryExecutor, as separate processes on this machine: PostgreSQL and
# Redis (scripts/services.sh), Azurite, and the API server, scheduler, DAG processor, triggerer
# and Celery workers, each worker with a hostname and a scratch folder of its own, as if on
# machines of their own (nothing shares local disk: everything goes through blob storage).
#
#   ./scripts/cluster.sh start [WORKERS]      # 2 workers by default; UI/API on http://127.0.0.1:8090
#   ./scripts/cluster.sh stop [NAME]          # all, or one process (SIGTERM: it shuts down as it would)
#   ./scripts/cluster.sh status
#   ./scripts/cluster.sh kill NAME            # SIGKILL a process and everything it started (a lost machine)
#   ./scripts/cluster.sh run NAME             # (re)start one: scheduler, triggerer, worker1, ...
#   ./scripts/cluster.sh airflow ARGS...      # the airflow CLI against this cluster
#   ./scripts/cluster.sh env                  # its environment, NUL-separated (for tests and tools)
#
# Its Airflow home, database ("airflow_cluster"), container ("cluster") and logs
# (.cache/cluster/logs) are its own: the demo, the UI and the tests are not touched.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export AIRFLOW_HOME="$here/../.cache/cluster/airflow"
source "$here/env.sh"
CLUSTER="$ROOT/.cache/cluster"
API_PORT="${VIDSTYLE_CLUSTER_API_PORT:-8090}"
DB="${VIDSTYLE_CLUSTER_DB:-airflow_cluster}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:airflow@127.0.0.1:$VIDSTYLE_PG_PORT/$DB"
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:$VIDSTYLE_REDIS_PORT/0"
# The driver named: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, which is not installed.
export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://airflow:airflow@127.0.0.1:$VIDSTYLE_PG_PORT/$DB"
export AIRFLOW__CELERY__WORKER_CONCURRENCY="${VIDSTYLE_WORKER_CONCURRENCY:-2}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$API_PORT/execution/"
export AIRFLOW__API__PORT="$API_PORT" AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-16}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True  # a local cluster on loopback
export AIRFLOW__CORE__HOSTNAME_CALLABLE=vidstyle.cluster.hostname
# A worker that vanishes (its machine lost) is noticed within this, and its tasks retried; a
# restarted scheduler takes over the tasks its predecessor had queued this often (default 300 s).
export AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="${VIDSTYLE_HEARTBEAT_TIMEOUT:-45}"
export AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL="${VIDSTYLE_ORPHAN_CHECK:-30}"
export AIRFLOW__VIDSTYLE__CONTAINER="${VIDSTYLE_CLUSTER_CONTAINER:-cluster}"
mkdir -p "$CLUSTER/logs" "$CLUSTER/run" "$AIRFLOW_HOME"
[ -f "$CLUSTER/jwt-secret" ] || python3 -c "import secrets; print(secrets.token_urlsafe(48))" >"$CLUSTER/jwt-secret"
AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$CLUSTER/jwt-secret")"
export AIRFLOW__API_AUTH__JWT_SECRET

say() { printf '[cluster] %s\n' "$*"; }
pidfile() { echo "$CLUSTER/run/$1.pid"; }
alive() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

command_for() {
  case $1 in
    api-server) echo "airflow api-server --port $API_PORT" ;;
    scheduler) echo "airflow scheduler" ;;
    dag-processor) echo "airflow dag-processor" ;;
    triggerer) echo "airflow triggerer" ;;
    worker*) echo "airflow celery worker --celery-hostname $1@%h" ;;
    *) echo "unknown process $1" >&2; return 2 ;;
  esac
}

run() {  # a process in a session of its own: "kill" then takes it with all it started
  local name=$1 cmd; cmd=$(command_for "$name")
  alive "$name" && { say "$name already running (pid $(cat "$(pidfile "$name")"))"; return; }
  local env=()
  if [[ $name == worker* ]]; then  # its own "machine": hostname and scratch disk
    mkdir -p "$CLUSTER/$name/tmp"
    env=(VIDSTYLE_HOSTNAME="$name" TMPDIR="$CLUSTER/$name/tmp")
  fi
  # shellcheck disable=SC2086
  env "${env[@]}" setsid $cmd >>"$CLUSTER/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  say "started $name (pid $!, log .cache/cluster/logs/$name.log)"
}

kill_() {
  local name=$1
  alive "$name" || { say "$name is not running"; return; }
  kill -KILL -- "-$(cat "$(pidfile "$name")")" 2>/dev/null || true
  rm -f "$(pidfile "$name")"
  say "killed $name and everything it started (SIGKILL)"
}

stop_() {
  local name=$1 pid
  alive "$name" || return 0
  pid=$(cat "$(pidfile "$name")")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$(pidfile "$name")"
  say "stopped $name"
}

wait_for_api() {
  for _ in $(seq 1 180); do
    python3 - "$API_PORT" <<'PY' && return 0
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v2/monitor/health", timeout=2)
except Exception:
    sys.exit(1)
PY
    sleep 1
  done
  say "the API server did not come up; see .cache/cluster/logs/api-server.log" >&2
  return 1
}

names() { echo api-server scheduler dag-processor triggerer; for n in $(seq 1 "${1:-2}"); do echo "worker$n"; done; }

case "${1:-start}" in
  env) env -0 ;;
  airflow) shift; exec airflow "$@" ;;
  start)
    VIDSTYLE_SKIP_DB=1 "$here/bootstrap.sh" >"$CLUSTER/logs/bootstrap.log" 2>&1 || {
      tail -20 "$CLUSTER/logs/bootstrap.log" >&2; exit 1; }
    "$here/services.sh" start
    "$here/azurite.sh" start
    if [ ! -f "$AIRFLOW_HOME/.migrated" ]; then
      say "creating database $DB"
      "$here/services.sh" createdb "$DB" >/dev/null
      airflow db migrate >"$CLUSTER/logs/migrate.log" 2>&1 || { tail -20 "$CLUSTER/logs/migrate.log"; exit 1; }
      touch "$AIRFLOW_HOME/.migrated"
    fi
    airflow pools set scoring "${VIDSTYLE_SCORING_SLOTS:-2}" "Concurrent chunk scoring tasks" --include-deferred >/dev/null
    for name in $(names "${2:-2}"); do run "$name"; done
    wait_for_api
    say "up: UI and API at http://127.0.0.1:$API_PORT" ;;
  stop)
    if [ -n "${2:-}" ]; then stop_ "$2"; exit; fi
    for f in "$CLUSTER"/run/*.pid; do [ -e "$f" ] && stop_ "$(basename "$f" .pid)"; done; true ;;
  status)
    for f in "$CLUSTER"/run/*.pid; do
      [ -e "$f" ] || continue
      n=$(basename "$f" .pid); alive "$n" && echo "$n running (pid $(cat "$f"))" || echo "$n dead"
    done ;;
  kill) kill_ "${2:?name}" ;;
  run) run "${2:?name}" ;;
  reset)  # a fresh database for the next start
    for f in "$CLUSTER"/run/*.pid; do [ -e "$f" ] && stop_ "$(basename "$f" .pid)"; done
    rm -f "$AIRFLOW_HOME/.migrated" ;;
  drop)  # the database and the container gone (a test cluster's)
    for f in "$CLUSTER"/run/*.pid; do [ -e "$f" ] && stop_ "$(basename "$f" .pid)"; done
    "$here/services.sh" dropdb "$DB"
    python3 - "$AIRFLOW__VIDSTYLE__CONTAINER" <<'PY' || true
import sys
from azure.storage.blob import BlobServiceClient
BlobServiceClient.from_connection_string("UseDevelopmentStorage=true").delete_container(sys.argv[1])
PY
    rm -f "$AIRFLOW_HOME/.migrated" ;;
  *) echo "usage: $0 start [WORKERS] | stop [NAME] | status | kill NAME | run NAME | airflow ARGS | env | reset | drop" >&2
     exit 2 ;;
esac
