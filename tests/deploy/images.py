"""The images' builds as far as they can run without a Docker engine: each Dockerfile's own
build steps that make the Python environment (ARG, ENV, WORKDIR, COPY from the build context
and the RUN that calls ``uv sync``), replayed into a folder that stands for the image's file
system. The build context is what ``.dockerignore`` lets through, as Docker reads it. What is
not replayed here (the base image, apt-get, the user, the smoke checks) runs in the real builds of
``scripts/containers.sh`` (docs/containers.md)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT

IMAGES = {"airflow": ROOT / "images" / "airflow" / "Dockerfile", "scoring": ROOT / "images" / "scoring" / "Dockerfile"}


@dataclass
class Instruction:
    name: str
    args: str
    flags: dict[str, str] = field(default_factory=dict)  # --from=build, --mount=...


def instructions(dockerfile: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments left out."""
    found, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = (pending + line).strip(), ""
        name, _, rest = text.partition(" ")
        flags = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            key, _, value = flag[2:].partition("=")
            flags[key] = value
            rest = rest.lstrip()
        found.append(Instruction(name.upper(), rest.strip(), flags))
    return found


def stages(dockerfile: Path) -> list[list[Instruction]]:
    """The instructions of each stage (global ARGs before the first FROM open the first)."""
    out: list[list[Instruction]] = [[]]
    for ins in instructions(dockerfile):
        if ins.name == "FROM" and any(i.name == "FROM" for i in out[-1]):
            out.append([])
        out[-1].append(ins)
    return out


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], ""), text)


def assignments(args: str, variables: dict[str, str]) -> dict[str, str]:
    """``KEY=value KEY2="v 2"`` (ENV, ARG), values expanded as Docker does."""
    return {k: expand(v, variables) for k, _, v in (word.partition("=") for word in shlex.split(args))}


class DockerIgnore:
    """``.dockerignore`` as Docker reads it: Go's filepath.Match with ``**``, the last matching
    line deciding, ``!`` re-including; a path is excluded with any excluded parent folder."""

    def __init__(self, path: Path) -> None:
        self.rules = []
        for raw in path.read_text().splitlines() if path.is_file() else []:
            line = raw.strip()
            if line and not line.startswith("#"):
                keep = line.startswith("!")
                pattern = line.lstrip("!").strip().strip("/")
                self.rules.append((keep, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return out + r"\Z"

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            prefix, verdict = "/".join(parts[:depth]), None
            for keep, rule in self.rules:
                if rule.match(prefix):
                    verdict = not keep
            if verdict:
                return True
        return False


def context_files(sources: list[str], ignore: DockerIgnore) -> list[tuple[str, Path]]:
    """(path in the context, file) for what ``COPY sources`` takes from the checkout."""
    files = []
    for source in sources:
        path = ROOT / source
        if not path.exists():
            raise FileNotFoundError(f"COPY {source}: not in the build context")
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            rel = file.relative_to(ROOT).as_posix()
            if file.is_file() and not ignore.excluded(rel):
                files.append((rel, file))
    if not files:
        raise FileNotFoundError(f"COPY {' '.join(sources)}: .dockerignore leaves nothing of it")
    return files


@dataclass
class Build:
    """An image's file system, replayed under ``root``: ``path("/opt/x")`` is where /opt/x is."""

    name: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)  # the final stage's ENV
    syncs: list[list[str]] = field(default_factory=list)  # each uv sync's arguments, as the shell made them

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")


def replay(name: str, root: Path, build_args: dict[str, str] | None = None, uv: str = "uv") -> Build:
    """Replay image ``name``'s environment-making steps under ``root``; its ``uv sync`` runs for
    real, with the arguments the Dockerfile's shell line gives and this machine's Python
    (hard links from uv's cache instead of copies, bytecode left to compile on import)."""
    dockerfile, ignore = IMAGES[name], DockerIgnore(ROOT / ".dockerignore")
    build = Build(name, root)
    global_args: dict[str, str] = {}
    for stage in stages(dockerfile):
        variables, workdir, env, started = {}, "/", {}, False
        for ins in stage:
            started = started or ins.name == "FROM"
            if ins.name == "ARG":
                for key, default in assignments(ins.args, variables).items():
                    variables[key] = (build_args or {}).get(key, default or global_args.get(key, ""))
                    if not started:  # before the first FROM: a global ARG, for stages to import
                        global_args[key] = variables[key]
            elif ins.name == "ENV":
                env |= assignments(ins.args, variables | env)
            elif ins.name == "WORKDIR":
                workdir = os.path.join(workdir, expand(ins.args, variables))
            elif ins.name == "COPY" and "from" not in ins.flags:
                *sources, dest = shlex.split(ins.args)
                _copy(build, sources, os.path.join(workdir, dest), dest.endswith("/"), ignore)
            elif ins.name == "RUN" and "uv sync" in ins.args:
                argv, run_env = shell_uv(ins.args, variables | env)
                build.syncs.append(argv)
                _sync(build, argv, run_env, workdir, uv)
        build.env = env
    return build


def _copy(build: Build, sources: list[str], dest: str, into: bool, ignore: DockerIgnore) -> None:
    for source in sources:
        base = (ROOT / source).relative_to(ROOT).as_posix()
        for rel, file in context_files([source], ignore):
            if (ROOT / source).is_dir():
                target = Path(dest) / rel[len(base):].lstrip("/")
            else:
                target = Path(dest) / file.name if into or len(sources) > 1 else Path(dest)
            build.path(str(target)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, build.path(str(target)))


def shell_uv(line: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The ``uv`` command line a RUN gives, as its shell expands it, with the UV_* variables it
    sees; ``uv`` is a recorder here, so the line must hold nothing else to run."""
    assert "&&" not in re.sub(r"\$\(.*?\)", "", line) and ";" not in re.sub(r"\$\(.*?\)", "", line), \
        f"keep the uv sync RUN to the one command: {line}"
    recorder = Path(tempfile.mkdtemp(prefix="uv-recorder-"))
    script = recorder / "uv"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      "json.dump({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() "
                      "if k.startswith('UV_')}}, open(os.environ['RECORD'], 'w'))\n")
    script.chmod(0o755)
    record = recorder / "record.json"
    subprocess.run(["bash", "-euo", "pipefail", "-c", line], check=True,
                   env=env | {"PATH": f"{recorder}:/usr/bin:/bin", "RECORD": str(record)})
    recorded = json.loads(record.read_text())
    shutil.rmtree(recorder)
    return recorded["argv"], recorded["env"]


def _sync(build: Build, argv: list[str], env: dict[str, str], workdir: str, uv: str) -> None:
    assert argv[0] == "sync", argv
    args = list(argv)
    if "--python" in args:  # the image's interpreter: this machine's, of the same minor version
        args[args.index("--python") + 1] = sys.executable
    env = dict(env)
    env["UV_PROJECT_ENVIRONMENT"] = str(build.path(env["UV_PROJECT_ENVIRONMENT"]))
    env.pop("UV_NO_CACHE", None)  # the machine's cache: the same wheels, no download
    env.pop("UV_COMPILE_BYTECODE", None)
    env["UV_LINK_MODE"] = "hardlink"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "AIRFLOW", "PYTHONPATH"))}
    done = subprocess.run([uv, *args], cwd=build.path(workdir), env=base | env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, f"{build.name} image: uv {' '.join(args)}\n{done.stderr[-3000:]}"
