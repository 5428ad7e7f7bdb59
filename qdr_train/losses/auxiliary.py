"""Auxiliary terms of a blind model: the LDG gate as a localiser and the condition head's labels.

Neither knows about quantization or distillation; the stages add them to whichever objective
they build, outside any learned reweighting (they supervise heads the teacher does not judge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qdr_train.losses.restoration import balance_weights


def degraded_mask(lq: torch.Tensor, gt: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    """1 where the input differs from its target by more than ``threshold`` 8-bit levels, at the gate's size."""
    diff = (lq - gt).abs().mean(1, keepdim=True) * 255.0
    return (F.adaptive_avg_pool2d(diff, size) > threshold).float()


class AuxiliaryLoss(nn.Module):
    """``gate * BCE(gate map, degraded mask) + condition * BCE(condition logits, labels)``.

    The gate target makes the gate shut where a crop is clean (a shut gate passes pixels bit
    for bit) and open where it is degraded, so the exported gate map says where the net works.
    A weight of 0 drops its term, and so does a model without a condition head (the specialists'
    older files), whose labels are constant anyway.
    """

    def __init__(self, gate: float = 0.0, gate_threshold: float = 3.0, condition: float = 0.0,
                 balance: float = 0.0) -> None:
        super().__init__()
        if min(gate, condition, gate_threshold, balance) < 0:
            raise ValueError(f"auxiliary weights and threshold must be >= 0 (gate={gate}, condition={condition}, "
                             f"gate_threshold={gate_threshold}, balance={balance})")
        self.gate, self.gate_threshold, self.condition, self.balance = gate, gate_threshold, condition, balance

    def weights(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor | None:
        """Per-image weights of the reconstruction loss (``balance_weights``), or None when balance is 0."""
        return balance_weights(lq, gt, self.balance) if self.balance else None

    @property
    def active(self) -> bool:
        return bool(self.gate or self.condition)

    def forward(self, feats: dict[str, torch.Tensor], lq: torch.Tensor, gt: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = lq.new_zeros(()), {}
        if self.gate:
            z = feats["gate_logit"].float()
            target = degraded_mask(lq, gt, tuple(z.shape[-2:]), self.gate_threshold)
            # on the logit: a clamped sigmoid has no gradient past |logit| ~ 14, where a gate stuck shut
            # on a degraded region (or open on a clean one) needs one most
            term = F.binary_cross_entropy_with_logits(z, target)
            loss, logs["gate_bce"] = loss + self.gate * term, float(term.detach())
        if self.condition and "condition" in feats:
            term = F.binary_cross_entropy_with_logits(feats["condition"].float(), labels)
            loss, logs["condition_bce"] = loss + self.condition * term, float(term.detach())
        return loss, logs
