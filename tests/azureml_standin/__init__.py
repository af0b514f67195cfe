"""An Azure ML stand-in for the tests: a job service of its own (service.py), a client with
azure-ai-ml's interface that talks to it (client.py), and the interpreter hook that makes
every Airflow process of a test cluster use that client (sitecustomize.py)."""
