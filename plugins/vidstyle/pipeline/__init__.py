"""The pipeline's domain: what a video run is and does, whatever runs it.

``settings`` (the installation's), ``params`` (a run's), ``identity`` (what a video is),
``models`` (what a style names), ``layout`` (where things live in storage), ``plan`` (what split
decided), ``run`` and ``steps`` (the run and its steps), ``ledger``, ``claims``, ``reconcile`` and
``sweep`` (many runs, many workers), ``manifest``, ``dispatch`` (starting runs), ``backends``
(where chunks are scored), ``environment`` and ``provisioning`` (Azure ML's side). Built on
``vidstyle.hooks`` and ``vidstyle.media``; Airflow's task API is not used here.
"""
