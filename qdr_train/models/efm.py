"""Edge-Friendly Model (EFM): encoder, bottleneck, decoder with Learnable Degradation Gating.

Shape of the graph (why it is fast in INT8): every layer is a conv, ReLU, add, sigmoid,
mul, nearest resize or one final pixel shuffle, so TensorRT and ONNX Runtime run each conv
as an INT8 kernel. Down-sampling is a stride-2 conv; the image is touched at full
resolution only by the first conv and the final pixel shuffle; the heavy layers run at 1/8
resolution, where a wide bottleneck is cheap.

Learnable Degradation Gating (LDG): a one-channel map ``g = sigmoid(conv3x3(d1))`` computed
from the half-resolution decoder features, which see both local texture and the bottleneck's
context. The correction is ``y = x + T(g * d1)``, where ``T`` is a bias-free 1x1 conv to 12 channels
followed by a 2x pixel shuffle. ``T`` maps each half-resolution pixel to its own 2x2 output
block, so ``T(g * d1) = g * T(d1)`` block-wise: ``g`` is exactly how much of its correction the net
applies at each place. Where the frame is clean ``g -> 0`` and pixels pass through unchanged;
where degradation is strong ``g -> 1``. The gate is also a cheap diagnostic: it is a map of
where the net found degradation.

``exact_skip``: the residual adds the input ``x`` itself, not its INT8-quantized copy. The INT8
input grid has ~122 levels for 256 camera values, so a quantized skip shifts about half of all
pixel values even where the gate is shut. The final Add then has no Q/DQ of its own (TensorRT
runs it in FP16/FP32; every conv stays INT8), and a gate below half an INT8 step of its
quantizer makes the correction exactly zero: a clean 8-bit frame comes back bit for bit.

``gate_floor``: a dead zone, ``g = relu(sigmoid(z) - gate_floor)``. A sigmoid never reaches 0, and in
INT8 a gate shuts only below half a step of its quantizer (logit < -5.5), which supervision alone
rarely pushes a clean textured region to. Below the floor the correction is exactly zero; the gate
loss supervises the sigmoid before the floor (``gate_prob``), which keeps a gradient there.

``clean_shuts_gate`` (needs the condition head): the head's probability that the whole frame is
clean joins the floor, ``g = relu(sigmoid(z) - gate_floor - P(clean))``. The head judges the whole
frame where the local gate sees texture at half resolution: a frame the head is sure of passes bit
for bit, a degraded one (P(clean) ~ 0) keeps its local gate, and a doubtful one is corrected only
where the local gate is surer than the head (measurements: docs/training.md, the auto model).
``clean_gain`` scales the head's share, ``g = relu(sigmoid(z) - gate_floor - clean_gain * P(clean))``:
with a gain above 1 a frame the head calls clean only half-surely still passes unchanged, while a
degraded frame (P(clean) ~ 0) keeps its gate. It changes no weight, so it can be set after training.

``fine_blocks``: residual blocks on the half-resolution decoder features, before the gate and tail.
Noise and rain streaks are fine-scale: without them the only half-resolution layers are two encoder
convs and one decoder conv of ``widths[0]`` channels, while the 1/8-resolution bottleneck holds most of
the compute. Each block's last conv starts at zero, so a block is the identity when it is added to a
trained model (``init=``): the warm-started net starts exactly where its parent ended.

``deep_blocks``: residual blocks after the 1/8-resolution bottleneck (its global context included),
added the same way. Haze density and exposure are whole-frame properties that the fine blocks,
with their half-resolution view, do not see; these blocks work where the context vector has
already reached every position.

``condition_head``: what the camera sees, as one logit per label of ``LABELS`` (several at once:
night is lowlight and noise), from the globally pooled bottleneck through two 1x1 convs.
"""

from __future__ import annotations

import torch
from torch import nn

import torch.nn.functional as F

from qdr_train.data.degradations import LABELS
from qdr_train.models.blocks import ConvAct, GlobalContext, QuantPoint, ResBlock, Up
from qdr_train.models.registry import register

CONDITION_HIDDEN = 32


def _identity_block(ch: int) -> ResBlock:
    """Build a residual block whose last conv is zero: added to a trained net (``init=``), it changes nothing."""
    block = ResBlock(ch)
    nn.init.zeros_(block.body[-1].conv.weight)
    nn.init.zeros_(block.body[-1].conv.bias)
    return block


@register
class EFM(nn.Module):
    """Restore a degraded RGB image in [0, 1]; H and W must be multiples of ``stride`` (8).

    ``head_relu=False`` keeps the half-resolution features that feed the gate and the tail
    linear: with a ReLU there, a sparse degradation (rain) can drive every unit dead, which is
    a stable "change nothing" solution the net never leaves.

    The argument defaults are the first graph's, not the configs' (``configs/default.yaml`` holds
    those): a model file stores the keys that existed when it was trained, and
    ``registry.resolved_model_config`` fills the missing ones from these defaults, the graph it was.
    """

    stride = 8

    labels = LABELS

    def __init__(self, widths: tuple[int, int, int] | list[int] = (16, 32, 64), num_blocks: int = 2,
                 global_context: bool = False, head_relu: bool = True, exact_skip: bool = False,
                 condition_head: bool = False, gate_floor: float = 0.0, clean_shuts_gate: bool = False,
                 clean_gain: float = 1.0, fine_blocks: int = 0, deep_blocks: int = 0) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.q_in = QuantPoint()
        self.enc1 = nn.Sequential(ConvAct(3, c1, stride=2), ConvAct(c1, c1))
        self.enc2 = nn.Sequential(ConvAct(c1, c2, stride=2), ConvAct(c2, c2))
        self.enc3 = ConvAct(c2, c3, stride=2)
        blocks: list[nn.Module] = [ResBlock(c3) for _ in range(num_blocks)]
        self.bottleneck = nn.Sequential(*(blocks + [GlobalContext(c3)] if global_context else blocks))
        self.deep = nn.Sequential(*(_identity_block(c3) for _ in range(deep_blocks)))
        self.up2 = Up(c3, c2)
        self.skip2 = QuantPoint()
        self.dec2 = ConvAct(c2, c2)
        self.up1 = Up(c2, c1)
        self.skip1 = QuantPoint()
        self.dec1 = ConvAct(c1, c1, act=head_relu)
        self.fine = nn.Sequential(*(_identity_block(c1) for _ in range(fine_blocks)))
        self.gate_logit = ConvAct(c1, 1, act=False)
        self.gate = QuantPoint()
        self.gated = QuantPoint()
        self.tail = ConvAct(c1, 12, kernel=1, act=False, bias=False)
        self.exact_skip = exact_skip
        if not 0.0 <= gate_floor < 1.0:
            raise ValueError(f"gate_floor must be in [0, 1), got {gate_floor}")
        self.gate_floor = gate_floor
        if clean_shuts_gate and not condition_head:
            raise ValueError("clean_shuts_gate needs condition_head: the clean probability comes from the head")
        self.clean_shuts_gate = clean_shuts_gate
        if clean_gain < 0.0:
            raise ValueError(f"clean_gain must be >= 0, got {clean_gain}")
        self.clean_gain = clean_gain
        self.condition = (nn.Sequential(QuantPoint(), ConvAct(c3, CONDITION_HIDDEN, kernel=1),
                                        ConvAct(CONDITION_HIDDEN, len(LABELS), kernel=1, act=False))
                          if condition_head else None)
        self._init_correction_path()

    def _init_correction_path(self) -> None:
        """Start as the identity with the gate open: a zero tail and a positive gate bias.

        With random tail weights the first steps' correction is noise, and the cheapest way to
        lower the loss is to close the gate; a closed sigmoid gate has no gradient and the net
        never recovers (seen on sparse rain). A zero tail gives the gate no gradient until the
        correction is useful.
        """
        nn.init.zeros_(self.tail.conv.weight)
        nn.init.constant_(self.gate_logit.conv.bias, 1.0)

    def forward(self, x: torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Restored image; with ``return_features`` also the named internal tensors (through DDP too)."""
        y, feats = self.forward_features(x)
        return (y, feats) if return_features else y

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Restored image plus the named internal tensors that distillation and diagnostics read.

        ``bottleneck`` is the 1/8-resolution output of the residual blocks, deep blocks included (the DFD
        target);
        ``decoder`` holds the decoder features at 1/4 and 1/2 resolution (never distilled by QDR,
        kept for the decoder-distillation baseline); ``gate`` is the LDG map at 1/2 resolution
        (``gate_prob`` its sigmoid before the floor, ``gate_logit`` the logit under it);
        ``condition`` (with the condition head) the (N, len(LABELS)) logits.
        """
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"EFM input {h}x{w} is not a multiple of {self.stride}; pad it first")
        xq = self.q_in(x)
        e1 = self.enc1(xq)
        e2 = self.enc2(e1)
        b = self.deep(self.bottleneck(self.enc3(e2)))
        d2 = self.dec2(self.skip2(self.up2(b) + e2))
        d1 = self.fine(self.dec1(self.skip1(self.up1(d2) + e1)))
        condition = None if self.condition is None else self.condition(F.adaptive_avg_pool2d(b, 1)).flatten(1)
        z = self.gate_logit(d1)
        p = torch.sigmoid(z)
        floor: torch.Tensor | float = self.gate_floor
        if self.clean_shuts_gate:
            clean = LABELS.index("clean")
            floor = floor + self.clean_gain * torch.sigmoid(condition[:, clean:clean + 1]).view(-1, 1, 1, 1)
        g = self.gate(torch.relu(p - floor) if self.clean_shuts_gate or self.gate_floor else p)
        y = (x if self.exact_skip else xq) + F.pixel_shuffle(self.tail(self.gated(g * d1)), 2)
        feats = {"bottleneck": b, "decoder": torch.cat([d2.flatten(1), d1.flatten(1)], 1), "gate": g,
                 "gate_prob": p, "gate_logit": z}
        if condition is not None:
            feats["condition"] = condition
        return y, feats
