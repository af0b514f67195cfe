"""``vidstyle run VIDEO``: the pipeline on a local video file, set-up included.

Starts what a local run needs (Azurite, PostgreSQL, the Airflow database and pool), uploads the
file, runs the ``video_stylize`` DAG on it (``vidstyle.cli.localrun``) and downloads the result,
its manifest and preview. Airflow's whole log goes to ``<out>/last-run.log``; the console shows
the upload, each chunk's rate and any error as they happen, and the result's path last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from vidstyle.cli import local

SHOWN = re.compile(r"uploaded|frames/s|^error|marked failed")
# Airflow's log lines: "2026-12-01T23:27:13.43Z [info     ] message [logger] loc=file.py:89"
STRUCTLOG = re.compile(r"^\S+Z \[\w+\s*\] (?P<message>.*?)(?: \[[\w.]+\])?(?: \S+=\S+)*$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", type=Path, help="a video file")
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """A run's settings, as ``run`` and ``demo`` take them."""
    p.add_argument("--style", help="a built-in model (vidstyle models), a checkpoint path starting with '/', or "
                                   "wasb://container/path.pth (default: the installation's default_style)")
    p.add_argument("--chunk-frames", type=int, help="about how many frames each chunk takes")
    p.add_argument("--output-height", type=int, help="output height in pixels (even); 0 keeps the source's")
    p.add_argument("--crf", type=int, help="H.264 quality, 0 (lossless) to 51")
    p.add_argument("--backend", choices=("local", "azureml"), help="where chunks are scored (default: the setting)")
    p.add_argument("--out", type=Path, help="where the result, manifest and preview go (default: out/ in the home)")


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr (and its children's: the scorer's) into ``log``, with the
    lines worth seeing echoed to the console as they come."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(2), "w", buffering=1)
    done = threading.Event()
    with open(log, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        echo = threading.Thread(target=_echo, args=(log, console, done), daemon=True)
        echo.start()
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            done.set()
            echo.join(timeout=5)
            for fd in saved:
                os.close(fd)
            console.close()


def _echo(log: Path, console, done: threading.Event) -> None:
    with open(log, errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                if SHOWN.search(line):
                    m = STRUCTLOG.match(line.strip())
                    console.write(f"[run] {m['message'] if m else line.strip()}\n")
                continue
            if done.is_set():
                return
            time.sleep(0.2)


def run(a: argparse.Namespace) -> int:
    env = local.apply()
    from vidstyle.cli import stack
    from vidstyle.cli.localrun import run_file

    out = a.out or local.home() / "out"
    stack.start_local(env)
    log = out / "last-run.log"
    print(f"[run] running the video_stylize DAG (full Airflow log: {log})", file=sys.stderr, flush=True)
    try:
        with output_to(log):
            files = run_file(a.video, out, style=a.style, chunk_frames=a.chunk_frames,
                             output_height=a.output_height, crf=a.crf, backend=a.backend)
    except (Exception, KeyboardInterrupt) as exc:
        print(f"[run] failed: {exc}; see {log}", file=sys.stderr)
        return 1
    manifest = json.loads(files["manifest"].read_text())
    print(f"[run] {manifest['frames']} frames, {manifest['duration']:.2f} s, scoring "
          f"{manifest['scoring']['frames_per_second']} frames/s; preview: {files['preview']}", file=sys.stderr)
    print(files["video"].resolve())
    return 0
