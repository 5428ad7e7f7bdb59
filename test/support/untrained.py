"""Untrained EFMs whose output depends on every layer, for tests that compare two graphs of one model."""

from __future__ import annotations

import torch
from torch import nn


def with_live_correction(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give a freshly built EFM a random tail and non-identity added blocks, in place.

    A fresh EFM returns its input exactly (a zero tail, blocks that start as the identity: see
    ``EFM._init_correction_path``), so an export or graph edit that broke the encoder, the decoder
    or the gate would still match its reference: a comparison on such a model cannot fail.
    """
    gen = torch.Generator().manual_seed(seed)
    last_convs = [model.tail.conv] + [block.body[-1].conv for block in (*model.fine, *model.deep)]
    with torch.no_grad():
        for conv in last_convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
    return model
