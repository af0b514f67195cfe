"""Compiled models on a CPU as AOTInductor packages: built once per model, size and machine, then
loaded by every chunk process in a fraction of a second.

A chunk process that ``torch.compile``s imports dynamo and inductor and compiles its graph
again: ~5 s of every chunk's start-up even with inductor's caches warm (measured on AVX2,
2026-12-02: dynamo's trace 1.2 s, lowering and code generation 3.2 s), and int8 adds torchao's
import and calibration (~10 s). A package holds the compiled graph as a shared library with the
weights frozen in: loading it and running the first frame took 0.2-0.3 s, and frames run at the
speed ``torch.compile`` gives them (ratio 1.02, outputs identical).

Packages live in ``$VIDSTYLE_AOT_CACHE`` (default ``~/.cache/vidstyle/aot``), one per key:
the model's weights and architecture, precision, input shape, the recipe, torch's (and
torchao's) version, the CPU and its instruction-set caps, and the thread count (inductor
writes it into the kernels). The first chunk on a worker builds one (30-60 s) under a file lock
while the worker's other chunk processes wait for it; a package is written under a temporary
name and renamed, so a crash never leaves a half-written one. Each key's record (JSON, written
last) says how the package was checked: an int8 package whose outputs stray from fp32 by more
than ``MAX_MEAN_DEVIATION`` on average or ``MAX_P999_DEVIATION`` at the 99.9th percentile is
recorded as rejected, and that model runs in fp32 on this machine from then on.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scoring.machine import cpu_name
from scoring.quantize import RECIPE, calibration_frames, quantize_residual_blocks, to_input

CACHE_ENV = "VIDSTYLE_AOT_CACHE"
PRECISIONS = ("fp32", "int8")
# int8's guard, in levels of 255 against the same network in fp32 (measured: mean 0.3-0.5, p99.9 3-6).
MAX_MEAN_DEVIATION = 1.0
MAX_P999_DEVIATION = 8
_ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")

Runner = Callable[[torch.Tensor], torch.Tensor]


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidstyle" / "aot"


def machine_fingerprint() -> dict[str, object]:
    """What a compiled package depends on besides the model and the shape."""
    versions = {"torch": torch.__version__}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        versions["torchao"] = importlib.metadata.version("torchao")
    return versions | {"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
                       "threads": torch.get_num_threads(),
                       **{name: os.environ.get(name, "") for name in _ISA_ENV}}


def model_digest(model: nn.Module) -> str:
    """The weights and the architecture: two checkpoints with the same bytes share packages."""
    h = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def package_key(digest: str, precision: str, shape: tuple[int, ...]) -> str:
    recipe = {"recipe": RECIPE} if precision == "int8" else {}  # a new int8 recipe leaves fp32 packages be
    text = json.dumps({"model": digest, "precision": precision, "shape": list(shape), **recipe,
                       **machine_fingerprint()}, sort_keys=True)
    return f"{precision}-{'x'.join(map(str, shape))}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (released by the kernel if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent builds only repeat work, renames stay atomic
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_package(path: Path) -> Runner:
    """Loads without importing inductor (~2 s) where torch's loader is at hand."""
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    except (AttributeError, TypeError):  # another torch: the public loader
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(path))
    return lambda x: loader.run([x])[0]


def deviation(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    """Per-pixel |got - want| of two outputs as 8-bit frames, in levels of 255."""
    d = (got.clamp(0, 255).round() - want.clamp(0, 255).round()).abs().flatten().numpy()
    return {"mean": round(float(d.mean()), 3), "p99": float(np.percentile(d, 99)),
            "p999": float(np.percentile(d, 99.9)), "max": float(d.max())}


def accepted(dev: dict[str, float]) -> bool:
    return dev["mean"] <= MAX_MEAN_DEVIATION and dev["p999"] <= MAX_P999_DEVIATION


class PackagedModel:
    """``model`` (fp32, eval) compiled for this CPU in ``precision`` (fp32 or int8) as a package
    per input shape, built or loaded on the first input of each shape. Inputs and outputs are
    float NCHW, channels-last, like the model's. ``precision`` falls to fp32 where int8 is rejected."""

    def __init__(self, model: nn.Module, precision: str = "fp32", cache: Path | None = None,
                 log: Callable[[str], None] = lambda m: print(m, flush=True)) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"packages are built in {' or '.join(PRECISIONS)}, not {precision!r}")
        self.model, self.precision, self.log = model.eval(), precision, log
        self.cache = cache or cache_dir()
        self._digest = model_digest(model)
        self._runners: dict[tuple[int, ...], Runner] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # the layout the package was built for
        shape = tuple(x.shape)
        if shape not in self._runners:
            with torch.inference_mode(False):  # export and calibration need ordinary tensors
                self._runners[shape] = self._obtain(x)
        return self._runners[shape](x)

    def _obtain(self, x: torch.Tensor) -> Runner:
        self.cache.mkdir(parents=True, exist_ok=True)
        if self.precision == "int8":
            runner = self._obtain_in("int8", x)
            if runner is not None:
                return runner
            self.precision = "fp32"
        runner = self._obtain_in("fp32", x)
        assert runner is not None  # fp32 is never rejected
        return runner

    def _obtain_in(self, precision: str, x: torch.Tensor, retry: bool = True) -> Runner | None:
        key = package_key(self._digest, precision, tuple(x.shape))
        package, record_path = self.cache / f"{key}.pt2", self.cache / f"{key}.json"
        shape = "x".join(map(str, x.shape))
        with _locked(self.cache / f"{key}.lock"):
            record = _read_record(record_path, package)
            if record is None:
                record = self._build(precision, x, package)
                _write_atomically(record_path, json.dumps(record, indent=2))
            else:
                self.log(f"compiled {precision} package for {shape} from the cache ({package.name})")
        dev = record.get("deviation")
        if not record["accepted"]:
            self.log(f"int8 not used for this model: its deviation from fp32 ({_words(dev)}) is over the "
                     f"limit (mean {MAX_MEAN_DEVIATION}, p99.9 {MAX_P999_DEVIATION}); running fp32")
            return None
        if dev:
            self.log(f"{precision}: deviation from fp32 on the calibration photos {_words(dev)}")
        try:
            return load_package(package)
        except Exception as exc:  # a damaged package (a full disk, a copied cache): build it once more
            if not retry:
                raise
            self.log(f"cached package {package.name} does not load ({type(exc).__name__}: {exc}); building it again")
            with _locked(self.cache / f"{key}.lock"):
                record_path.unlink(missing_ok=True)
                package.unlink(missing_ok=True)
            return self._obtain_in(precision, x, retry=False)

    def _build(self, precision: str, x: torch.Tensor, package: Path) -> dict:
        from torch._inductor import aoti_compile_and_package

        started = time.perf_counter()
        shape = "x".join(map(str, x.shape))
        self.log(f"compiling a {precision} package for {shape} (once per model, size and machine)")
        example = torch.zeros_like(x)
        with torch.no_grad():  # no grad: freezing folds and prepacks the weights
            graph = quantize_residual_blocks(self.model, example) if precision == "int8" else self.model
            program = torch.export.export(graph, (example,))
            tmp = package.with_name(f".{package.stem}.{os.getpid()}.pt2")
            aoti_compile_and_package(program, package_path=str(tmp), inductor_configs={"freezing": True})
        record: dict = {"precision": precision, "shape": list(x.shape), "accepted": True,
                        "build_seconds": round(time.perf_counter() - started, 1), **machine_fingerprint()}
        if precision == "int8":
            record["recipe"] = RECIPE
            record["deviation"] = self._check(load_package(tmp), x)
            record["accepted"] = accepted(record["deviation"])
        if record["accepted"]:
            os.replace(tmp, package)
        else:
            tmp.unlink()
        self.log(f"compiled the {precision} package in {record['build_seconds']} s")
        return record

    def _check(self, runner: Runner, x: torch.Tensor) -> dict[str, float]:
        """int8 against fp32 on two calibration photos, mirrored (the shapes and colours the
        calibration saw, not its very pixels)."""
        batch, _, height, width = x.shape
        photos = calibration_frames(height, width)[:, :, ::-1]
        got, want = [], []
        with torch.no_grad():
            for i in (0, len(photos) - 1):
                frame = to_input(np.ascontiguousarray(photos[[i] * batch]))
                got.append(runner(frame))
                want.append(self.model(frame))
        return deviation(torch.cat(got), torch.cat(want))


def _read_record(path: Path, package: Path) -> dict | None:
    """A key's record, if its build finished (a rejected int8 build has no package, by design)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("accepted") and not package.is_file():
        return None
    return record


def _words(dev: dict[str, float] | None) -> str:
    if not dev:
        return "not measured"
    return f"mean {dev['mean']}, p99 {dev['p99']:g}, p99.9 {dev['p999']:g}, max {dev['max']:g} of 255"
