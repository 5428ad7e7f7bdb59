"""Classical (non-learned) restoration baselines, one per task, for the tables the EFM must beat.

Every baseline maps a ``uint8`` HxWx3 RGB image to one of the same shape and type, with
parameters fixed once here, never adapted to the clean image: NL-means tuned on CBSD68 (a training
set), the derain filter chosen on the Rain100L sample (the only real rain pairs at hand), the
rest from the method's paper or common defaults. A baseline number is what a robot would get
without a network (scores: docs/results.md, "FP32 EFM vs input and classical baseline"):

- denoise: OpenCV NL-means, ``h``/``hColor`` tuned on CBSD68 with AWGN sigma 25.
- derain: self-guided filter, chosen on the Rain100L sample; a median filter scored below the
  rainy input (it blurs texture as much as it removes streaks).
- lowlight: histogram-solved gamma + CLAHE on LAB L.
- dehaze: dark channel prior (He et al.) with a guided-filter-refined transmission.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

__all__ = ["BASELINES", "classical_baseline", "guided_filter", "denoise", "derain", "lowlight", "dehaze"]

# denoise: h / hColor picked on CBSD68 + AWGN sigma 25 (h 13..17, hColor 10..30 tried; 16 / 20 best).
NLM_H = 16.0
NLM_H_COLOR = 20.0
NLM_TEMPLATE = 7
NLM_SEARCH = 21

# derain: radius and eps (in [0, 1]^2 units) picked on Rain100L_sample among r 2..8, eps 1e-3..4e-2.
DERAIN_RADIUS = 4
DERAIN_EPS = 1e-2

# lowlight: output mean luma target, gamma range (never darken), CLAHE as commonly used.
LOWLIGHT_TARGET_MEAN = 0.45
LOWLIGHT_GAMMA_RANGE = (0.1, 1.0)
CLAHE_CLIP = 2.0
CLAHE_TILES = 8

# dehaze: He et al. (TPAMI 2011) values; guided filter r 60, eps 1e-4 as in the paper.
DCP_PATCH = 15
DCP_OMEGA = 0.95
DCP_T0 = 0.1
DCP_TOP_FRACTION = 0.001
DCP_GF_RADIUS = 60
DCP_GF_EPS = 1e-4

_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def _check_image(image: np.ndarray) -> None:
    """Fail early on anything but uint8 HxWx3, rather than return a silently wrong result."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 HxWx3 RGB image, got {desc}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Round a float image in [0, 1] to uint8 (round half up, as the deployed conversion does)."""
    return np.clip(x * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al. guided filter with box means (cv2.ximgproc is not in opencv-python-headless).

    ``guide`` and ``src`` are float32 HxW planes; the output follows ``src`` but keeps the edges
    of ``guide``. O(1) per pixel whatever the radius.
    """
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(z: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(z, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = mean(guide), mean(src)
    var_i = mean(guide * guide) - mean_i * mean_i
    cov_ip = mean(guide * src) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return mean(a) * guide + mean(b)


def denoise(image: np.ndarray) -> np.ndarray:
    """Non-local means (OpenCV, colour version: filters LAB luma and chroma with their own h)."""
    _check_image(image)
    bgr = np.ascontiguousarray(image[..., ::-1])
    out = cv2.fastNlMeansDenoisingColored(bgr, None, NLM_H, NLM_H_COLOR, NLM_TEMPLATE, NLM_SEARCH)
    return np.ascontiguousarray(out[..., ::-1])


def derain(image: np.ndarray) -> np.ndarray:
    """Self-guided filter per channel: flattens thin low-contrast streaks, keeps strong edges."""
    _check_image(image)
    f = image.astype(np.float32) / 255.0
    planes = [guided_filter(f[..., c], f[..., c], DERAIN_RADIUS, DERAIN_EPS) for c in range(3)]
    return _to_uint8(np.dstack(planes))


def _lowlight_gamma(image: np.ndarray) -> float:
    """Gamma that brings the mean luma to the target, solved exactly on the 256-bin luma histogram.

    ``log(target) / log(mean)`` would undershoot, as the mean of ``y ** g`` is below ``mean(y) ** g``.
    Bright frames get gamma 1 (no darkening).
    """
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    hist = np.bincount(luma.ravel(), minlength=256) / luma.size
    lo, hi = LOWLIGHT_GAMMA_RANGE
    if hist @ _LEVELS ** hi >= LOWLIGHT_TARGET_MEAN:
        return hi
    if hist @ _LEVELS ** lo <= LOWLIGHT_TARGET_MEAN:
        return lo
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if hist @ _LEVELS ** mid < LOWLIGHT_TARGET_MEAN:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def lowlight(image: np.ndarray) -> np.ndarray:
    """Global gamma to a mean luma of 0.45, then CLAHE on LAB L for local contrast.

    No denoising: it cost more time than it gained on the test images; noise in real low-light
    frames is amplified, which the learned model is expected to beat.
    """
    _check_image(image)
    gamma = _lowlight_gamma(image)
    out = cv2.LUT(image, _to_uint8(_LEVELS ** gamma))
    lab = cv2.cvtColor(out, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(CLAHE_CLIP, (CLAHE_TILES, CLAHE_TILES)).apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def dehaze(image: np.ndarray) -> np.ndarray:
    """Dark channel prior: A from the haziest pixels, t = 1 - omega * dark(I / A), refined, then inverted.

    A is the mean colour of the brightest 0.1% dark-channel pixels (steadier than one pixel).
    """
    _check_image(image)
    f = image.astype(np.float32) / 255.0
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (DCP_PATCH, DCP_PATCH))
    dark = cv2.erode(f.min(axis=2), kernel)
    n_top = max(1, int(dark.size * DCP_TOP_FRACTION))
    top = np.argpartition(dark.ravel(), -n_top)[-n_top:]
    air = np.maximum(f.reshape(-1, 3)[top].mean(axis=0), 1.0 / 255.0)
    t = 1.0 - DCP_OMEGA * cv2.erode((f / air).min(axis=2), kernel)
    gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
    t = np.maximum(guided_filter(gray, t, DCP_GF_RADIUS, DCP_GF_EPS), DCP_T0)
    return _to_uint8((f - air) / t[..., None] + air)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "denoise": denoise,
    "derain": derain,
    "lowlight": lowlight,
    "dehaze": dehaze,
}


def classical_baseline(task: str, image: np.ndarray) -> np.ndarray:
    """Run the classical baseline of ``task`` on a uint8 HxWx3 RGB image."""
    if task not in BASELINES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(BASELINES))}")
    return BASELINES[task](image)
