"""Azure Machine Learning: the hook, the job spec, the trigger that waits on a job, provisioning.

Nothing here is imported by the local pipeline: azure-ai-ml loads only when a run picks the
``azureml`` backend, a trigger polls a job, or ``python -m vidstyle.azureml.provision`` runs.
"""
