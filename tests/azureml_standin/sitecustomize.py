"""Makes every Python process of a test cluster use the Azure ML stand-in.

On PYTHONPATH with VIDSTYLE_AZUREML_STANDIN set to the stand-in's URL, Python imports this at
start-up (the ``site`` module does), so the scheduler, the triggerer, the workers and every
task process they start build their Azure ML client as the stand-in's. It waits for the hook's
module to be imported (no Airflow or Azure import here), then replaces its ``get_conn``.
"""

import importlib.abc
import importlib.util
import os
import sys

URL = os.environ.get("VIDSTYLE_AZUREML_STANDIN")
TARGET = "vidstyle.hooks.azureml"


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        from tests.azureml_standin.client import StandinMLClient

        module.AzureMLHook.get_conn = lambda hook: StandinMLClient(URL)


if URL:
    sys.meta_path.insert(0, _PatchOnImport())
