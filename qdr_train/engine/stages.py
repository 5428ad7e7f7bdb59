"""Stages: which model is trained and with which objective.

``fp32`` trains the EFM teacher with the reconstruction loss. The INT8 stages build on the
same trainer by supplying a fake-quantized model and their own objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from qdr_train.data.datasets import TrainBatches
from qdr_train.engine.checkpoint import load_model
from qdr_train.losses.restoration import RestorationLoss
from qdr_train.models import build_model


class ReconstructionObjective(nn.Module):
    """Plain supervised restoration: loss(model(lq), gt)."""

    def __init__(self, loss: RestorationLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, model: nn.Module, lq: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.loss(model(lq), gt)
        return loss, {"rec": float(loss.detach())}


@dataclass
class Stage:
    model: nn.Module
    objective: nn.Module


def _fp32(cfg: dict[str, Any], device: torch.device, batches: TrainBatches) -> Stage:
    if cfg["init"]:
        model, _ = load_model(cfg["init"])
    else:
        model = build_model(cfg["model"])
    return Stage(model.to(device), ReconstructionObjective(RestorationLoss(**cfg["loss"])).to(device))


STAGES: dict[str, Callable[[dict[str, Any], torch.device, TrainBatches], Stage]] = {"fp32": _fp32}


def build_stage(cfg: dict[str, Any], device: torch.device, batches: TrainBatches) -> Stage:
    if cfg["stage"] not in STAGES:
        raise ValueError(f"unknown stage {cfg['stage']!r}; known: {sorted(STAGES)}")
    return STAGES[cfg["stage"]](cfg, device, batches)
