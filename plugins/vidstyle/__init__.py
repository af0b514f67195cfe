"""Video style transfer on Airflow: the pipeline's Airflow side (hooks, operators, triggers, steps).

The Azure SDK logs every storage request's URL and headers at INFO: the watcher's trigger,
polling every 30 s, filled logs with them (125 KB in 17 minutes). Those loggers stay at
WARNING unless ``[vidstyle] azure_http_logging`` asks for them (troubleshooting a connection).
Set on import: the triggerer imports this package with any of its triggers.
"""

import logging

from airflow.configuration import conf

AZURE_HTTP_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def quiet_azure_http_logging(verbose: bool = False) -> None:
    for name in AZURE_HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


quiet_azure_http_logging(conf.getboolean("vidstyle", "azure_http_logging", fallback=False))
