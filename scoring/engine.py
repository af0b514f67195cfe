"""Batched inference over a stream of frames, with decode and encode overlapping the model.

reader thread (pulls the frame iterator: decoding) -> bounded queue -> model in batches ->
bounded queue -> writer thread (the write callback: encoding). Queues are bounded, so memory
stays flat however long the chunk is.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from scoring.aot_package import PackagedModel
from scoring.inference_net import for_inference
from scoring.quantize import int8_available
from scoring.transformer_net import TransformerNet, stylize_batch

_DONE = object()


@dataclass
class RunStats:
    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class DeviceError(RuntimeError):
    """The requested device is not usable on this machine."""


def pick_device(requested: str = "auto") -> torch.device:
    """auto: the GPU when torch sees one, else the CPU. Asking for a GPU that is not usable is an
    error naming why, never a silent fall back to a CPU (a GPU node that scores on its CPU would
    take hours and still bill as a GPU)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {requested}: {cuda_problem()}")
        if (device.index or 0) >= torch.cuda.device_count():
            raise DeviceError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cuda_problem() -> str:
    """Why torch sees no GPU, in words: no CUDA build, no device, or a driver too old for this build."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as exc:  # torch reports the driver or device problem here
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use a GPU: {exc}"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device"


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# int8: a TransformerNet's residual blocks quantized (scoring.quantize), compiled on a CPU only.
CHOICES = (*PRECISIONS, "int8")


# oneDNN's ISA caps below AVX-512 BF16 (ONEDNN_MAX_CPU_ISA): with one of them set, bf16 is emulated
# even on a CPU that has it. That is also how a CPU without bf16 is measured on one with it.
_ONEDNN_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX, not capped by ONEDNN_MAX_CPU_ISA: bf16 convolutions run in hardware
    (measured here: 1.4-2x fp32); elsewhere oneDNN emulates them, 2.4x slower than fp32."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_CAPS_WITHOUT_BF16:
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def pick_precision(requested: str, device: torch.device, compiled: bool = False) -> str:
    """auto: fp16 on a GPU; on a CPU bf16 where it runs natively (deviation from fp32 ~0.1/255 on
    average), else int8 residual blocks when compiled (~0.4/255; measured 1.3x the fp32 forward
    pass on AVX2), else fp32. The scoring benchmark reports each one's deviation."""
    if requested == "auto":
        if device.type == "cuda":
            return "fp16"
        if cpu_has_native_bf16():
            return "bf16"
        return "int8" if compiled and int8_available() else "fp32"
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of auto, {', '.join(CHOICES)}; got {requested!r}")
    if requested == "fp16" and device.type == "cpu":
        raise ValueError("fp16 is for GPUs; on a CPU use bf16, int8 or fp32")
    if requested == "int8" and device.type != "cpu":
        raise ValueError("int8 is for CPUs without bf16; on a GPU use fp16")
    if requested == "int8" and not int8_available():
        raise ValueError("int8 needs torchao (the scorer extra installs it)")
    return requested


def auto_batch_size(device: torch.device, frame_shape: Callable[[], tuple[int, int]], model_width: int = 32) -> int:
    """CPU: 1 (measured fastest here: bigger batches only add cache pressure). GPU: as many
    frames as fit in ~40% of free memory, by the activations' rough size per pixel.
    ``frame_shape`` gives (height, width); it is only called on a GPU."""
    if device.type != "cuda":
        return 1
    height, width = frame_shape()
    free, _ = torch.cuda.mem_get_info(device)
    per_frame = height * width * model_width * 24  # bytes: a few live activations in fp16
    return max(1, min(32, int(free * 0.4 // per_frame)))


# torch.compile costs ~20 s the first time a worker compiles a shape (~6 s from inductor's
# on-disk cache, shared by the worker's chunk processes) and saves ~30-60% of each frame's
# forward pass on a CPU: it pays from about this many pixels in a chunk (~90 frames at 640x360).
COMPILE_PAYS_PIXELS = 20_000_000


def compile_pays(frames: int, width: int, height: int, threshold: int = COMPILE_PAYS_PIXELS) -> bool:
    return frames * width * height >= threshold


class Scorer:
    """The model on its device in inference mode, with optional reduced precision and compiling.

    Compiled on a CPU in fp32 or int8, a TransformerNet runs as an AOTInductor package
    (``scoring.aot_package``: built once per model, size and machine, loaded by each chunk in
    ~0.2 s); int8 quantizes its residual blocks (``scoring.quantize``). Compiled in bf16 or on a
    GPU it runs under ``torch.compile`` with autocast. Either way the weights are frozen into
    the graph (constants folded, convolution weights prepacked for oneDNN) and tensors are
    channels-last, the layout those kernels want. Eager on a CPU stays NCHW, measured 26% faster
    than channels-last there. In fp32 and int8 on a CPU a TransformerNet runs rearranged
    (``scoring.inference_net``): the same function in better-shaped convolutions, measured 1.2x
    compiled on AVX2. Not in bf16, where it was 0.92x on AMX, nor on a GPU, where it is unmeasured."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 compile: bool = False) -> None:
        self.device, self._precision = device, pick_precision(precision, device, compiled=compile)
        if self._precision == "int8" and not (compile and isinstance(model, TransformerNet)):
            why = "a TransformerNet compiled" if compile else "compiled"
            print(f"int8 runs only {why}: running fp32", flush=True)
            self._precision = "fp32"
        self.memory_format = torch.channels_last if compile or device.type == "cuda" else torch.contiguous_format
        if isinstance(model, TransformerNet) and device.type == "cpu" and self._precision in ("fp32", "int8"):
            model = for_inference(model)
        self.eager = model.to(device, memory_format=self.memory_format).eval()
        self.model = self.eager
        self.compiled = False
        if compile:
            try:
                self.model = self._compiled()
                self.compiled = True
            except Exception as exc:  # compile support varies by platform
                print(f"compiling unavailable ({type(exc).__name__}: {exc}); running eager", flush=True)
                self._to_eager()

    @property
    def precision(self) -> str:
        """What the frames run in; a package's int8 may have fallen to fp32 on its check."""
        return self.model.precision if isinstance(self.model, PackagedModel) else self._precision

    def _compiled(self) -> torch.nn.Module | PackagedModel:
        if self.device.type == "cpu" and self._precision in ("fp32", "int8"):
            return PackagedModel(self.eager, self._precision)
        return torch.compile(self.eager, dynamic=False, options={"freezing": True})

    def _to_eager(self) -> None:
        self.model, self.compiled = self.eager, False
        if self._precision == "int8":
            self._precision = "fp32"
        if self.device.type == "cpu":  # eager on a CPU is faster in NCHW
            self.memory_format = torch.contiguous_format
            self.eager.to(memory_format=self.memory_format)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 NHWC in, uint8 NHWC out."""
        x = torch.from_numpy(frames)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        try:
            y = self._forward(x)
        except Exception as exc:
            if not self.compiled:
                raise
            # Compilation fails lazily, on the first call: fall back to eager for good.
            print(f"compiling failed ({type(exc).__name__}: {exc}); running eager", flush=True)
            self._to_eager()
            y = self._forward(x)
        return y.cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = PRECISIONS.get(self.precision, torch.float32)  # int8 is in the graph, not autocast
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            return stylize_batch(self.model, x, self.memory_format)


class _Worker(threading.Thread):
    """A thread whose exception is re-raised in the caller rather than lost."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def stylize_stream(
    scorer: Scorer,
    frames: Iterable[tuple[Hashable, np.ndarray]],
    write: Callable[[Hashable, np.ndarray], None],
    *,
    batch_size: int = 1,
    total: int | None = None,
    progress: Callable[[RunStats, int | None], None] | None = None,
) -> RunStats:
    """Stylize every ``(key, uint8 HxWx3 frame)`` of ``frames`` in order; ``write(key, styled)`` each.

    ``frames`` is pulled in a reader thread and ``write`` runs in a writer thread: a lazy
    decoder and an encoder there overlap the model in this one."""
    stats = RunStats()
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=batch_size * 3)
    encoded: queue.Queue = queue.Queue(maxsize=batch_size * 3)

    def read() -> None:
        for item in frames:
            _put(decoded, item, stop)
            if stop.is_set():
                return
        _put(decoded, _DONE, stop)

    def write_all() -> None:
        while True:
            item = encoded.get()
            if item is _DONE:
                return
            for key, frame in item:
                write(key, frame)

    reader, writer = _Worker(read, "reader"), _Worker(write_all, "writer")
    start = time.perf_counter()
    reader.start()
    writer.start()
    try:
        batch: list[tuple[Hashable, np.ndarray]] = []
        while True:
            item = _get(decoded, reader, writer)
            end = item is _DONE
            # A size change flushes the batch: frames of one batch must share a shape.
            if batch and (end or len(batch) == batch_size or item[1].shape != batch[0][1].shape):
                _run_batch(scorer, batch, stats, encoded, stop)
                batch = []
                if progress:
                    progress(_snapshot(stats, start), total)
            if end:
                break
            batch.append(item)
        _put(encoded, _DONE, stop)
        while writer.is_alive():
            writer.join(timeout=0.2)
            writer.check()
        writer.check()
    finally:
        stop.set()
    stats.seconds = time.perf_counter() - start
    return stats


def _get(q: queue.Queue, *workers: _Worker) -> object:
    while True:
        for w in workers:
            w.check()
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            continue


def _run_batch(scorer: Scorer, batch, stats: RunStats, encoded: queue.Queue, stop: threading.Event) -> None:
    t0 = time.perf_counter()
    y = scorer(np.stack([f for _, f in batch]))
    stats.model_seconds += time.perf_counter() - t0
    stats.frames += len(batch)
    _put(encoded, [(key, y[i]) for i, (key, _) in enumerate(batch)], stop)


def _snapshot(stats: RunStats, start: float) -> RunStats:
    stats.seconds = time.perf_counter() - start
    return stats
