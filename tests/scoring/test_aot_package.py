"""Compiled packages on a CPU (fp32 and int8): built once per key, shared by processes, checked.

Real torch, real AOTInductor builds (tens of seconds each), on the built-in model at a small size."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from scoring import aot_package
from scoring.aot_package import PackagedModel, package_key
from scoring.checkpoint import load_model
from scoring.inference_net import for_inference
from scoring.quantize import calibration_frames, to_input
from tests.support import ROOT

SHAPE = (1, 3, 64, 96)

# One process's part of the concurrency test: build or load, run, save the output and the log.
CHILD = """
import sys, torch
from pathlib import Path
from scoring.aot_package import PackagedModel
from scoring.checkpoint import load_model
from scoring.inference_net import for_inference
from scoring.quantize import calibration_frames, to_input
lines = []
model = PackagedModel(for_inference(load_model("pop-art")[0]), "int8", Path(sys.argv[1]), log=lines.append)
with torch.inference_mode():
    y = model(to_input(calibration_frames(64, 96)[:1]))
torch.save(y.contiguous(), sys.argv[2])
print("\\n".join(lines + [model.precision]))
"""


@pytest.fixture(scope="module")
def net():
    return for_inference(load_model("pop-art")[0]).to(memory_format=torch.channels_last)


def test_calibration_frames_are_the_same_for_every_chunk_of_a_size():
    a, b = calibration_frames(37, 51), calibration_frames(37, 51)
    assert a.shape == (8, 37, 51, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a.std() > 30  # photos, not a blank
    assert calibration_frames(1080, 1920).shape == (8, 1080, 1920, 3)


def test_the_key_follows_the_model_the_shape_and_the_machine(monkeypatch, net):
    digest = aot_package.model_digest(net)
    key = package_key(digest, "int8", SHAPE)
    assert key == package_key(aot_package.model_digest(for_inference(load_model("pop-art")[0])), "int8", SHAPE)
    assert key != package_key(digest, "fp32", SHAPE) != package_key(digest, "int8", (1, 3, 64, 100))
    other = for_inference(load_model("pop-art-steady")[0])
    assert package_key(aot_package.model_digest(other), "int8", SHAPE) != key
    fp32 = package_key(digest, "fp32", SHAPE)
    monkeypatch.setattr(aot_package, "RECIPE", "another-int8-recipe")  # quantized anew; fp32 packages stay
    assert package_key(digest, "int8", SHAPE) != key and package_key(digest, "fp32", SHAPE) == fp32
    monkeypatch.undo()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # kernels built for another instruction set
    assert package_key(digest, "int8", SHAPE) != key
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # inductor writes the thread count into the kernels
        assert package_key(digest, "int8", SHAPE) != key
    finally:
        torch.set_num_threads(threads)


def test_processes_share_one_int8_build_that_stays_close_to_fp32(tmp_path, net):
    """Two chunk processes start on an empty cache: one builds, the other waits and loads it;
    both give the same frames, within a few levels of fp32; a third load comes from the cache."""
    cache = tmp_path / "aot"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(cache), str(tmp_path / f"y{i}.pt")], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    logs = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        logs.append(out)
    assert sum("compiling a int8 package" in log for log in logs) == 1, logs
    assert sum("from the cache" in log for log in logs) == 1, logs
    assert all(log.strip().endswith("int8") for log in logs)
    y0, y1 = (torch.load(tmp_path / f"y{i}.pt") for i in range(2))
    assert torch.equal(y0, y1)
    records = list(cache.glob("*.json"))
    assert len(records) == 1 and len(list(cache.glob("*.pt2"))) == 1 and not list(cache.glob(".*tmp*"))
    record = json.loads(records[0].read_text())
    assert record["accepted"] and record["deviation"]["mean"] <= aot_package.MAX_MEAN_DEVIATION

    lines = []
    model = PackagedModel(net, "int8", cache, log=lines.append)
    frames = to_input(calibration_frames(64, 96)[4:5])
    with torch.inference_mode():
        got, want = model(frames), net(frames)
    assert any("from the cache" in line for line in lines) and not any("compiling" in line for line in lines)
    dev = aot_package.deviation(got, want)
    assert dev["mean"] < 1.5 and dev["p99"] <= 8, dev  # int8 quantizes: close, not equal
    assert dev["max"] > 0  # and it did quantize


def test_an_int8_build_that_strays_is_rejected_once_and_fp32_runs(tmp_path, monkeypatch, net):
    monkeypatch.setattr(aot_package, "MAX_MEAN_DEVIATION", -1.0)  # no int8 passes
    lines = []
    model = PackagedModel(net, "int8", tmp_path, log=lines.append)
    x = to_input(calibration_frames(64, 96)[:1])
    with torch.inference_mode():
        y = model(x)
        torch.testing.assert_close(y, net(x), rtol=1e-4, atol=2e-3)  # fp32: the same function
    assert model.precision == "fp32"
    assert any("int8 not used for this model" in line for line in lines)
    records = {json.loads(p.read_text())["precision"]: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert not records["int8"]["accepted"] and records["fp32"]["accepted"]
    assert [p.name.split("-")[0] for p in tmp_path.glob("*.pt2")] == ["fp32"]  # no rejected package kept

    again = []  # a later chunk reads the verdict instead of quantizing again
    second = PackagedModel(net, "int8", tmp_path, log=again.append)
    with torch.inference_mode():
        assert torch.equal(second(x), y)
    assert not any("compiling" in line for line in again) and second.precision == "fp32"


def test_a_record_whose_package_is_missing_is_built_again(tmp_path):
    record, package = tmp_path / "k.json", tmp_path / "k.pt2"
    record.write_text(json.dumps({"accepted": True}))
    assert aot_package._read_record(record, package) is None  # interrupted between rename and record, or pruned
    package.write_bytes(b"")
    assert aot_package._read_record(record, package) == {"accepted": True}
    record.write_text("{not json")
    assert aot_package._read_record(record, package) is None


def test_a_damaged_package_in_the_cache_is_built_again(tmp_path, net):
    """A package that does not load (a full disk, a cache copied from elsewhere) is rebuilt once."""
    x = to_input(calibration_frames(48, 64)[:1])
    key = package_key(aot_package.model_digest(net), "fp32", tuple(x.shape))
    (tmp_path / f"{key}.pt2").write_bytes(b"not a package")
    (tmp_path / f"{key}.json").write_text(json.dumps({"precision": "fp32", "accepted": True}))
    lines = []
    model = PackagedModel(net, "fp32", tmp_path, log=lines.append)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), net(x), rtol=1e-4, atol=2e-3)
    assert any("does not load" in line for line in lines) and any("compiling a fp32" in line for line in lines)
    assert json.loads((tmp_path / f"{key}.json").read_text())["build_seconds"] > 0
