"""``vidstyle``: the one command for everything the project does.

Each subcommand's module loads only when it runs (``vidstyle --help`` imports neither Airflow nor
torch), so the scorer's commands work in the scoring image, which has no Airflow, and the
pipeline's in the Airflow image, which may have no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable

STARTED = time.monotonic()  # a chunk's figures count the scorer's start-up from here

Options = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def module(path: str) -> Callable[[], tuple[Options, Run]]:
    """A command whose module has ``add_arguments(parser)`` and ``run(args)``."""
    def load() -> tuple[Options, Run]:
        m = importlib.import_module(path)
        return m.add_arguments, m.run
    return load


def function(path: str, options: str, runs: str) -> Callable[[], tuple[Options, Run]]:
    """A command made of two functions of one module (several commands share it)."""
    def load() -> tuple[Options, Run]:
        m = importlib.import_module(path)
        return getattr(m, options), getattr(m, runs)
    return load


def scorer(name: str) -> Callable[[], tuple[Options, Run]]:
    """One of the scorer's own commands (``python -m scoring``), with the same options."""
    def load() -> tuple[Options, Run]:
        from scoring.cli import COMMANDS

        _, options, run = COMMANDS[name]
        return options, lambda a: run(a, STARTED)
    return load


# name -> (what it does, how to load it); in the order --help lists them.
COMMANDS: dict[str, tuple[str, Callable[[], tuple[Options, Run]]]] = {
    "demo": ("the whole pipeline on a sample video it makes; prints the result's path last",
             module("vidstyle.cli.demo")),
    "run": ("the pipeline on a local video file; prints the result's path last", module("vidstyle.cli.run")),
    "ui": ("the local Airflow UI (standalone) on http://localhost:8080, wired to Azurite", module("vidstyle.cli.ui")),
    "cluster": ("the pipeline on a CeleryExecutor cluster of separate processes", module("vidstyle.cli.cluster")),
    "upload": ("upload videos into the watched prefix", module("vidstyle.cli.upload")),
    "airflow": ("Airflow's command line against the local installation", module("vidstyle.cli.airflow_cli")),
    "services": ("the local PostgreSQL and Redis (Debian's packages, loopback only)",
                 function("vidstyle.cli.stack", "add_services_arguments", "run_services")),
    "azurite": ("the local Azurite blob store and queue service",
                function("vidstyle.cli.stack", "add_azurite_arguments", "run_azurite")),
    "queue": ("create the arrivals queue (Event Grid's blob-created events) where missing",
              module("vidstyle.cli.queue")),
    "pool": ("create or resize Airflow's scoring pool from the settings", module("vidstyle.cli.pool")),
    "provision": ("create or update the Azure ML datastore, GPU cluster and scoring environment",
                  module("vidstyle.cli.provision")),
    "stylize": ("the chunk scorer: stylize a chunk folder (video) or a folder of images", scorer("stylize")),
    "preview": ("before/after image of a model on one photo", scorer("preview")),
    "flicker": ("warping error (flicker) of a styled video, or of models on a video", scorer("flicker")),
    "models": ("list the built-in style models", scorer("models")),
    "gpu-check": ("the scorer on this node's GPU in one go (benchmark, 1080p chunk, NVENC); --cpu: the plumbing",
                  scorer("gpu-check")),
    "sample": ("make the demo's sample video (a pan over photos, with a chord)", module("vidstyle.media.sample")),
    "benchmark": ("the scoring benchmark: per-frame loop, forward pass alone, a chunk as the pipeline runs it",
                  function("scoring.benchmark", "add_arguments", "run")),
    "pipeline-benchmark": ("the whole DAG on generated 720p and 1080p videos: time, disk, memory, bytes",
                           module("vidstyle.cli.pipeline_benchmark")),
    "arrivals-benchmark": ("finding uploads by listing and by event, at 1,000 to 100,000 videos: requests, "
                           "check time, delay", module("vidstyle.cli.arrivals_benchmark")),
    "azureml-benchmark": ("Azure ML orchestration at scale on the local Azure ML service: efficiency, per-chunk "
                          "overhead, triggerer CPU and memory, API calls", module("vidstyle.cli.azureml_benchmark")),
    "train-filter": ("train a TransformerNet on the procedural pop-art filter (offline)",
                     function("scoring.train_filter", "add_arguments", "run")),
    "train-style": ("train a TransformerNet on a painting (Johnson et al.'s perceptual losses)",
                    function("scoring.train_style", "add_arguments", "run")),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Every command listed; only ``chosen``'s module loaded, for its options."""
    parser = argparse.ArgumentParser(prog="vidstyle", description="Batch neural style transfer for videos on Airflow "
                                     "3 and Azure: the pipeline, its local stack, the scorer and the benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, load) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        if name == chosen:
            options, run = load()
            options(command)
            command.set_defaults(run=run)
    return parser


EXTRAS = {"torch": "scorer", "cv2": "scorer", "airflow": "airflow", "azure": "airflow", "skimage": "training"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
        return args.run(args)
    except ModuleNotFoundError as exc:  # a command of an extra this installation does not have
        top = (exc.name or "").partition(".")[0]
        if top not in EXTRAS:
            raise
        print(f"vidstyle {chosen}: needs {top}, which this installation lacks: install the package with its "
              f"'{EXTRAS[top]}' extra", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
