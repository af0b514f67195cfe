"""The hostname a worker reports to Airflow (``[core] hostname_callable``).

``vidstyle cluster`` runs several Celery workers on one machine, each standing for a machine of
its own: each names itself by VIDSTYLE_HOSTNAME, so task instances show which one ran them.
Elsewhere this is the machine's own name, as Airflow's default gives it.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("VIDSTYLE_HOSTNAME") or socket.getfqdn()
