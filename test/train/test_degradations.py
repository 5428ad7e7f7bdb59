"""Degradation models: determinism, value ranges, severity monotonicity, documented levels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from qdr_train.config import ConfigError, load_config
from qdr_train.data.datasets import data_root, list_images, read_rgb, to_tensor
from qdr_train.data.datasets import CropSampler, TrainBatches, jpeg
from qdr_train.data.degradations import (CONDITION_LABELS, DEGRADATIONS, LABELS, crop_labels, degrade, dehaze,
                                         label_vector, level_params, light_pools, noise_levels, sample_params,
                                         synthesize)

TASKS = sorted(set(DEGRADATIONS) - {"clean"})
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


def test_clean_is_the_frame_itself(clean: torch.Tensor) -> None:
    assert torch.equal(synthesize(clean, "clean", CFG["levels"], 0, "img"), clean)


def test_night_is_lowlight_then_sensor_noise(clean: torch.Tensor) -> None:
    """Same exposure as lowlight, plus noise of the documented sigma 15 (measured on a flat grey)."""
    flat = torch.full((1, 3, 256, 256), 0.8)
    night = synthesize(flat, "night", CFG["levels"], 0, "flat")
    dark = synthesize(flat, "lowlight", CFG["levels"], 0, "flat")
    assert abs(float(night.mean() - dark.mean())) < 2 / 255
    extra = float(night.std() ** 2 - dark.std() ** 2) ** 0.5 * 255
    assert abs(extra - 15.0) < 1.0, extra
    assert CFG["levels"]["night"]["sigma"] == 15.0


def test_rain_haze_is_haze_then_rain(clean: torch.Tensor) -> None:
    """With the same generator the haze is the same (drawn first); the rain only adds light on top."""
    both = degrade(clean, "rain_haze", level_params("rain_haze", CFG["levels"]), torch.Generator().manual_seed(5))
    haze = degrade(clean, "dehaze", level_params("dehaze", CFG["levels"]), torch.Generator().manual_seed(5))
    assert float(both.mean()) > float(haze.mean()) + 1 / 255
    assert float((both - haze).min()) >= -1 / 255


def test_labels_of_every_condition() -> None:
    assert set(CONDITION_LABELS) == set(DEGRADATIONS)
    assert label_vector(CONDITION_LABELS["night"]).tolist() == [float(n in ("lowlight", "noise")) for n in LABELS]
    assert label_vector(CONDITION_LABELS["clean"]).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_mixture_batches_clean_crops_are_untouched_and_labelled(clean: torch.Tensor) -> None:
    """auto batches: clean crops are exactly their target (never JPEG'd), degraded ones carry their labels."""
    class Crops:
        def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
            return clean[..., :64, :64].repeat(n, 1, 1, 1)

    mixture = {"clean": 0.5, "night": 0.25, "rain_haze": 0.25}
    batches = TrainBatches(Crops(), "auto", CFG["degradation"], 32, seed=0, mixture=mixture, jpeg_prob=1.0)
    lq, gt, labels = batches(0, torch.device("cpu"))
    assert torch.equal(batches(0, torch.device("cpu"))[0], lq)
    is_clean = labels[:, LABELS.index("clean")] == 1
    assert 4 < int(is_clean.sum()) < 28
    assert torch.equal(lq[is_clean], gt[is_clean])
    assert all(float((a - b).abs().max()) > 0 for a, b in zip(lq[~is_clean], gt[~is_clean]))
    night = labels[:, LABELS.index("lowlight")] == 1
    assert torch.equal(labels[night, LABELS.index("noise")], torch.ones(int(night.sum())))
    assert float(lq[night].mean()) < float(gt[night].mean()) - 0.2


def test_noise_levels_measure_the_noise_a_frame_holds() -> None:
    """The std of what the noise added, in 8-bit levels: the sigma asked for, none without noise parameters."""
    grey = torch.full((3, 3, 96, 96), 0.5)
    gen = torch.Generator().manual_seed(0)
    sigmas = torch.tensor([2.0, 10.0, 30.0])
    params = {"sigma": sigmas, "shot": torch.zeros(3)}
    noisy = degrade(grey, "denoise", params, gen)
    assert torch.allclose(noise_levels(grey, "denoise", params, noisy), sigmas, rtol=0.05, atol=0.3)
    dark = {"exposure": torch.full((3,), 0.12), "shot": torch.zeros(3), "read": torch.zeros(3)}
    assert torch.equal(noise_levels(grey, "lowlight", dark, degrade(grey, "lowlight", dark, gen)), torch.zeros(3))
    haze = level_params("dehaze", CFG["levels"], 3)
    assert torch.equal(noise_levels(grey, "dehaze", haze, degrade(grey, "dehaze", haze, gen)), torch.zeros(3))
    night = level_params("night", CFG["levels"], 3)  # low light's own noise and night's sigma 15 on top
    assert float(noise_levels(grey, "night", night, degrade(grey, "night", night, gen)).min()) > 15


def test_noise_labels_follow_the_noise_when_asked() -> None:
    assert crop_labels("lowlight", 12.0, None) == ("lowlight",)  # by condition: as every shipped model learned
    assert set(crop_labels("lowlight", 12.0, 5.0)) == {"lowlight", "noise"}
    assert crop_labels("lowlight", 3.0, 5.0) == ("lowlight",)
    assert crop_labels("denoise", 3.0, 5.0) == ("clean",)  # too little noise to name
    assert set(crop_labels("night", 4.0, 5.0)) == {"lowlight"}
    assert crop_labels("clean", 0.0, 5.0) == ("clean",) and crop_labels("derain", 0.0, 5.0) == ("rain",)
    for bad in ("0", "-1", "[5]", "true"):
        with pytest.raises(ConfigError, match="noise_label"):
            load_config("auto", overrides=[f"data.noise_label={bad}"])


def test_batches_label_noisy_low_light_crops_noise(clean: torch.Tensor) -> None:
    """``noise_label``: a low-light crop holding sensor noise is labelled noise too; a quiet one is not."""
    class Crops:
        def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
            return clean[..., :64, :64].repeat(n, 1, 1, 1)

    ranges = {**CFG["degradation"], "lowlight": {"exposure": [0.2, 0.1], "shot": [0.0, 0.004], "read": [0.0, 0.015],
                                                 "quiet": 0.5}}
    by_condition = TrainBatches(Crops(), "lowlight", ranges, 32, seed=0)(0, torch.device("cpu"))
    lq, gt, labels = TrainBatches(Crops(), "lowlight", ranges, 32, seed=0, noise_label=5.0)(0, torch.device("cpu"))
    assert torch.equal(lq, by_condition[0])  # the same crops: only the labels differ
    assert torch.equal(by_condition[2][:, LABELS.index("noise")], torch.zeros(32))
    noisy = labels[:, LABELS.index("noise")] == 1
    assert torch.equal(labels[:, LABELS.index("lowlight")], torch.ones(32))
    assert 4 < int(noisy.sum()) < 28
    grain = ((lq - torch.nn.functional.avg_pool2d(lq, 3, 1, 1)) * 255).flatten(1).std(1)  # fine detail + noise
    assert float(grain[noisy].min()) > float(grain[~noisy].max())  # the same scene: the labelled ones are grainier


def test_clean_jpeg_crops_come_compressed_with_their_target_the_same_frame(clean: torch.Tensor) -> None:
    """``clean_jpeg``: a compressed stream's clean frame is the target itself, so blocks alone are never corrected."""
    class Crops:
        def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
            return clean[..., :64, :64].repeat(n, 1, 1, 1)

    mixture = {"clean": 0.5, "denoise": 0.5}
    plain = TrainBatches(Crops(), "auto", CFG["degradation"], 32, seed=0, mixture=mixture)
    lq, gt, labels = TrainBatches(Crops(), "auto", CFG["degradation"], 32, seed=0, mixture=mixture, clean_jpeg=0.5)(
        0, torch.device("cpu"))
    is_clean = labels[:, LABELS.index("clean")] == 1
    assert torch.equal(lq[is_clean], gt[is_clean])
    compressed = (gt[is_clean] - clean[..., :64, :64]).abs().flatten(1).amax(1) > 0
    assert 0 < int(compressed.sum()) < int(is_clean.sum())
    plain_lq, plain_gt, plain_labels = plain(0, torch.device("cpu"))
    assert torch.equal(plain_labels, labels) and torch.equal(plain_gt, clean[..., :64, :64].repeat(32, 1, 1, 1))
    assert torch.equal(plain_lq[~is_clean], lq[~is_clean]) and torch.equal(plain_gt[~is_clean], gt[~is_clean])


def test_a_haze_window_gives_each_crop_part_of_the_frames_depth_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """``haze_window``: a hazy crop sees a window of the depth range (scene depth runs over a frame, not a crop)."""
    class Black:  # y = A (1 - t) on black: the depth of each pixel is -ln(1 - y / A) / beta
        def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
            return torch.zeros(n, 3, 64, 64)

    ranges = {**CFG["degradation"], "dehaze": {"beta": [2.0, 2.0], "airlight": [1.0, 1.0]}}

    def hazy(window: tuple[float, float], condition: str = "dehaze") -> torch.Tensor:
        return TrainBatches(Black(), condition, ranges, 16, seed=0, haze_window=window)(0, torch.device("cpu"))[0]

    def depths(window: tuple[float, float]) -> torch.Tensor:
        return (-torch.log((1 - hazy(window)[:, 0]).clamp_min(1e-3)) / 2.0).flatten(1)
    assert float((depths((1.0, 1.0)).amax(1) - depths((1.0, 1.0)).amin(1)).max()) > 0.95  # far to near, as before
    windowed = depths((0.3, 0.5))
    assert float((windowed.amax(1) - windowed.amin(1)).max()) < 0.52  # at most half the range in any crop
    assert float(windowed.amin()) >= -0.02 and float(windowed.amax()) <= 1.02  # placed inside the frame's range
    x, gen = torch.zeros(1, 3, 64, 64), lambda: torch.Generator().manual_seed(5)
    params = {"beta": torch.tensor([2.0]), "airlight": torch.tensor([1.0])}
    plain_depth = -torch.log(1 - dehaze(x, params, gen())) / 2.0
    window = {**params, "depth_span": torch.tensor([0.4]), "depth_offset": torch.tensor([0.3])}
    assert torch.allclose(-torch.log(1 - dehaze(x, window, gen())) / 2.0, 0.4 * plain_depth + 0.3, atol=1e-5)
    assert not torch.equal(hazy((0.3, 0.5), "rain_haze"), hazy((1.0, 1.0), "rain_haze"))  # rain under haze too
    monkeypatch.setattr(TrainBatches, "_depth_window", lambda *a: pytest.fail("[1, 1] drew a window"))
    hazy([1.0, 1.0], "rain_haze")  # the default draws nothing more from the generator: recorded runs reproduce
    for bad in ("[0.0,1.0]", "[0.5]", "[0.2,0.5,0.9]", "[0.5,0.2]"):
        with pytest.raises(ConfigError, match="haze_window"):
            load_config("auto", overrides=[f"data.haze_window={bad}"])


def test_jpeg_nuisance_changes_pixels_more_at_low_quality(clean: torch.Tensor) -> None:
    x = clean[..., :64, :64].repeat(2, 1, 1, 1)
    out = jpeg(x, torch.tensor([30.0, 95.0]))
    errors = (out - x).abs().mean((1, 2, 3))
    assert float(errors[0]) > float(errors[1]) > 0


def test_a_quiet_share_leaves_that_share_of_low_light_crops_noise_free() -> None:
    """``quiet`` (a share, not a range): those crops are only darkened, at ``quiet_exposure``; never at a severity."""
    ranges = {"lowlight": {"exposure": [0.35, 0.2], "shot": [0.002, 0.004], "read": [0.008, 0.015], "quiet": 0.5,
                           "quiet_exposure": [0.1, 0.05]}}
    flat = torch.full((400, 3, 16, 16), 0.6)
    gen = torch.Generator().manual_seed(0)
    params = sample_params("lowlight", ranges, 400, gen)
    dark = degrade(flat, "lowlight", params, gen)
    noise_free = (dark.flatten(1).std(1) == 0).float()
    assert torch.equal(noise_free, params["quiet"])
    assert 0.4 < float(noise_free.mean()) < 0.6
    expected = torch.round((params["quiet_exposure"] * 0.6 ** 2.2) ** (1 / 2.2) * 255) / 255
    assert torch.equal(dark[noise_free == 1, 0, 0, 0], expected[noise_free == 1])
    noisy_level = (params["exposure"] * 0.6 ** 2.2) ** (1 / 2.2)
    assert float((dark[noise_free == 0].mean((1, 2, 3)) - noisy_level[noise_free == 0]).abs().max()) < 0.02
    at_worst = sample_params("lowlight", ranges, 8, gen, severity=1.0)
    assert torch.equal(at_worst["quiet"], torch.zeros(8))
    assert float(degrade(flat[:8], "lowlight", at_worst, gen).flatten(1).std(1).min()) > 0


def test_a_lit_share_gives_those_low_light_crops_parts_at_full_exposure(tmp_path: Path) -> None:
    """``lit``: a share of low-light crops hold pools of full light (the target stays the scene); the rest are dark."""
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((96, 96, 3), 200, np.uint8))
    ranges = {"lowlight": {"exposure": [0.1, 0.1], "shot": [0.0, 0.0], "read": [0.0, 0.0], "lit": 0.5},
              "night": {"sigma": [5.0, 5.0]}}
    batches = TrainBatches(CropSampler([tmp_path], 48), "auto", ranges, 64, seed=0, mixture={"lowlight": 1.0},
                           noise_label=1.0)
    lq, gt, labels = batches(0, torch.device("cpu"))
    level = lq * 255
    dark = round(200 * 0.1 ** (1 / 2.2))
    assert torch.equal(gt, torch.full_like(gt, 200 / 255))
    assert float(level.min()) == dark  # nowhere darker than the cut, nowhere brighter than the scene
    lit = (level > dark).flatten(1).any(1)
    full = (level == 200).flatten(1).any(1)
    assert 0.25 < float(lit.float().mean()) < 0.75
    assert bool((full <= lit).all()) and float(full.float().mean()) > 0.2
    # the map is a parameter of the crop: the noise-free twin that measures noise sees the same pools
    assert torch.equal(labels, label_vector(("lowlight",)).expand_as(labels))
    light = light_pools(torch.tensor([0.0, 1.0, 1.0]), 40, 60, torch.Generator().manual_seed(3))
    assert light.shape == (3, 1, 40, 60) and float(light.min()) >= 0 and float(light.max()) <= 1
    assert float(light[0].abs().max()) == 0
    for bad in ("degradation.lowlight.lit=[0.2,0.5]", "degradation.night.lit=1.5"):
        with pytest.raises(ConfigError, match="lit=.* must be one share in \\[0, 1\\]"):
            load_config("auto", overrides=[bad])


def test_lamps_are_white_in_the_dark_frame_and_its_target(tmp_path: Path) -> None:
    """``lamp``: the centre of a lit pool is a light source, clipped to white at any exposure, in input and target."""
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((96, 96, 3), 100, np.uint8))
    ranges = {"lowlight": {"exposure": [0.1, 0.1], "shot": [0.002, 0.002], "read": [0.01, 0.01], "lit": 1.0,
                           "lamp": 1.0}}
    lq, gt, _ = TrainBatches(CropSampler([tmp_path], 48), "auto", ranges, 32, seed=0,
                             mixture={"lowlight": 1.0})(0, torch.device("cpu"))
    white = gt == 1.0
    assert 0.0 < float(white.float().mean()) < 0.1 and bool(white.flatten(1).any(1).float().mean() > 0.3)
    assert torch.equal(lq[white], gt[white])  # noise and the exposure cut leave a clipped bulb white
    assert round(float(gt.min()) * 255, 3) == 100  # elsewhere the scene, brighter only at the bulbs' soft edges
    with pytest.raises(ConfigError, match="lamp needs lit parts"):
        load_config("auto", overrides=["degradation.night.lamp=0.5"])


def test_photos_smaller_than_the_crop_stop_with_the_smallest_named(tmp_path: Path) -> None:
    for name, (h, w) in {"big.png": (80, 90), "short.png": (50, 120), "tiny.png": (70, 40)}.items():
        cv2.imwrite(str(tmp_path / name), np.zeros((h, w, 3), np.uint8))
    with pytest.raises(ValueError, match=r"2 training images are smaller than crop 64 \(the smallest, .*tiny.png, "
                                         r"has a 40-pixel side\): set data.crop <= 40, .* data.upscale_small=true"):
        CropSampler([tmp_path], 64)
    assert CropSampler([tmp_path], 40).batch(2, torch.Generator().manual_seed(0)).shape == (2, 3, 40, 40)


def test_upscale_small_enlarges_only_the_photos_under_the_crop(tmp_path: Path) -> None:
    for name, (h, w) in {"big.png": (80, 90), "short.png": (50, 120), "tiny.png": (70, 40)}.items():
        cv2.imwrite(str(tmp_path / name), np.full((h, w, 3), 90, np.uint8))
    upscaled = CropSampler([tmp_path], 64, upscale_small=True)
    sizes = {p.name: im.shape[:2] for p, im in zip(sorted(tmp_path.iterdir()), upscaled.images)}
    assert sizes == {"big.png": (80, 90), "short.png": (64, 154), "tiny.png": (112, 64)}  # aspect kept
    assert all(int(im.min()) == int(im.max()) == 90 for im in upscaled.images)  # resampled, not padded
    assert upscaled.batch(3, torch.Generator().manual_seed(0)).shape == (3, 3, 64, 64)


def test_clean_candidates_make_the_clean_crops_the_textured_ones(tmp_path: Path) -> None:
    """``clean_candidates``: a clean crop is the most detailed of k; degraded crops stay drawn at random."""
    cv2.imwrite(str(tmp_path / "flat.png"), np.full((80, 80, 3), 120, np.uint8))
    cv2.imwrite(str(tmp_path / "texture.png"), np.random.default_rng(0).integers(0, 256, (80, 80, 3), np.uint8))
    sampler = CropSampler([tmp_path], 32)
    clean_label = LABELS.index("clean")

    def textured(k: int) -> tuple[float, float]:
        lq, gt, labels = TrainBatches(sampler, "auto", CFG["degradation"], 64, seed=0,
                                      mixture={"clean": 1.0, "derain": 1.0}, clean_candidates=k)(0, torch.device("cpu"))
        is_clean = labels[:, clean_label] == 1
        assert torch.equal(lq[is_clean], gt[is_clean])
        detailed = gt.flatten(1).std(1) > 0
        return float(detailed[is_clean].float().mean()), float(detailed[~is_clean].float().mean())
    assert 0.25 < textured(1)[0] < 0.75  # at random: about half the clean crops are flat
    clean_share, degraded_share = textured(8)
    assert clean_share > 0.95 and 0.25 < degraded_share < 0.75
    with pytest.raises(ConfigError, match="clean_candidates"):
        load_config("auto", overrides=["data.clean_candidates=0"])


def test_clean_dim_crops_are_darker_scenes_with_their_target_the_same_frame(tmp_path: Path) -> None:
    """``clean_dim``: a share of clean crops are dim scenes, input and target alike, labelled clean."""
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((80, 80, 3), 200, np.uint8))
    sampler = CropSampler([tmp_path], 32)
    batches = TrainBatches(sampler, "auto", CFG["degradation"], 64, seed=0, mixture={"clean": 1.0, "derain": 1.0},
                           clean_dim=0.5, clean_dim_exposure=(1.0, 0.3))
    lq, gt, labels = batches(0, torch.device("cpu"))
    is_clean = labels[:, LABELS.index("clean")] == 1
    assert torch.equal(lq[is_clean], gt[is_clean])
    level = gt.flatten(1).mean(1) * 255
    dim = level < 199.5
    assert torch.allclose(level[~is_clean], torch.full_like(level[~is_clean], 200.0))  # degraded crops' targets stay
    assert 0.25 < float(dim[is_clean].float().mean()) < 0.75
    assert float(level[dim].min()) >= 200 * 0.3 ** (1 / 2.2) - 1  # no darker than the darkest exposure
    undimmed = TrainBatches(sampler, "auto", CFG["degradation"], 64, seed=0, mixture={"clean": 1.0, "derain": 1.0})
    assert torch.equal(undimmed(0, torch.device("cpu"))[1][is_clean], torch.full_like(gt[is_clean], 200 / 255))
    for bad in ("data.clean_dim=1.5", "data.clean_dim_exposure=[1.0,0.0]", "data.clean_dim_exposure=0.5"):
        with pytest.raises(ConfigError, match="clean_dim"):
            load_config("auto", overrides=[bad])
