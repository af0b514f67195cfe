"""Write requirements.txt: the Airflow side of uv.lock as pip installs it in hash-checking mode.

    .venv/bin/python scripts/requirements.py           # rewrite requirements.txt
    .venv/bin/python scripts/requirements.py --check   # exit 1 when it is out of date

It is `uv export --frozen --extra airflow --no-emit-project` with one change: a package that
another package of the file asks for with extras (`celery[redis]`, `uvicorn[standard]`) is pinned
a second time with those extras (`celery[redis]==5.6.3`, the same hashes). uv writes no extras
on its lines (astral-sh/uv#12072), and pip before 23.3 (Debian bookworm's 23.0.1, the 23.2.1
that Python 3.11 puts in a new venv) takes a dependency's `celery[redis]` for an unpinned
requirement in hash-checking mode and stops (pypa/pip#9644). Pinned with its extras too, the
requirement is the file's own; every package the extras bring is in the file already, since the
lock resolved them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "requirements.txt"
EXPORT = ["export", "--frozen", "--extra", "airflow", "--no-emit-project"]
HEADER = ("# The Airflow side of uv.lock, for pip (hash-checked). Generated, do not edit:\n"
          "#    .venv/bin/python scripts/requirements.py\n"
          "# which is `uv " + " ".join(EXPORT) + "` with each package that others ask\n"
          "# for with extras pinned once more with them (pip before 23.3 needs that).\n")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<rest>.*)$")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def uv() -> str:
    found = ROOT / ".tools" / "uv" / "bin" / "uv"
    return str(found) if found.is_file() else "uv"


def export() -> str:
    """uv's export, read from its standard output (``-o -`` would write a file named '-')."""
    return subprocess.run([uv(), *EXPORT, "--project", str(ROOT)], check=True, capture_output=True, text=True,
                          cwd=ROOT).stdout


def requested_extras(exported: set[str]) -> dict[str, set[str]]:
    """The extras that packages of the file ask of each other, per package, from uv.lock: the
    plain dependencies of every exported package, and the optional ones of the extras asked for
    (until nothing new is asked). Entries under a marker are left out: their extras may not apply."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {normal(p["name"]): p for p in lock["package"] if normal(p["name"]) in exported}
    wanted: dict[str, set[str]] = {}

    def ask(deps: list[dict]) -> bool:
        grew = False
        for dep in deps:
            name = normal(dep["name"])
            if name in exported and dep.get("extra") and "marker" not in dep:
                before = len(wanted.setdefault(name, set()))
                wanted[name].update(dep["extra"])
                grew |= len(wanted[name]) > before
        return grew

    for package in packages.values():
        ask(package.get("dependencies", []))
    while True:
        grew = False
        for name, extras in list(wanted.items()):
            optional = packages.get(name, {}).get("optional-dependencies", {})
            for extra in sorted(extras):
                grew |= ask(optional.get(extra, []))
        if not grew:
            return wanted


def render(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    exported = {normal(m["name"]) for line in lines if (m := PIN.match(line))}
    wanted = requested_extras(exported)
    out: list[str] = []
    i = 0
    while i < len(lines):
        block = [lines[i]]  # a pin and its hash lines, each but the last ending in a backslash
        while block[-1].endswith("\\") and i + len(block) < len(lines):
            block.append(lines[i + len(block)])
        i += len(block)
        out += block
        m = PIN.match(block[0])
        if m and wanted.get(normal(m["name"])):
            # The same pin and hashes once more, with the extras: old pip counts `httpx` and
            # `httpx[http2]` as two requirements, each of which must be pinned.
            extras = ",".join(sorted(wanted[normal(m["name"])]))
            out += [f"{m['name']}[{extras}]=={m['rest']}", *block[1:]]
    return HEADER + "\n".join(out).lstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    wanted = render(export())
    if "--check" in argv:
        if TARGET.read_text() != wanted:
            print("requirements.txt is out of date: .venv/bin/python scripts/requirements.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    print(f"{TARGET.relative_to(ROOT)}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
