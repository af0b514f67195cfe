"""Makes every Python process of a test cluster use the Azure ML stand-in.

On PYTHONPATH with VIDSTYLE_AZUREML_STANDIN set to the stand-in's URL, Python imports this at
start-up (the ``site`` module does), so the scheduler, the triggerer, the workers and every
task process they start build their Azure ML client as the stand-in's. It waits for the hook's
module to be imported (no Airflow or Azure import here), then replaces its ``_connect``.
"""

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

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
        # The client next to this file, by its path: it needs no checkout on sys.path (the
        # installed-package test copies the two files alone).
        spec = importlib.util.spec_from_file_location("standin_client", Path(__file__).with_name("client.py"))
        client = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = client
        spec.loader.exec_module(client)
        module.AzureMLHook._connect = lambda hook: (client.StandinMLClient(URL), None)


if URL:
    sys.meta_path.insert(0, _PatchOnImport())
