#!/usr/bin/env bash
# Local Airflow (standalone: API server + UI, scheduler, triggerer, DAG processor) wired to
# the embedded Azurite. Open http://localhost:8080; the admin password is printed at start
# and kept in .airflow/simple_auth_manager_passwords.json.generated.
# Drop a video into the watched prefix to see the automatic path:
#   source scripts/env.sh && python -m vidstyle.upload my.mp4
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
"$here/bootstrap.sh"
"$here/azurite.sh" start
source "$here/env.sh"
airflow dags reserialize >/dev/null 2>&1 || true
exec airflow standalone
