"""PSNR and SSIM for restoration results, on RGB and on the BT.601 Y channel.

The numpy functions score the deployed ``uint8`` HxWx3 RGB outputs, so a reported number is
the one a robot sees. They follow BasicSR's ``calculate_psnr`` / ``calculate_ssim`` (Y as in
MATLAB ``rgb2ycbcr``, unrounded float64; SSIM of Wang et al. with an 11x11 Gaussian window,
sigma 1.5, averaged over channels), so numbers compare with published tables.
``psnr_torch`` is a cheap batched PSNR for validation during training.

Identical images have infinite PSNR: ``float('inf')`` is returned rather than an arbitrary cap,
so a perfect result is never confused with a very good one.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

__all__ = ["psnr", "ssim", "image_metrics", "psnr_torch", "rgb_to_y"]

_MAX = 255.0
_SSIM_C1 = (0.01 * _MAX) ** 2
_SSIM_C2 = (0.03 * _MAX) ** 2
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def _check_pair(a: np.ndarray, b: np.ndarray, crop_border: int) -> None:
    """Reject inputs that would make a silently wrong score."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8, got {x.dtype}")
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"{name} must be HxWx3 RGB, got shape {x.shape}")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if crop_border < 0 or 2 * crop_border >= min(a.shape[:2]):
        raise ValueError(f"crop_border={crop_border} leaves nothing of a {a.shape[0]}x{a.shape[1]} image")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 Y in [16, 235] as float64 (MATLAB ``rgb2ycbcr``), unrounded like BasicSR."""
    return 16.0 + img.astype(np.float64) @ _Y_COEFFS / 255.0


def _prepare(a: np.ndarray, b: np.ndarray, y_channel: bool, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate, crop and convert both images to float64 HxWxC (C = 1 for Y)."""
    _check_pair(a, b, crop_border)
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        return rgb_to_y(a)[..., None], rgb_to_y(b)[..., None]
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, y_channel: bool = False, crop_border: int = 0) -> float:
    """PSNR in dB for uint8 HxWx3 RGB images (peak 255); ``inf`` when they are identical."""
    x, y = _prepare(a, b, y_channel, crop_border)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(_MAX**2 / mse)


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one float64 plane; only windows fully inside the image count (as BasicSR, skimage)."""
    win = cv2.getGaussianKernel(_SSIM_WIN, _SSIM_SIGMA)
    win = win @ win.T
    r = _SSIM_WIN // 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.filter2D(z, -1, win)[r:-r, r:-r]

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)
    den = (mu_x**2 + mu_y**2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, y_channel: bool = False, crop_border: int = 0) -> float:
    """SSIM (Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, L 255), per channel then averaged."""
    x, y = _prepare(a, b, y_channel, crop_border)
    if min(x.shape[:2]) < _SSIM_WIN:
        raise ValueError(f"SSIM needs at least {_SSIM_WIN}x{_SSIM_WIN} pixels after cropping, got {x.shape[:2]}")
    return float(np.mean([_ssim_plane(x[..., c], y[..., c]) for c in range(x.shape[2])]))


def image_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All four numbers reported for one restored image: PSNR and SSIM on RGB and on Y."""
    return {
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "psnr_y": psnr(pred, target, y_channel=True),
        "ssim_y": ssim(pred, target, y_channel=True),
    }


def psnr_torch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of per-image PSNR (data range 1) for float (N, 3, H, W) tensors in [0, 1].

    ``pred`` is clamped to [0, 1] because the deployed output is; the result is a 0-dim tensor on the
    inputs' device (``inf`` if any image is exact: the trainer calls it per image and caps it). It is
    float arithmetic without the uint8 rounding, so it tracks training, while ``psnr`` gives the
    reported number.
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) tensors, got {tuple(pred.shape)}")
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise ValueError(f"expected float tensors, got {pred.dtype} and {target.dtype}")
    mse = (pred.float().clamp(0.0, 1.0) - target.float()).pow(2).flatten(1).mean(dim=1)
    return (-10.0 * torch.log10(mse)).mean()
