"""The documentation cannot drift from the code: the reference pages are what ``scripts/docs.py``
writes, the site builds strictly (links and anchors), every ``vidstyle`` command line shown parses
with the real parser, and every file path and link the pages name exists."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from vidstyle.cli.main import COMMANDS, build_parser

REGENERATE = ".venv/bin/python scripts/docs.py"
TOP = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
GENERATED = {ROOT / "docs" / "reference" / "cli.md", ROOT / "docs" / "reference" / "configuration.md"}
WRITTEN = [*TOP, *(p for p in PAGES if p not in GENERATED)]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# What the pages may name as files of the repository: paths under these, or these files themselves.
REPO_DIRS = ("dags/", "plugins/", "scoring/", "tests/", "images/", "deploy/", "scripts/", ".ci/", "docs/")
REPO_FILES = {"pyproject.toml", "uv.lock", "requirements.txt", "docker-compose.yaml", "mkdocs.yml", "README.md",
              "CONTRIBUTING.md", "CHANGELOG.md", ".dockerignore", ".gitignore"}
COMMAND_LINE = re.compile(r"\s*(?:[A-Z_][A-Z0-9_]*=\S+\s+)*(?:\.venv/bin/)?vidstyle\s")
PLACEHOLDER = re.compile(r"[<>*{}|$ ]|\.\.\.|NAME|NNNNN")


def generator():
    spec = importlib.util.spec_from_file_location("vidstyle_docs_generator", ROOT / "scripts" / "docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_reference_pages_are_what_the_code_generates():
    docs = generator()
    stale = [rel(path) for path, render in docs.PAGES.items() if not path.is_file() or path.read_text() != render()]
    assert not stale, f"{', '.join(stale)} differ from the code: run `{REGENERATE}` and commit the result"


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs' toc make it (for the headings these pages use)."""
    text = re.sub(r"[`*_]", lambda m: "_" if m.group() == "_" else "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"[\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


@pytest.mark.parametrize("page", TOP, ids=rel)
def test_links_from_the_top_level_files_resolve(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no heading with that anchor in {rel(where)}")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)


def command_lines(text: str) -> list[str]:
    """The ``vidstyle`` command lines of a page's shell blocks, continuation lines joined."""
    lines = []
    for lang, body in FENCE.findall(text):
        if lang not in ("bash", "sh", "shell", "console", ""):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if not COMMAND_LINE.match(line):
                continue
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value before the command
                words.pop(0)
            if words and words[0] in ("vidstyle", ".venv/bin/vidstyle"):
                lines.append(shlex.join(words))
    return lines


def parse(words: list[str]) -> str | None:
    """None if the real parser takes these arguments, else what it says."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser(words[0] if words and words[0] in COMMANDS else None).parse_args(words)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


@pytest.mark.parametrize("page", WRITTEN, ids=rel)
def test_every_vidstyle_command_shown_parses(page):
    text = page.read_text()
    wrong = []
    for line in command_lines(text):
        if error := parse(shlex.split(line)[1:]):
            wrong.append(f"`{line}`: {error}")
    # Inline mentions name a command and its options, with placeholders for the rest.
    for span in INLINE.findall(FENCE.sub("", text)):
        words = span.split()
        if len(words) < 2 or words[0] not in ("vidstyle", ".venv/bin/vidstyle"):
            continue
        if words[1].startswith("-"):  # the command's own options (`vidstyle --help`): the real parser says
            if error := parse(words[1:]):
                wrong.append(f"`{span}`: {error}")
            continue
        if words[1] not in COMMANDS:
            wrong.append(f"`{span}`: no command {words[1]!r}")
            continue
        sub = next(a for a in build_parser(words[1])._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
        known = {s for a in sub.choices[words[1]]._actions for s in a.option_strings}
        wrong += [f"`{span}`: vidstyle {words[1]} has no option {w}" for w in words[2:]
                  if w.startswith("--") and w.split("=")[0] not in known]
    assert not wrong, f"{rel(page)}:\n" + "\n".join(wrong)


def named_paths(text: str) -> set[str]:
    """What a page names as files of the repository, in code spans, code blocks and links."""
    candidates = set(INLINE.findall(FENCE.sub("", text)))
    for _, body in FENCE.findall(text):
        candidates.update(re.findall(r"[\w./-]+", body))
    found = set()
    for candidate in candidates:
        path = candidate.removeprefix("./").split("::")[0]
        if PLACEHOLDER.search(path):
            continue
        if path.startswith(REPO_DIRS) or path in REPO_FILES:
            found.add(path)
    return found


@pytest.mark.parametrize("page", WRITTEN, ids=rel)
def test_every_file_path_named_exists(page):
    missing = sorted(p for p in named_paths(page.read_text()) if not (ROOT / p).exists())
    assert not missing, f"{rel(page)} names files that do not exist: {', '.join(missing)}"


def test_the_readme_keeps_the_two_commands():
    block = ("```bash\n# The whole pipeline on a sample video it makes; prints the result's path on its last line:\n"
             "./scripts/demo.sh\n# The test suite (real Azurite, ffmpeg, torch and Airflow runs):\n"
             "./scripts/test.sh\n```")
    readme = (ROOT / "README.md").read_text()
    assert "## Two commands" in readme and block in readme
