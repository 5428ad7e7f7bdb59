"""Building blocks of the EFM, written so every tensor that feeds a conv is an INT8 quantization point.

``QuantPoint`` marks where an activation quantizer goes. It is an identity in FP32;
``qdr_train.quant.prepare`` swaps it for a fake quantizer, so the architecture states its
own Q/DQ placement once and FP32 training, QAT and export all follow it.

Placement rule (what makes both TensorRT and ONNX Runtime run every conv as INT8): a
quantizer sits directly on each conv output, before ReLU, Add, Mul or the pixel shuffle.
ReLU then acts on the INT8 grid; at export the ReLU output is re-quantized with the same
scale (a no-op on values) so the runtimes see an INT8 ReLU instead of a float island.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuantPoint(nn.Identity):
    """Marks an activation tensor that is stored as INT8 in the deployed model."""


def _relu_on_grid(x: torch.Tensor, q: nn.Module) -> torch.Tensor:
    y = torch.relu(x)
    return q(y) if torch.onnx.is_in_onnx_export() else y


class ConvAct(nn.Module):
    """Conv, quantized at its output, then an optional ReLU on the same INT8 grid."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, act: bool = True,
                 bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias)
        self.act = act
        self.q = QuantPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.q(self.conv(x))
        return _relu_on_grid(y, self.q) if self.act else y


class Up(nn.Module):
    """2x nearest upsampling then a 1x1 conv, done at the low resolution first (same result, 4x cheaper).

    ``conv1x1(nearest(x)) == nearest(conv1x1(x))``; ONNX Runtime resizes INT8 tensors in place,
    where a transposed conv or a pixel shuffle inside the net would run in float or add layout
    transposes.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = ConvAct(cin, cout, kernel=1, act=False)
        self.q = QuantPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(F.interpolate(self.proj(x), scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity shortcut; the sum is quantized before the next conv reads it."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvAct(ch, ch), ConvAct(ch, ch, act=False))
        self.q = QuantPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x + self.body(x))


class GlobalContext(nn.Module):
    """Add a per-image, per-channel context vector (global average -> 1x1 conv -> ReLU) to every position.

    Haze density, airlight and exposure are properties of the whole frame that 3x3 layers at
    1/8 resolution cannot see; this gives the bottleneck a whole-frame view for the cost of
    one pooling and one 1x1 conv on a C-vector.
    """

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.q_pool = QuantPoint()
        self.proj = ConvAct(ch, ch, kernel=1)
        self.q = QuantPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x + self.proj(self.q_pool(F.adaptive_avg_pool2d(x, 1))))
