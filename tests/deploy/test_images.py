"""The images' Dockerfiles and build context, read as Docker reads them (no engine in CI): what
they copy is in the context, they install by the native setup's command from the one lock,
with the same tool versions, and the scoring image is the plain Python base with a compiler.
test_package.py replays their environment-making steps and runs the result; scripts/containers.sh
builds and runs both for real (docs/containers.md)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tests.deploy.images import (
    IMAGES,
    DockerIgnore,
    assignments,
    context_files,
    instructions,
    shell_uv,
    stages,
)
from tests.support import ROOT

BOOTSTRAP = (ROOT / "scripts" / "bootstrap.sh").read_text()


def runs(name: str) -> list[str]:
    return [i.args for i in instructions(IMAGES[name]) if i.name == "RUN"]


def arg_default(name: str, key: str) -> str:
    for ins in instructions(IMAGES[name]):
        if ins.name == "ARG" and ins.args.startswith(f"{key}="):
            return assignments(ins.args, {})[key]
    raise AssertionError(f"{name} image: no ARG {key}")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_everything_an_image_copies_is_in_the_build_context(name):
    ignore = DockerIgnore(ROOT / ".dockerignore")
    for ins in instructions(IMAGES[name]):
        if ins.name == "COPY" and "from" not in ins.flags:
            *sources, _ = shlex.split(ins.args)
            assert context_files(sources, ignore), ins.args  # raises when missing or ignored


def test_the_build_context_leaves_out_environments_caches_and_results():
    ignore = DockerIgnore(ROOT / ".dockerignore")
    sent, size = [], 0
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT).as_posix()
        dirs[:] = [d for d in dirs if not ignore.excluded(f"{rel}/{d}".removeprefix("./"))]
        for f in files:
            path = f"{rel}/{f}".removeprefix("./")
            if not ignore.excluded(path):
                sent.append(path)
                size += (Path(folder) / f).stat().st_size
    print(f"build context: {len(sent)} files, {size / 2**20:.1f} MiB")
    assert not [p for p in sent if p.startswith((".venv/", ".tools/", ".cache/", ".git/", "out/", ".airflow/"))]
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc")]
    assert size < 64 * 2**20  # the sources, the lock and the shipped models


def test_both_images_install_from_the_lock_by_the_native_setups_command():
    native = re.search(r'"\$uv" sync (--\w+)', BOOTSTRAP)
    assert native and native[1] == "--locked"  # a stale lock fails everywhere, not only in the images
    for name in IMAGES:
        [sync] = [r for r in runs(name) if "uv sync" in r]
        assert "uv sync --locked" in sync and "--no-dev" in sync, f"{name}: {sync}"
        assert "pip install -r" not in " ".join(runs(name))  # no second way in


def test_the_native_setup_and_both_images_install_bytecode():
    """A chunk's process imports torch, dynamo and inductor: from source that is ~15 s more per
    chunk wherever Python does not write its caches (a read-only install, PYTHONDONTWRITEBYTECODE)."""
    assert re.search(r'"\$uv" sync [^\n]*--compile-bytecode', BOOTSTRAP)
    for name in IMAGES:
        # What the image's uv sync itself sees, as its shell runs it (comments do not count).
        [stage] = [st for st in stages(IMAGES[name]) if any(i.name == "RUN" and "uv sync" in i.args for i in st)]
        env: dict[str, str] = {}
        for ins in stage:
            if ins.name == "ENV":
                env |= assignments(ins.args, env)
            elif ins.name == "RUN" and "uv sync" in ins.args:
                argv, uv_env = shell_uv(ins.args, env)
                break
        assert argv[0] == "sync"
        assert "--compile-bytecode" in argv or uv_env.get("UV_COMPILE_BYTECODE") == "1", \
            f"{name} image installs without bytecode"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_images_use_the_uv_of_the_native_setup(name):
    assert f"UV_VERSION={arg_default(name, 'UV_VERSION')}\n" in BOOTSTRAP


def test_the_airflow_image_runs_on_the_python_the_scoring_image_and_the_lock_allow():
    python = arg_default("airflow", "PYTHON")
    assert arg_default("scoring", "PYTHON") == python
    requires = re.search(r'requires-python = "(.*)"', (ROOT / "pyproject.toml").read_text())[1]
    low, high = re.findall(r"(\d+\.\d+)", requires)
    as_tuple = lambda v: tuple(map(int, v.split(".")))  # noqa: E731
    assert as_tuple(low) <= as_tuple(python) < as_tuple(high)


def test_the_scoring_image_is_the_plain_python_base_with_a_compiler():
    """Azure ML runs a command job in any image with bash and the Python its command names: the
    scorer's base is the Airflow image's plain Python (no CUDA toolkit, no cuDNN: the torch wheels
    carry their own CUDA libraries; no conda, no OpenMPI); gcc and the libc headers are for
    torch.compile's Triton launcher."""
    bases = {name: [i.args for i in instructions(IMAGES[name]) if i.name == "FROM"] for name in IMAGES}
    [base] = bases["scoring"]
    assert base == "python:${PYTHON}-slim-bookworm" and base in bases["airflow"]
    assert not re.search(r"cuda|cudnn|devel", base, re.I)
    assert any(re.search(r"apt-get install .*\bgcc\b.*\blibc6-dev\b", r) for r in runs("scoring"))
    assert not [r for r in runs("scoring") if re.search(r"\bconda\b|mpi", r)]
    [sync] = [r for r in runs("scoring") if "uv sync" in r]
    assert "--python /usr/local/bin/python3" in sync  # the base's interpreter, never one uv downloads


def test_the_scoring_image_has_nothing_of_airflow():
    copies = [shlex.split(i.args)[:-1] for i in instructions(IMAGES["scoring"]) if i.name == "COPY"]
    assert sorted(s for c in copies for s in c) == ["pyproject.toml", "scoring", "uv.lock"]
    [sync] = [r for r in runs("scoring") if "uv sync" in r]
    assert "--no-install-project" in sync and re.findall(r"--extra (\S+)", sync) == ["scorer"]


def test_the_airflow_image_runs_as_the_official_images_user_with_the_dags_of_its_package():
    final = stages(IMAGES["airflow"])[-1]
    assert [i.args for i in final if i.name == "USER"] == ["50000"]
    env = {}
    for ins in (i for i in final if i.name == "ENV"):
        env |= assignments(ins.args, {"PYTHON": arg_default("airflow", "PYTHON")})
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"/opt/vidstyle/lib/python{arg_default('airflow', 'PYTHON')}/" \
                                               "site-packages/vidstyle/dags"
    assert env["PATH"].startswith("/opt/vidstyle/bin:")
    assert [i.args for i in final if i.name == "COPY"] == ["/opt/vidstyle /opt/vidstyle"]  # the venv alone
