"""Reconstruction loss between a restored image and its clean target."""

from __future__ import annotations

import torch
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

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Return the loss; ``weights`` (N,) weighs each image's terms (normalised to mean 1), else all alike."""
        w = None if weights is None else (weights / weights.mean()).detach()

        def mean(x: torch.Tensor) -> torch.Tensor:
            per_image = x.flatten(1).mean(1)
            return per_image.mean() if w is None else (per_image * w).mean()

        loss = pred.new_zeros(())
        if self.l1:
            loss = loss + self.l1 * mean((pred - target).abs())
        if self.mse:
            loss = loss + self.mse * mean((pred - target) ** 2)
        if self.fft:
            pf = torch.fft.rfft2(pred.float(), norm="ortho").abs()
            tf = torch.fft.rfft2(target.float(), norm="ortho").abs()
            loss = loss + self.fft * mean((pf - tf).abs())
        return loss


def balance_weights(lq: torch.Tensor, gt: torch.Tensor, floor: float) -> torch.Tensor:
    """Per-image weights ``1 / max(mean |input - target|, floor)`` (``floor`` in 8-bit levels).

    With one model for many conditions, a plain mean lets the conditions that change the frame most
    (low light, haze: errors of 50-130 levels) steer the shared weights while mild ones (a few rain
    streaks, sensor noise: 4-25 levels) are barely learned. Weighing each image by its input error
    asks for the same relative improvement everywhere; the floor keeps clean and near-clean images
    (error 0) from taking over.
    """
    error = (lq - gt).abs().flatten(1).mean(1) * 255.0
    return 1.0 / error.clamp_min(floor)
