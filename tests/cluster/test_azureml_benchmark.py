"""``vidstyle azureml-benchmark`` at its smallest: one video of two chunks on one node of the local
Azure ML service, through a real cluster; its figures come out, and say what they measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]


def test_the_azureml_benchmark_runs_a_tiny_video_and_reports_its_figures(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "vidstyle.cli.main", "azureml-benchmark", "--scenarios", "one", "--chunks", "2",
         "--nodes", "1", "--score-seconds", "3", "--workers", "1", "--poll-seconds", "1", "--max-poll-seconds", "2",
         "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1100, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [row] = json.loads(out.read_text())["scenarios"]
    # Exactly two chunks, one job each (a video staged by duration once made one chunk more).
    assert row["runs"] == ["success"] and row["chunks"] == 2 == row["jobs"]
    assert row["ideal_seconds"] == 6 and 0 < row["efficiency"] <= 1  # two jobs of 3 s, one node: 6 s at best
    assert 3 <= row["on_node_seconds"]["median"] <= row["on_node_seconds"]["max"]  # each job T on its node, at least
    assert row["submit_to_running_seconds"]["median"] >= 0 and row["succeeded_to_task_done_seconds"]["median"] > 0
    assert row["api"]["reads"] > 0 and row["api"]["writes"] >= 2  # at least the two jobs' PUTs
    assert row["triggerer"]["peak_rss_mib"] > 0
    assert "| one (1 video(s)) | 2 | 1 | 3 s |" in done.stdout  # the table the docs quote
