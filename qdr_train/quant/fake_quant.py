"""Fake quantizers: one activation quantizer and conv layers with per-channel weight quantization."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QMIN, QMAX = -128, 127


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient."""
    return (x.round() - x).detach() + x


class ActFakeQuant(nn.Module):
    """Per-tensor signed INT8 activation quantizer with a learnable scale (LSQ).

    States: ``observing`` records the calibration amax and passes values through; then the
    scale is set from it and learned with LSQ's scaled gradient. In eval and export the op is
    ``torch.fake_quantize_per_tensor_affine``, which is what the ONNX file holds.
    """

    def __init__(self, percentile: float = 99.99) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.percentile = percentile
        self.observing = False
        self.register_buffer("amax_samples", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x)
            return x
        if self.training and self.scale.requires_grad and not torch.onnx.is_in_onnx_export():
            s = self.scale.abs().clamp_min(1e-8)
            g = 1.0 / (x.numel() * QMAX) ** 0.5
            s = (s - s * g).detach() + s * g
            return torch.clamp(_round_ste(x / s), QMIN, QMAX) * s
        return torch.fake_quantize_per_tensor_affine(x, float(self.scale.abs()), 0, QMIN, QMAX)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        flat = x.detach().abs().flatten().float()
        if flat.numel() > 1_000_000:
            flat = flat[torch.randint(flat.numel(), (1_000_000,), device=flat.device)]
        amax = torch.quantile(flat, self.percentile / 100.0) if self.percentile < 100 else flat.max()
        self.amax_samples = torch.cat([self.amax_samples.to(amax.device), amax.reshape(1)])

    @torch.no_grad()
    def finish_calibration(self) -> None:
        """Set the scale from the mean of the observed per-batch amax values."""
        if self.amax_samples.numel() == 0:
            raise RuntimeError("quantizer saw no data during calibration")
        self.scale.fill_(max(float(self.amax_samples.mean()), 1e-6) / QMAX)
        self.amax_samples = torch.zeros(0, device=self.scale.device)
        self.observing = False


class _WeightQuant:
    """Per-output-channel symmetric weight quantization with scales kept in a buffer.

    The buffer is refreshed from the weights on every forward outside export, so QAT always
    quantizes the current weights; at export it is a constant, which is what lets the ONNX
    exporter emit a constant-folded per-channel QuantizeLinear instead of float math.
    """

    weight: nn.Parameter
    w_scale: torch.Tensor
    ch_axis: int

    def _init_weight_quant(self, ch_axis: int) -> None:
        self.ch_axis = ch_axis
        shape = self.weight.shape[ch_axis]
        self.register_buffer("w_scale", torch.ones(shape))  # type: ignore[attr-defined]

    def quant_weight(self) -> torch.Tensor:
        w = self.weight
        if not torch.onnx.is_in_onnx_export():
            with torch.no_grad():
                dims = [d for d in range(w.dim()) if d != self.ch_axis]
                self.w_scale.copy_(w.abs().amax(dim=dims).clamp_min(1e-8) / QMAX)
        zero = torch.zeros_like(self.w_scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, self.w_scale, zero, self.ch_axis, QMIN, QMAX)


class QuantConv2d(nn.Conv2d, _WeightQuant):
    """Conv2d whose weight is fake-quantized per output channel (axis 0)."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d) -> "QuantConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        q.load_state_dict(conv.state_dict(), strict=False)
        q._init_weight_quant(0)
        return q.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quant_weight(), self.bias)


class QuantConvTranspose2d(nn.ConvTranspose2d, _WeightQuant):
    """ConvTranspose2d whose weight (in, out, kh, kw) is fake-quantized per output channel (axis 1)."""

    @classmethod
    def from_float(cls, conv: nn.ConvTranspose2d) -> "QuantConvTranspose2d":
        if conv.groups != 1:  # axis 1 then holds out/groups channels: one scale would serve every group
            raise ValueError(f"grouped ConvTranspose2d (groups={conv.groups}) has no per-output-channel "
                             "weight quantization here; use groups=1")
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.output_padding, conv.groups, conv.bias is not None, conv.dilation)
        q.load_state_dict(conv.state_dict(), strict=False)
        q._init_weight_quant(1)
        return q.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.quant_weight(), self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)
