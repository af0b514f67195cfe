"""Video style transfer on Airflow 3 and Azure: the pipeline's code, sorted by floors.

    cli/       the ``vidstyle`` command
    airflow/   the Airflow face: operators, sensors, triggers, the DAGs' task glue, the plugin
    pipeline/  the domain: settings, params, plan, steps, ledger, claims, compute backends
    hooks/     Azure Blob Storage and Azure ML: every client call
    media/     probe, cut, join, audio: PyAV and ffmpeg, no Airflow

Imports only go down (the import-linter contract in pyproject.toml); the scorer, package
``scoring``, sits below them all and imports none of them. CONTRIBUTING.md, "Layout", has the map.
"""
