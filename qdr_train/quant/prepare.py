"""Turn an FP32 model into its fake-quantized twin and calibrate its activation scales."""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn
from tqdm import tqdm

from qdr_train.models.blocks import QuantPoint
from qdr_train.quant.fake_quant import ActFakeQuant, QuantConv2d, QuantConvTranspose2d


def prepare_qat(model: nn.Module, percentile: float = 99.99) -> nn.Module:
    """Return a copy with every conv weight-quantized and every ``QuantPoint`` a quantizer."""
    qmodel = copy.deepcopy(model)
    for parent in list(qmodel.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantPoint):
                setattr(parent, name, ActFakeQuant(percentile))
            elif type(child) is nn.Conv2d:
                setattr(parent, name, QuantConv2d.from_float(child))
            elif type(child) is nn.ConvTranspose2d:
                setattr(parent, name, QuantConvTranspose2d.from_float(child))
    return qmodel.to(next(model.parameters()).device)


def quantizers(model: nn.Module) -> list[ActFakeQuant]:
    """All activation quantizers of a prepared model."""
    return [m for m in model.modules() if isinstance(m, ActFakeQuant)]


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], progress: bool = True) -> nn.Module:
    """Set every activation scale from data (PTQ calibration, also QAT's starting point)."""
    qs = quantizers(model)
    if not qs:
        raise ValueError("model has no activation quantizers; call prepare_qat first")
    was_training = model.training
    model.eval()
    for q in qs:
        q.observing = True
    for x in tqdm(batches, desc="calibrate", disable=not progress, leave=False):
        model(x)
    for q in qs:
        q.finish_calibration()
    model.train(was_training)
    return model
