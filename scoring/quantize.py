"""int8 residual blocks for CPUs without bf16: PyTorch's PT2E quantization flow for inductor on x86.

The residual blocks hold most of a TransformerNet's arithmetic (5 blocks of two 3x3
convolutions at 4x the width, a quarter of the resolution). Their convolutions run in int8
(oneDNN's VNNI or AVX2 int8 kernels: weights per channel, activations per tensor, calibrated
by histogram); the rest of the net stays fp32: the 9x9 layers on RGB and the upsampling
layers set the picture's detail, and quantizing them too cost more deviation for little speed
(measured 2026-12-02 on AVX2: residual blocks only, 1.30-1.33x the compiled fp32 forward pass,
deviation from fp32 mean 0.37, p99.9 4 levels of 255; all but the first and last layers 1.11x,
mean 0.43).

Calibration is on fixed photos (``scoring/calibration``) cropped to the chunk's own size, never
on the chunk's frames: every chunk of a video (same model, same size) gets the same scales, so
seams do not shift. Instance normalisation before every quantized convolution keeps their
inputs' ranges much the same whatever the picture: calibrated on two of the photos and checked
on the other two, the deviation was mean 0.31-0.49, p99.9 3-6 levels. Synthetic frames
(colour waves, discs, grain) calibrated worse (mean 1.0, p99.9 12). The caller checks the
result against fp32 before using it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
RECIPE = "residual-blocks-pt2e-x86-v1"  # part of a cached package's key: change it when the recipe changes


def int8_available() -> bool:
    """torchao's PT2E quantizer is installed (found without importing it: that costs ~5 s)."""
    return importlib.util.find_spec("torchao") is not None


def calibration_frames(height: int, width: int) -> np.ndarray:
    """The calibration frames at a chunk's size: each shipped photo cover-cropped whole and
    zoomed 1.6x on its centre (uint8, N x H x W x 3, always the same for a size)."""
    frames = []
    for path in sorted(CALIBRATION_DIR.glob("*.jpg")):
        with Image.open(path) as img:
            photo = img.convert("RGB")
        for zoom in (1.0, 1.6):
            scale = max(width / photo.width, height / photo.height) * zoom
            big = photo.resize((max(width, round(photo.width * scale)), max(height, round(photo.height * scale))),
                               Image.BILINEAR)
            left, top = (big.width - width) // 2, (big.height - height) // 2
            frames.append(np.asarray(big.crop((left, top, left + width, top + height))))
    if not frames:
        raise FileNotFoundError(f"no calibration photos in {CALIBRATION_DIR}")
    return np.stack(frames)


def to_input(frames: np.ndarray, memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """uint8 NHWC frames as the float NCHW tensor the network takes (0..255)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous(memory_format=memory_format)


def quantize_residual_blocks(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` (fp32, eval) exported at ``example``'s shape, with the convolutions of its
    ``res*`` children in int8, calibrated on the shipped photos at that shape. The result is an
    exported graph for ``torch.compile`` or AOTInductor (with freezing) to lower to oneDNN."""
    import torchao.quantization.pt2e.inductor_passes.x86  # noqa: F401  registers the int8 lowerings
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    for name, _ in model.named_children():
        if not name.startswith("res"):
            quantizer.set_module_name_qconfig(name, None)
    batch, _, height, width = example.shape
    frames = calibration_frames(height, width)
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(model, (example,)).module(), quantizer)
        for i in range(len(frames)):
            prepared(to_input(frames[[i] * batch], _memory_format(example)))
        return convert_pt2e(prepared)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
