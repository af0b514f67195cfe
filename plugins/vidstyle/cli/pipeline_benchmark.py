"""Pipeline benchmark: the whole ``video_stylize`` DAG on the embedded default, per video.

    vidstyle pipeline-benchmark                       # 720p and 1080p, 10/30/60 s
    vidstyle pipeline-benchmark --sizes 1280x720 --seconds 60 --json figures.json

It makes sample videos with the project's own generator (``vidstyle sample``), runs each
through the same in-process ``dag.test()`` as ``vidstyle run`` (local Airflow,
Azurite, local CPU scoring, one scoring slot), and prints per video: wall time, the sum of
the chunk tasks' time, the serial time (wall minus chunks: everything a video waits for that
more GPUs cannot shorten), the model's forward pass alone over the same frames, peak local
disk and peak RSS of each task, and the bytes moved in blob storage.

It measures the data path, not the network: by default it scores with a stand-in checkpoint
it makes itself (TransformerNet width 4, 1 residual block, random weights), labelled as such.
``--model`` benchmarks a real one instead.

Nothing in the pipeline is instrumented for this. A sampler thread in this process (where
``dag.test()`` runs every task) records the RSS of this process and its children (the scorer,
ffmpeg) and the bytes in the tasks' scratch folders (``$TMPDIR/vidstyle-*``) every 50 ms; each
task's peaks are the samples inside its start and end time as Airflow recorded them. Storage
bytes are counted by wrapping the Azure provider hook's upload and download.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scoring.machine import cpu_name
from vidstyle.cli import local

SAMPLE_EVERY_S = 0.05
SCRATCH_PREFIXES = ("vidstyle-",)


@dataclass
class Sample:
    at: float
    rss: int
    disk: int


@dataclass
class Sampler:
    """RSS of this process tree and bytes under the scratch folders, sampled in a thread."""

    samples: list[Sample] = field(default_factory=list)
    baseline: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _rss(self) -> int:
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    @staticmethod
    def _disk() -> int:
        total = 0
        stack = [e.path for e in os.scandir(tempfile.gettempdir()) if e.name.startswith(SCRATCH_PREFIXES)]
        while stack:
            with contextlib.suppress(OSError):
                for entry in os.scandir(stack.pop()):
                    with contextlib.suppress(OSError):
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
        return total

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.samples.append(Sample(time.time(), self._rss(), self._disk()))

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        self.baseline = self._disk()
        thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def peaks(self, start: float, end: float) -> tuple[int, int]:
        """Peak RSS and peak scratch disk in [start, end], the disk less what was there before the run
        (scratch folders a killed process left behind)."""
        inside = [s for s in self.samples if start <= s.at <= end] or [
            min(self.samples, key=lambda s: abs(s.at - (start + end) / 2))]
        return max(s.rss for s in inside), max(0, max(s.disk for s in inside) - self.baseline)


@dataclass
class ByteCounter:
    """Bytes uploaded to and downloaded from blob storage through the provider's WasbHook."""

    read: int = 0
    written: int = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[ByteCounter]:
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        upload, download = WasbHook.upload, WasbHook.download
        counter = self

        def counted_upload(hook, container_name, blob_name, data, *args, **kwargs):
            counter.written += _length(data, kwargs.get("length"))
            return upload(hook, container_name, blob_name, data, *args, **kwargs)

        def counted_download(hook, *args, **kwargs):
            stream = download(hook, *args, **kwargs)
            counter.read += int(stream.size or 0)
            return stream

        WasbHook.upload, WasbHook.download = counted_upload, counted_download
        try:
            yield self
        finally:
            WasbHook.upload, WasbHook.download = upload, download


def _length(data, length: int | None) -> int:
    if length is not None:
        return int(length)
    if isinstance(data, str | bytes | bytearray):
        return len(data.encode() if isinstance(data, str) else data)
    with contextlib.suppress(OSError, AttributeError):
        return os.fstat(data.fileno()).st_size - data.tell()
    return 0


def _scoring(*args: str) -> str:
    """A scoring command in its own process: torch stays out of the measured process."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def make_standin(path: Path) -> Path:
    code = ("import sys, torch; from scoring.transformer_net import TransformerNet; torch.manual_seed(0); "
            "torch.save(TransformerNet(width=4, blocks=1).state_dict(), sys.argv[1])")
    _scoring("-c", code, str(path))
    return path


def forward_seconds(model: str, width: int, height: int, frames: int) -> float:
    """The model's forward pass alone over ``frames`` frames at this size (CPU, batch 1, fp32),
    compiled or not as the installation's chunks are (``local_compile``)."""
    from vidstyle.pipeline.settings import load_settings

    compiled = "--compile" if load_settings().local_compile else "--no-compile"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "fwd.json")
        _scoring("-m", "scoring.benchmark", "--model", model, "--size", f"{width}x{height}", "--forward-only",
                 "--frames", "8", "--rounds", "3", compiled, "--json", str(out))
        fps = json.loads(out.read_text())["ceiling_fps"]
    return frames / fps


def task_windows(dag_id: str, run_id: str) -> list[tuple[str, int, float, float]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id).all()
        return sorted(((t.task_id, t.map_index, t.start_date.timestamp(), t.end_date.timestamp())
                       for t in tis if t.start_date and t.end_date), key=lambda w: w[2])


def bench_video(video: Path, model: str, chunk_frames: int | None) -> dict:
    from vidstyle.cli.localrun import run_file

    sampler, counter = Sampler(), ByteCounter()
    with tempfile.TemporaryDirectory(prefix="bench-out-") as out, sampler.running(), counter.counting():
        started = time.time()
        files, dagrun = run_file(video, Path(out), style=model, chunk_frames=chunk_frames, return_run=True)
        wall = time.time() - started
        manifest = json.loads(files["manifest"].read_text())
        result_bytes = files["video"].stat().st_size
    tasks: dict[str, dict] = {}
    for task_id, _, start, end in task_windows(dagrun.dag_id, dagrun.run_id):
        rss, disk = sampler.peaks(start, end)
        t = tasks.setdefault(task_id, {"count": 0, "seconds": 0.0, "peak_rss": 0, "peak_disk": 0})
        t["count"] += 1
        t["seconds"] += end - start
        t["peak_rss"], t["peak_disk"] = max(t["peak_rss"], rss), max(t["peak_disk"], disk)
    chunk_s = tasks.get("stylize_chunk", {}).get("seconds", 0.0)
    return {"frames": manifest["frames"], "chunks": len(manifest["chunks"]), "source_bytes": video.stat().st_size,
            "result_bytes": result_bytes, "wall_s": wall, "chunk_s": chunk_s,
            "serial_s": wall - chunk_s, "bytes_read": counter.read, "bytes_written": counter.written,
            "tasks": tasks}


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def report(label: str, r: dict) -> str:
    moved = r["bytes_read"] + r["bytes_written"]
    lines = [
        f"== {label}: {r['frames']} frames, {r['chunks']} chunks, source {_mb(r['source_bytes'])}, "
        f"result {_mb(r['result_bytes'])}",
        f"   wall {r['wall_s']:.1f} s | chunks (sum) {r['chunk_s']:.1f} s | serial {r['serial_s']:.1f} s "
        f"({1000 * r['serial_s'] / r['frames']:.1f} ms/frame) | model forward alone {r['forward_s']:.1f} s | "
        f"wall/chunks {r['wall_s'] / max(r['chunk_s'], 1e-9):.2f}",
        f"   storage: read {_mb(r['bytes_read'])}, written {_mb(r['bytes_written'])}, moved "
        f"{moved / (r['source_bytes'] + r['result_bytes']):.1f}x (source + result)",
        f"   {'task':<16}{'n':>4}{'seconds':>10}{'peak disk':>14}{'peak RSS':>12}",
    ]
    for task_id, t in r["tasks"].items():
        lines.append(f"   {task_id:<16}{t['count']:>4}{t['seconds']:>10.1f}{_mb(t['peak_disk']):>14}"
                     f"{_mb(t['peak_rss']):>12}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1280x720,1920x1080", help="comma-separated WIDTHxHEIGHT")
    p.add_argument("--seconds", default="10,30,60", help="comma-separated video lengths")
    p.add_argument("--model", help="checkpoint or built-in name (default: a width-4 stand-in it makes)")
    p.add_argument("--chunk-frames", type=int, help="default: the pipeline's")
    p.add_argument("--videos", type=Path, help="where the generated sample videos are kept, reused between runs "
                                               "(default: out/bench in the home)")
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    p.add_argument("--verbose", action="store_true", help="show Airflow's task logs")


def run(a: argparse.Namespace) -> int:
    if not a.verbose:  # before Airflow reads its config
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    env = local.apply()
    from vidstyle.cli import stack
    from vidstyle.media.sample import make_sample_video

    stack.start_local(env)
    a.videos = a.videos or local.home() / "out" / "bench"
    a.videos.mkdir(parents=True, exist_ok=True)
    model = a.model or str(make_standin(a.videos / "standin-w4.pth"))
    label_model = a.model or "stand-in TransformerNet width 4, 1 block (random weights)"
    print(f"pipeline benchmark {time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {os.cpu_count()} CPUs; "
          f"model: {label_model}", flush=True)
    figures = {}
    for size in a.sizes.split(","):
        width, height = map(int, size.lower().split("x"))
        for seconds in map(float, a.seconds.split(",")):
            video = a.videos / f"sample-{width}x{height}-{seconds:g}s.mp4"
            if not video.exists():
                make_sample_video(video, seconds, width, height)
            r = bench_video(video, model, a.chunk_frames)
            r["forward_s"] = forward_seconds(model, width, height, r["frames"])
            label = f"{width}x{height}, {seconds:g} s"
            figures[label] = r
            print(report(label, r), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"model": label_model, "cpu": cpu_name(), "videos": figures},
                                     indent=2) + "\n")
    return 0
