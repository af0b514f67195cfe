"""A local Azure ML service, the way Azurite is a local storage service: HTTPS, the REST API's
URLs and bodies as azure-ai-ml 1.35.2 uses them (api.py), a sign-in authority for a real
azure-identity credential, and jobs that really run the scorer on Azurite folders (jobs.py).
The project's hook reaches it through azure-ai-ml's own MLClient, set up by the SDK's settings
for other clouds (ARM_CLOUD_METADATA_URL), never a code path of its own."""
