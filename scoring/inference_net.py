"""TransformerNet rearranged for inference: the same function in fewer, better-shaped convolutions.

Three of its layers use a CPU's vector units badly (profiled at 640x360 on AVX2, fp32: ~40% of
the width-16 forward pass eager, ~35% compiled):

- the upsampling layers upsample by 2 (nearest), reflect-pad by 1 and run a 3x3 convolution on
  the result, so over half of their multiplications repeat one on a copied pixel. Each of the
  four output phases (row and column parity) is a 2x2 convolution of the low-resolution input,
  replicate-padded by 1 (reflecting an upsampled edge repeats the edge pixel). One stride-2
  transposed convolution gives all four, written interleaved: 4/9 of the arithmetic, and no
  upsampled tensor.
- the last layer is a 9x9 convolution with 3 output channels, filling 3 of a vector register's
  8 or 16 lanes. As 9 output channels per colour from a 1x9 convolution (one per kernel row),
  summed down the rows by a grouped 9x1 convolution, it keeps the vector units full.

Both are sums of the same products in another order: outputs match the original to fp32
rounding (tests/scoring/test_inference_net.py checks widths, depths and odd sizes). Measured on
AVX2 (2026-12-02), fp32, compiled, alternating runs: 1.19x (width 16) and 1.20x (width 32);
eager 1.16-1.3x. A 2x2 convolution to 4x the channels plus an interleave gave the same saving
eager but only ~1.04x compiled: inductor's interleave cost it back. In bf16 on AMX the
rearranged net was 0.92x, so the scorer uses it for fp32 and int8 only. Checkpoints keep the original
layout; this is built from a loaded model.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn import functional as F

from scoring.transformer_net import ConvLayer, TransformerNet, UpsampleConvLayer

# Per axis: the 3 taps of a kernel over the upsampled, reflect-padded row, folded into the 2 taps
# each output phase sees over the replicate-padded low-resolution row (even outputs see the pixel
# before and the pixel itself; odd ones the pixel itself and the one after).
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
                            [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class TransposedUpsampleConv(nn.Module):
    """``UpsampleConvLayer(kernel 3, upsample 2)`` as one stride-2 transposed 4x4 convolution of
    the input, replicate-padded by 1: output phase (a, b) takes tap (3 - a - 2t, 3 - b - 2u) for
    its 2x2 window's pixel (t, u), and the transposed convolution writes the phases interleaved."""

    def __init__(self, layer: UpsampleConvLayer) -> None:
        super().__init__()
        weight, bias = layer.conv2d.weight.detach(), layer.conv2d.bias.detach()
        taps = _PHASE_TAPS.to(weight)
        phases = torch.einsum("aip,ocpq,bjq->abocij", taps, weight, taps)  # [a, b, out, in, t, u]
        kernel = weight.new_empty(weight.shape[1], weight.shape[0], 4, 4)  # transposed: [in, out, kh, kw]
        for a, b, t, u in itertools.product((0, 1), repeat=4):
            kernel[:, :, 3 - a - 2 * t, 3 - b - 2 * u] = phases[a, b, :, :, t, u].T
        self.weight = nn.Parameter(kernel, requires_grad=False)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # padding 3 crops the transposed convolution to the 2h x 2w the padded input stands for
        return F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.weight, self.bias,
                                  stride=2, padding=3)


class RowSumConv(nn.Module):
    """``ConvLayer`` (reflect pad, KxK, stride 1) as a 1xK convolution to K channels per output
    channel, one per kernel row, summed down the rows by a grouped Kx1 convolution."""

    def __init__(self, layer: ConvLayer) -> None:
        super().__init__()
        weight, bias = layer.conv2d.weight.detach(), layer.conv2d.bias.detach()
        out_channels, in_channels, k, _ = weight.shape
        self.reflection_pad = layer.reflection_pad
        self.rows = nn.Conv2d(in_channels, out_channels * k, (1, k), bias=False)
        self.rows.weight = nn.Parameter(weight.permute(0, 2, 1, 3).reshape(out_channels * k, in_channels, 1, k)
                                        .contiguous(), requires_grad=False)
        # Output channel o takes row i of its own K channels from i rows further down.
        self.sum = nn.Conv2d(out_channels * k, out_channels, (k, 1), groups=out_channels)
        self.sum.weight = nn.Parameter(torch.eye(k).to(weight).repeat(out_channels, 1).view(out_channels, k, k, 1),
                                       requires_grad=False)
        self.sum.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum(self.rows(self.reflection_pad(x)))


def for_inference(model: TransformerNet) -> TransformerNet:
    """A copy of ``model`` with its upsampling layers and its last layer rearranged; ``model``
    itself is left as it is (the checkpoint's layout, for saving, training and references)."""
    fast = copy.deepcopy(model)  # TransformerNet fixes these layers' shapes: x2, 3x3; 9x9 to RGB
    fast.deconv1, fast.deconv2 = TransposedUpsampleConv(fast.deconv1), TransposedUpsampleConv(fast.deconv2)
    fast.deconv3 = RowSumConv(fast.deconv3)
    return fast.eval().requires_grad_(False)
