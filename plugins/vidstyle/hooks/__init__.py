"""Hooks: every call to an outside service, as the Azure provider's hooks make them.

``blob_store`` is the pipeline's container (on the provider's ``WasbHook``); ``azureml`` is an
Azure ML workspace (on ``azure-ai-ml``'s ``MLClient``). Nothing here knows videos or runs: the
pipeline's domain sits on top.

The Azure SDK logs every request's URL and headers at INFO: the watcher's trigger, polling every
30 s, filled logs with them (125 KB in 17 minutes). Those loggers stay at WARNING unless
``[vidstyle] azure_http_logging`` asks for them (troubleshooting a connection). Set when the
first hook is imported, which every task and trigger that reaches Azure does.
"""

import logging

AZURE_HTTP_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def quiet_azure_http_logging(verbose: bool = False) -> None:
    for name in AZURE_HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _configured_verbosity() -> bool:
    from airflow.configuration import conf

    return conf.getboolean("vidstyle", "azure_http_logging", fallback=False)


quiet_azure_http_logging(_configured_verbosity())
