"""Every module imports on its own in a fresh interpreter (no import cycles, no import that works
only after another module's), and the floors' contract holds (import-linter, as CI runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

# One process imports the heavy third-party packages once, then forks a child per module, each
# with none of this project's modules loaded: a fresh interpreter as far as our imports go.
CHECK = r"""
import importlib.util, json, os, sys, traceback
from pathlib import Path

import airflow.sdk, av, numpy, torch  # noqa: F401  (shared by the children, loaded once)

names = []
for top in ("vidstyle", "scoring"):
    root = Path(importlib.util.find_spec(top).submodule_search_locations[0])
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
failures = {}
for name in names:
    if name.split(".")[-1] == "__main__":
        continue
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            message = ""
        except BaseException:
            message = traceback.format_exc(limit=3)
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    if message:
        failures[name] = message
print(json.dumps({"checked": len(names), "failures": failures}))
"""


@pytest.mark.timeout(600)
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    import json

    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["checked"] > 60 and report["failures"] == {}, "\n".join(
        f"{name}:\n{error}" for name, error in report["failures"].items())


def test_no_module_imports_a_floor_above_its_own():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout
