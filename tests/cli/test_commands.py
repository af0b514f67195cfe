"""Smoke tests of the commands no other test runs: each on the smallest input it accepts, as a
user runs it (``python -m vidstyle.cli.main ...``, a process of its own), checked on what it
makes or answers. Kept cheap for CI: tiny videos, a width-4 model, one benchmark sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.support import ROOT, free_port
from vidstyle.cli import local
from vidstyle.media import probe as media

NTSC = Fraction(30000, 1001)


def vidstyle(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vidstyle.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False, cwd=ROOT)
    assert done.returncode == 0, f"vidstyle {' '.join(args)}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_sample_makes_a_panning_video_with_its_chord(tmp_path):
    out = tmp_path / "sample.mp4"
    done = vidstyle("sample", str(out), "--seconds", "0.5", "--width", "64", "--height", "48")
    assert Path(done.stdout.strip()) == out
    info, _ = media.probe(out, 100)
    assert info.frame_rate == "30000/1001" and info.frames == 15 and info.upright_size == (64, 48)
    assert info.audio is not None and info.audio.codec == "aac"
    assert abs(Fraction(info.audio.end) - Fraction(info.audio.start) - Fraction(1, 2)) < Fraction(1, 20)
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="gray").astype(int) for f in c.decode(video=0)]
    assert abs(frames[-1] - frames[0]).mean() > 5  # the camera moved over the photos
    silent = tmp_path / "silent.mp4"
    vidstyle("sample", str(silent), "--seconds", "0.2", "--width", "32", "--height", "32", "--no-audio")
    assert media.probe(silent, 100)[0].audio is None


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("serialized_dags")
def test_demo_makes_its_sample_and_runs_it_through_the_pipeline(container, tmp_path, tiny_model):
    out = tmp_path / "out"
    done = vidstyle("demo", "--seconds", "0.3", "--chunk-frames", "4", "--style", str(tiny_model),
                    "--out", str(out))
    result = Path(done.stdout.strip().splitlines()[-1])
    assert result.is_file() and result.is_relative_to(out)
    sample = out / "sample.mp4"
    assert f"[demo] sample video: {sample}" in done.stderr
    source, _ = media.probe(sample, 100)
    made, _ = media.probe(result, 100)
    assert source.frames == made.frames == 9 and made.upright_size == (640, 360)
    assert made.audio is not None  # the chord came through
    manifest = json.loads(next(out.glob("*.manifest.json")).read_text())
    assert manifest["frames"] == 9 and len(manifest["chunks"]) >= 2


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("serialized_dags")
def test_pipeline_benchmark_on_one_short_clip(container, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__VIDSTYLE__LOCAL_COMPILE", "False")  # compiling costs minutes on CI's CPUs
    figures = tmp_path / "figures.json"
    done = vidstyle("pipeline-benchmark", "--sizes", "64x48", "--seconds", "0.3", "--chunk-frames", "4",
                    "--videos", str(tmp_path / "videos"), "--json", str(figures))
    [(label, r)] = json.loads(figures.read_text())["videos"].items()
    assert label == "64x48, 0.3 s" and f"== {label}: 9 frames" in done.stdout
    assert r["frames"] == 9 and r["chunks"] >= 2 and r["tasks"]["stylize_chunk"]["count"] == r["chunks"]
    assert r["wall_s"] > r["chunk_s"] > 0 and r["forward_s"] > 0
    assert r["bytes_read"] >= r["source_bytes"] and r["bytes_written"] >= r["result_bytes"] > 0
    assert all(t["peak_rss"] > 0 for t in r["tasks"].values())


@pytest.mark.timeout(300)
def test_arrivals_benchmark_at_a_tiny_size(tmp_path):
    """Three videos in the archive (then five), both watchers' idle cost and check time on the
    benchmark's own Azurite. ``--samples 0`` leaves out the upload-to-run delays: each needs a
    cluster of its own (about 8 minutes here for one sample; the watcher's path through a cluster
    is tests/cluster/test_arrivals.py's)."""
    figures = tmp_path / "figures.json"
    env = os.environ | {"VIDSTYLE_HOME": str(tmp_path / "home"),
                        "PATH": os.pathsep.join([str(local.tools_bin()), os.environ["PATH"]])}
    done = vidstyle("arrivals-benchmark", "--sizes", "3,5", "--samples", "0", "--idle-seconds", "3",
                    "--json", str(figures), env=env, timeout=280)
    sizes = json.loads(figures.read_text())["sizes"]
    assert set(sizes) == {"3", "5"}
    for size, row in sizes.items():
        assert set(row) == {"listing", "storage_queue"}
        for mode, r in row.items():
            assert r["requests_per_idle_minute"] > 0 and r["check_seconds"] > 0 and r["delays_seconds"] == []
            assert f"| {size} | {mode} | {r['requests_per_idle_minute']} | {r['check_seconds']} s | - | 0 |" \
                in done.stdout


@pytest.mark.timeout(600)
def test_ui_comes_up_and_its_api_server_answers_health(tmp_path):
    """``vidstyle ui`` (Airflow standalone) on a home, database and ports of its own, until its
    health endpoint answers; then stopped, its whole process group."""
    port = free_port()
    home = tmp_path / "airflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
        "AIRFLOW_HOME": str(home), "VIDSTYLE_DB": "sqlite",
        "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__VIDSTYLE__CONTAINER": f"ui-{port}", "AIRFLOW__VIDSTYLE__ARRIVALS": "listing"}
    log = tmp_path / "ui.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "vidstyle.cli.main", "ui"], env=env, cwd=ROOT,
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = wait_for_health(f"http://127.0.0.1:{port}/api/v2/monitor/health", proc, log, 480)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert health["metadatabase"]["status"] == "healthy", health


def wait_for_health(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"vidstyle ui exited ({proc.returncode}): {log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.monotonic() < deadline, f"no answer from {url} in {timeout:.0f} s: {log.read_text()[-3000:]}"
        time.sleep(1)
