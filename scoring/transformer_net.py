"""The fast-neural-style TransformerNet (Johnson et al. 2016).

Same module names and layout as pytorch/examples' ``fast_neural_style``, so its checkpoints
load unchanged; ``width`` and ``blocks`` generalise the channel count (32) and the number of
residual blocks (5) for smaller, faster models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class UpsampleConvLayer(nn.Module):
    """Nearest upsampling then convolution: avoids the checkerboard of transposed convs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    """Image transformation network; takes and returns RGB in the 0..255 range."""

    def __init__(self, width: int = 32, blocks: int = 5) -> None:
        super().__init__()
        if width < 1 or blocks < 0:
            raise ValueError(f"width must be >= 1 and blocks >= 0, got width={width} blocks={blocks}")
        self.width, self.blocks = width, blocks
        w = width
        self.conv1 = ConvLayer(3, w, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(w, affine=True)
        self.conv2 = ConvLayer(w, 2 * w, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(2 * w, affine=True)
        self.conv3 = ConvLayer(2 * w, 4 * w, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(4 * w, affine=True)
        for i in range(1, blocks + 1):
            self.add_module(f"res{i}", ResidualBlock(4 * w))
        self.deconv1 = UpsampleConvLayer(4 * w, 2 * w, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(2 * w, affine=True)
        self.deconv2 = UpsampleConvLayer(2 * w, w, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(w, affine=True)
        self.deconv3 = ConvLayer(w, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        for i in range(1, self.blocks + 1):
            y = getattr(self, f"res{i}")(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


def stylize_batch(model: nn.Module, frames: torch.Tensor,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Run ``model`` on uint8 NHWC frames of any size; returns uint8 NHWC of the same size.

    The network halves the resolution twice, so sides are reflect-padded to a multiple of 4
    and the output cropped back: every input pixel has an output pixel.
    """
    _, h, w, _ = frames.shape
    x = frames.permute(0, 3, 1, 2).float().contiguous(memory_format=memory_format)
    pad_h, pad_w = (-h) % 4, (-w) % 4
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    y = model(x)[:, :, :h, :w]
    return y.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def stylize_image(model: nn.Module, rgb: np.ndarray) -> np.ndarray:
    """One uint8 HxWx3 image through ``model`` (fp32, eager): previews, training checks, flicker."""
    with torch.inference_mode():
        return stylize_batch(model, torch.from_numpy(np.require(rgb, requirements=("C", "W")))[None])[0].numpy()
