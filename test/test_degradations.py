"""Degradation models: determinism, value ranges, severity monotonicity, documented levels."""

from __future__ import annotations

import pytest
import torch

from qdr_train.config import load_config
from qdr_train.data.datasets import data_root, list_images, read_rgb, to_tensor
from qdr_train.data.degradations import DEGRADATIONS, degrade, sample_params, synthesize

TASKS = sorted(DEGRADATIONS)
CFG = load_config("denoise")


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    root = data_root() / "clean" / "Kodak24"
    if not root.is_dir():
        pytest.skip(f"no data at {root}")
    return to_tensor(read_rgb(list_images(root)[0])[:128, :160])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / torch.mean((a - b) ** 2)))


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_output_other_seed_differs(clean: torch.Tensor, task: str) -> None:
    a = synthesize(clean, task, CFG["levels"], seed=0, name="img")
    b = synthesize(clean, task, CFG["levels"], seed=0, name="img")
    c = synthesize(clean, task, CFG["levels"], seed=1, name="img")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("task", TASKS)
def test_output_is_on_the_8bit_grid_in_range(clean: torch.Tensor, task: str) -> None:
    gen = torch.Generator().manual_seed(3)
    x = clean.repeat(4, 1, 1, 1)
    y = degrade(x, task, sample_params(task, CFG["degradation"], 4, gen), gen)
    assert y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(y * 255, torch.round(y * 255))


@pytest.mark.parametrize("task", TASKS)
def test_worse_severity_means_lower_psnr(clean: torch.Tensor, task: str) -> None:
    scores = []
    for severity in (0.1, 0.5, 0.9):
        gen = torch.Generator().manual_seed(7)
        params = sample_params(task, CFG["degradation"], 1, gen, severity=severity)
        scores.append(_psnr(degrade(clean, task, params, gen), clean))
    assert scores[0] > scores[1] > scores[2], scores


def test_denoise_level_is_sigma_25() -> None:
    flat = torch.full((1, 3, 256, 256), 0.5)
    noisy = synthesize(flat, "denoise", CFG["levels"], seed=0, name="flat")
    assert abs(float((noisy - flat).std()) * 255 - 25.0) < 0.5


def test_rain_only_adds_light_and_haze_lifts_dark_pixels(clean: torch.Tensor) -> None:
    rain = synthesize(clean, "derain", CFG["levels"], 0, "img")
    assert float((rain - clean).min()) >= -1 / 255
    black = torch.zeros(1, 3, 64, 64)
    haze = synthesize(black, "dehaze", CFG["levels"], 0, "img")
    assert float(haze.mean()) > 0.2


def test_unknown_task_and_bad_severity_are_errors(clean: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown task"):
        degrade(clean, "fog", {}, gen)
    with pytest.raises(ValueError, match="severity"):
        sample_params("denoise", CFG["degradation"], 1, gen, severity=1.5)
