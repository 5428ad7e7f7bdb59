"""Reconstruction loss between a restored image and its clean target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RestorationLoss(nn.Module):
    """``l1 * |y - gt| + mse * (y - gt)^2 + fft * |(|F(y)| - |F(gt)|)|``.

    L1 trains robustly from scratch; PSNR is an MSE measure, so a short MSE fine-tune of an
    L1-trained model moves it to the PSNR optimum. The FFT-amplitude term penalises lost high
    frequencies that a plain L1 tolerates (L1 alone over-smooths fine texture).
    """

    def __init__(self, l1: float = 1.0, fft: float = 0.0, mse: float = 0.0) -> None:
        super().__init__()
        if min(l1, fft, mse) < 0 or l1 + fft + mse == 0:
            raise ValueError(f"loss weights must be >= 0 and not all zero (l1={l1}, mse={mse}, fft={fft})")
        self.l1, self.fft, self.mse = l1, fft, mse

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = pred.new_zeros(())
        if self.l1:
            loss = loss + self.l1 * F.l1_loss(pred, target)
        if self.mse:
            loss = loss + self.mse * F.mse_loss(pred, target)
        if self.fft:
            pf = torch.fft.rfft2(pred.float(), norm="ortho").abs()
            tf = torch.fft.rfft2(target.float(), norm="ortho").abs()
            loss = loss + self.fft * F.l1_loss(pf, tf)
        return loss
