"""The GPU check's plumbing on the CPU (``--cpu``: every step but CUDA), its refusal where no GPU
is, and its deadlines: a step that hangs is stopped and named, never waited on."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from scoring.gpu_check import StepTimeout, deadline
from tests.support import ROOT


def gpu_check(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scoring", "gpu-check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def report_of(done: subprocess.CompletedProcess) -> dict:
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("GPU-CHECK ")]
    return json.loads(line[len("GPU-CHECK "):])


@pytest.mark.timeout(600)
def test_the_cpu_plumbing_runs_every_step_and_reports_each_figure(tmp_path):
    done = gpu_check("--cpu", "--json", str(tmp_path / "check.json"), timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = report_of(done)
    assert report == json.loads((tmp_path / "check.json").read_text())
    assert report["mode"] == "cpu plumbing" and report["machine"]["torch"]
    for kind in ("eager", "compiled"):
        b = report["benchmark"][kind]
        assert b["baseline_fps"] > 0 and b["chunk_fps"] > 0
        if kind == "eager":  # compiled: the tiny --cpu chunk is under the size compiling pays for, so it may run eager
            assert b["compiled"] is False
        assert b["deviation_max_255"] <= 3  # fp32 on both sides
    chunk = report["chunk"]
    assert chunk["frames"] == 8 and chunk["decode_fps"] > 0 and chunk["chunk_fps"] > 0 and chunk["encoder"]
    nvenc = report["nvenc"]
    assert isinstance(nvenc["nvenc_available"], bool) and nvenc["nvenc"]
    assert nvenc["chunk_encoder"] == chunk["encoder"]


def test_without_a_gpu_it_says_so_at_once_and_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would run for real")
    started = time.monotonic()
    done = gpu_check(timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA device: torch.cuda.is_available() is False" in done.stderr
    assert "--cpu runs the check's plumbing" in done.stderr
    assert time.monotonic() - started < 60


def test_a_step_that_hangs_is_stopped_by_its_deadline_and_named():
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="step 'benchmark' did not finish in 1 s"), deadline(1, "benchmark"):
        time.sleep(30)
    assert time.monotonic() - started < 5
    with deadline(5, "quick"):  # a step that finishes leaves no alarm behind
        pass
    time.sleep(0.1)
