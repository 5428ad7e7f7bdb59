"""Tests for qdr_train.evaluation.baselines: contract of every baseline and a PSNR gain on real degraded photos."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from qdr_train.evaluation import baselines
from qdr_train.evaluation.baselines import BASELINES, classical_baseline, guided_filter
from qdr_train.metrics import psnr

DATA = Path(os.environ.get("QDR_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
KODAK = DATA / "clean" / "Kodak24"
RAIN = DATA / "paired" / "Rain100L_sample"
needs_kodak = pytest.mark.skipif(not KODAK.is_dir(), reason=f"real images not found at {KODAK}")
needs_rain = pytest.mark.skipif(not RAIN.is_dir(), reason=f"real rain pairs not found at {RAIN}")
TASKS = ["denoise", "derain", "lowlight", "dehaze"]


def _read_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


def _kodak(index: int) -> np.ndarray:
    return _read_rgb(sorted(KODAK.glob("*.png"))[index])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _smooth_image(shape: tuple[int, int, int] = (40, 56, 3)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (7, 7), 2.0)


def test_registry_has_every_task() -> None:
    assert sorted(BASELINES) == sorted(TASKS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("shape", [(40, 56, 3), (33, 17, 3)])
def test_contract_uint8_same_shape_deterministic(task: str, shape: tuple[int, int, int]) -> None:
    img = _smooth_image(shape)
    out = classical_baseline(task, img)
    assert out.dtype == np.uint8
    assert out.shape == img.shape
    np.testing.assert_array_equal(out, classical_baseline(task, img))
    np.testing.assert_array_equal(img, _smooth_image(shape))  # input left untouched


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("value", [0, 255])
def test_flat_extremes_stay_flat_without_nan_or_division_by_zero(task: str, value: int) -> None:
    with np.errstate(all="raise"):  # a NaN or a division by zero inside would be cast to some uint8 silently
        out = classical_baseline(task, np.full((24, 24, 3), value, np.uint8))
    assert out.dtype == np.uint8 and out.shape == (24, 24, 3)
    assert np.ptp(out) == 0, f"{task} turned a flat {value} frame into {np.unique(out)}"


def test_unknown_task_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown task 'deblur'.*dehaze, denoise, derain, lowlight"):
        classical_baseline("deblur", _smooth_image())


@pytest.mark.parametrize("task", TASKS)
def test_bad_image_raises(task: str) -> None:
    img = _smooth_image()
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        classical_baseline(task, img.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        classical_baseline(task, img[..., 0])


def test_guided_filter_limits() -> None:
    guide = _smooth_image()[..., 0].astype(np.float32) / 255
    const = np.full_like(guide, 0.3)
    np.testing.assert_allclose(guided_filter(guide, const, 3, 1e-3), 0.3, atol=1e-5)
    # eps -> 0 with src = guide reproduces the guide (edges fully kept).
    np.testing.assert_allclose(guided_filter(guide, guide, 3, 1e-8), guide, atol=1e-3)


def test_lowlight_gamma_targets_mean_and_never_darkens() -> None:
    dark = _to_uint8(0.15 * (_smooth_image().astype(np.float64) / 255) ** 1.5)
    gamma = baselines._lowlight_gamma(dark)
    brightened = cv2.LUT(dark, _to_uint8((np.arange(256) / 255.0) ** gamma))
    luma = cv2.cvtColor(brightened, cv2.COLOR_RGB2GRAY).mean() / 255
    assert luma == pytest.approx(baselines.LOWLIGHT_TARGET_MEAN, abs=0.02)
    assert baselines._lowlight_gamma(np.full((8, 8, 3), 200, np.uint8)) == 1.0


@needs_kodak
def test_denoise_improves_awgn25() -> None:
    clean = _kodak(4)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8)
    assert psnr(classical_baseline("denoise", noisy), clean) > psnr(noisy, clean) + 3.0


@needs_kodak
def test_dehaze_improves_synthetic_haze() -> None:
    clean = _kodak(6)
    depth = np.linspace(1.0, 0.0, clean.shape[0])[:, None, None]  # top of the frame is far
    t = np.exp(-1.2 * depth)
    hazy = _to_uint8(clean / 255.0 * t + 0.9 * (1 - t))
    assert psnr(classical_baseline("dehaze", hazy), clean) > psnr(hazy, clean) + 3.0


@needs_kodak
def test_lowlight_improves_dark_image() -> None:
    clean = _kodak(8)
    dark = _to_uint8(0.15 * (clean / 255.0) ** 1.5)
    assert psnr(classical_baseline("lowlight", dark), clean) > psnr(dark, clean) + 5.0


@needs_rain
def test_derain_improves_real_rain100l_pairs() -> None:
    names = sorted(p.name for p in (RAIN / "input").glob("*.png"))
    assert names
    gains = []
    for name in names:
        rainy, target = _read_rgb(RAIN / "input" / name), _read_rgb(RAIN / "target" / name)
        gains.append(psnr(classical_baseline("derain", rainy), target) - psnr(rainy, target))
    assert min(gains) > 0.0
    assert np.mean(gains) > 0.3
