"""Tests for qdr_train.metrics: parity with scikit-image, known values, validation, torch PSNR."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from qdr_train.metrics import image_metrics, psnr, psnr_torch, rgb_to_y, ssim

DATA = Path(os.environ.get("QDR_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
KODAK = DATA / "clean" / "Kodak24"
needs_kodak = pytest.mark.skipif(not KODAK.is_dir(), reason=f"real images not found at {KODAK}")


def _read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def _kodak(index: int = 0) -> np.ndarray:
    return _read_rgb(sorted(KODAK.glob("*.png"))[index])


def _random_pair(seed: int = 0, shape: tuple[int, int, int] = (48, 64, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (5, 5), 1.0)
    b = np.clip(a + rng.normal(0, 12, shape), 0, 255).round().astype(np.uint8)
    return a, b


def _sk_ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=channel_axis)


def test_psnr_matches_skimage_rgb_and_y() -> None:
    a, b = _random_pair()
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-12)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    assert psnr(a, b, y_channel=True) == pytest.approx(peak_signal_noise_ratio(ya, yb, data_range=255), rel=1e-12)


def test_ssim_matches_skimage_rgb_and_y() -> None:
    a, b = _random_pair(1)
    assert ssim(a, b) == pytest.approx(_sk_ssim(a, b, -1), abs=1e-6)
    assert ssim(a, b, y_channel=True) == pytest.approx(_sk_ssim(rgb_to_y(a), rgb_to_y(b), None), abs=1e-6)


@needs_kodak
def test_real_image_matches_skimage() -> None:
    clean = _kodak(3)
    rng = np.random.default_rng(3)
    noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).round().astype(np.uint8)
    assert psnr(noisy, clean) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=255), rel=1e-12)
    assert ssim(noisy, clean) == pytest.approx(_sk_ssim(clean, noisy, -1), abs=1e-3)


@needs_kodak
def test_awgn_sigma25_psnr_is_known_value() -> None:
    # 20 log10(255 / 25) = 20.17 dB holds without clipping, so the image is squeezed into
    # [80, 175] first: 3.2 sigma from either end, clipping changes the MSE negligibly.
    clean = (80 + _kodak(0).astype(np.float64) * 95 / 255).round().astype(np.uint8)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8)
    assert psnr(noisy, clean) == pytest.approx(20 * math.log10(255 / 25), abs=0.1)


def test_y_channel_is_bt601_studio_range() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(img)[0], [16.0, 235.0, 16 + 65.481, 16 + 128.553], atol=1e-9)
    assert rgb_to_y(img).dtype == np.float64


def test_identical_images() -> None:
    a, _ = _random_pair()
    assert psnr(a, a) == float("inf")
    assert psnr(a, a, y_channel=True) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, a, y_channel=True) == pytest.approx(1.0)


def test_crop_border_equals_cropping_first() -> None:
    a, b = _random_pair(2)
    inner_a, inner_b = a[4:-4, 4:-4], b[4:-4, 4:-4]
    assert psnr(a, b, crop_border=4) == psnr(inner_a, inner_b)
    assert ssim(a, b, y_channel=True, crop_border=4) == ssim(inner_a, inner_b, y_channel=True)


def test_image_metrics_keys_and_values() -> None:
    a, b = _random_pair(4)
    m = image_metrics(a, b)
    assert m == {"psnr": psnr(a, b), "ssim": ssim(a, b),
                 "psnr_y": psnr(a, b, y_channel=True), "ssim_y": ssim(a, b, y_channel=True)}


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_invalid_inputs_raise(fn) -> None:
    a, b = _random_pair()
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(a, b[:-1])
    with pytest.raises(ValueError, match="uint8"):
        fn(a, b.astype(np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        fn(a[..., 0], b[..., 0])
    with pytest.raises(ValueError, match="crop_border"):
        fn(a, b, crop_border=24)
    with pytest.raises(ValueError, match="crop_border"):
        fn(a, b, crop_border=-1)


def test_ssim_too_small_raises() -> None:
    a, b = _random_pair(shape=(10, 20, 3))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a, b)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(11, 24), w=st.integers(11, 24))
def test_symmetric_and_bounded(seed: int, h: int, w: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert psnr(a, b) == psnr(b, a)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    assert -1.0 <= ssim(a, b) <= 1.0
    assert psnr(a, b) >= 0.0


def test_psnr_torch_matches_numpy_per_image_mean() -> None:
    pairs = [_random_pair(seed) for seed in range(3)]
    pred = torch.stack([torch.from_numpy(b).permute(2, 0, 1) for _, b in pairs]).float() / 255
    target = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a, _ in pairs]).float() / 255
    expected = np.mean([psnr(b, a) for a, b in pairs])
    got = psnr_torch(pred, target)
    assert got.ndim == 0
    assert got.item() == pytest.approx(expected, abs=1e-3)


def test_psnr_torch_clamps_pred_and_handles_identity() -> None:
    target = torch.rand(2, 3, 8, 8)
    assert psnr_torch(target, target).item() == float("inf")
    over = target.clone()
    over[:, :, 0, 0] = 5.0
    target[:, :, 0, 0] = 1.0
    assert psnr_torch(over, target).item() == float("inf")


def test_psnr_torch_invalid_inputs() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr_torch(x, x[:1])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        psnr_torch(x[0], x[0])
    with pytest.raises(ValueError, match="float"):
        psnr_torch((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))
