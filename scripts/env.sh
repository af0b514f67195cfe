# Environment for running this project's local Airflow against the embedded Azurite.
# Sourced by the other scripts; `source scripts/env.sh` to use `airflow` by hand.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
export PATH="$ROOT/.venv/bin:$ROOT/.tools/node_modules/.bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
# Sized for a laptop or a small VM; the scoring pool, not this, bounds concurrent chunks.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
# The local Airflow's database: PostgreSQL (scripts/services.sh runs it), so the UI's scheduler, a
# backfill and the demo can use it at once. VIDSTYLE_DB=sqlite for a single process (dag.test).
# The password is the local, loopback-only cluster's; a real deployment sets its own connection.
export VIDSTYLE_PG_PORT="${VIDSTYLE_PG_PORT:-5433}" VIDSTYLE_REDIS_PORT="${VIDSTYLE_REDIS_PORT:-6380}"
if [ "${VIDSTYLE_DB:-postgres}" = sqlite ]; then
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
else
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-postgresql+psycopg2://airflow:airflow@127.0.0.1:$VIDSTYLE_PG_PORT/airflow}"
fi
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}"
# Plugins are also importable by DAG-parsing and task processes started outside Airflow's loader;
# the root holds scoring/, whose chunk contract the split writes (as in the Airflow image).
export PYTHONPATH="$ROOT/plugins:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Azurite, the local Blob Storage emulator, on its standard port 10000:
# "UseDevelopmentStorage=true" is the Azure SDK's own shorthand for it, so no key appears
# anywhere. A real deployment defines this connection with a managed identity or SAS instead.
# (The JSON sits in its own variable: braces inside ${VAR:-...} would end the expansion early.)
_azurite_conn='{"conn_type": "wasb", "extra": {"connection_string": "UseDevelopmentStorage=true"}}'
export AIRFLOW_CONN_WASB_DEFAULT="${AIRFLOW_CONN_WASB_DEFAULT:-$_azurite_conn}"
