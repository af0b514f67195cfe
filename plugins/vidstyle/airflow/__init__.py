"""The Airflow face: what Airflow loads by name and what the DAG files are built from.

``operators``, ``sensors`` and ``triggers`` follow the provider conventions (a trigger imports on
its own, as the triggerer loads it); ``tasks`` is the glue between a task's context and the
pipeline's steps; ``form`` is the trigger form; ``dispatch`` starts processing runs; ``priority``
and ``hostname`` are what Airflow's config names; ``plugin`` registers it all.
"""
