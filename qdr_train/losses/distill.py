"""Distillation losses between a student and its teacher (no knowledge of quantization)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FeatureDistillLoss(nn.Module):
    """MSE between student and teacher features, normalised by the teacher's mean square.

    The normalisation makes the loss scale-free (features of different layers and tasks have
    very different magnitudes), so one weight means the same thing everywhere.
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        teacher = teacher.detach()
        return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp_min(1e-8)


class OutputDistillLoss(nn.Module):
    """L1 between the student's and the teacher's restored images."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(student, teacher.detach())
