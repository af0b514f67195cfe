"""The local installation: where its files live and the environment its Airflow runs in.

Every command that runs the pipeline here (``demo``, ``run``, ``ui``, ``cluster``, ``airflow``)
applies these defaults before Airflow is imported; anything already set in the environment wins,
so the same commands run against real storage or another database when told to.

The home (``VIDSTYLE_HOME``) holds the local Airflow (``.airflow``), the services' data and caches
(``.cache``), Azurite (``.tools``) and results (``out``): by default the checkout the package runs
from, so a checkout keeps the history it had, else ``~/.local/share/vidstyle``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import vidstyle

PACKAGE = Path(vidstyle.__file__).resolve().parent
PG_PORT, REDIS_PORT = "5433", "6380"
# Azurite through the SDK's own shorthand for it: no key appears anywhere.
AZURITE_CONN = '{"conn_type": "wasb", "extra": {"connection_string": "UseDevelopmentStorage=true"}}'
LOCAL_PG_PASSWORD = "airflow"  # the loopback-only local cluster's; a real deployment sets its own connection


def checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), if it is one."""
    root = PACKAGE.parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "dags").is_dir() else None


def home() -> Path:
    if os.environ.get("VIDSTYLE_HOME"):
        return Path(os.environ["VIDSTYLE_HOME"]).expanduser().resolve()
    if root := checkout():
        return root
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "vidstyle"


def dags_folder() -> Path:
    """The DAG files: inside the installed package (the wheel ships them), else the checkout's."""
    packaged = PACKAGE / "dags"
    if packaged.is_dir():
        return packaged
    if root := checkout():
        return root / "dags"
    raise FileNotFoundError(f"no DAG files beside {PACKAGE}: reinstall the package")


def tools_bin() -> Path:
    """Where the bootstrap installs Azurite (npm) for this home."""
    return home() / ".tools" / "node_modules" / ".bin"


def database_url(airflow_home: Path, env: dict[str, str], db: str | None = None) -> str:
    """The local Airflow's database: PostgreSQL (``vidstyle services`` runs it) so that the UI's
    scheduler, a backfill and a local run can use it at once; ``VIDSTYLE_DB=sqlite`` for one process."""
    if (db or env.get("VIDSTYLE_DB", "postgres")) == "sqlite":
        return f"sqlite:///{airflow_home}/airflow.db"
    port = env.get("VIDSTYLE_PG_PORT", PG_PORT)
    return f"postgresql+psycopg2://airflow:{LOCAL_PG_PASSWORD}@127.0.0.1:{port}/airflow"


def defaults(env: dict[str, str], db: str | None = None) -> dict[str, str]:
    """The local installation's environment: what each variable is when ``env`` does not set it."""
    airflow_home = Path(env.get("AIRFLOW_HOME") or home() / ".airflow")
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Sized for a laptop or a small VM; the scoring pool, not this, bounds concurrent chunks.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(airflow_home, env, db),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "VIDSTYLE_PG_PORT": PG_PORT,
        "VIDSTYLE_REDIS_PORT": REDIS_PORT,
        "AIRFLOW_CONN_WASB_DEFAULT": AZURITE_CONN,
    }


def environment(db: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment) with the local defaults for whatever it leaves unset."""
    env = dict(os.environ if base is None else base)
    for key, value in defaults(env, db).items():
        env.setdefault(key, value)
    # This environment's own commands (airflow) first, then Azurite's.
    for folder in (tools_bin(), Path(sys.executable).parent):
        if folder.is_dir() and str(folder) not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PATH")])])
    return env


def apply(db: str | None = None) -> dict[str, str]:
    """Set the local defaults in this process (before Airflow is imported: it reads them once)."""
    os.environ.update(environment(db))
    return dict(os.environ)
