"""Image sources for training and evaluation.

Training draws batches statelessly: batch ``step`` of process ``rank`` comes from a generator
seeded by (seed, step, rank). A resumed run, or a run on more processes, therefore sees
exactly the crops and degradations it would have seen without the interruption, with no
sampler state to save.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from qdr_train.data.degradations import (CONDITION_LABELS, crop_labels, degrade, dim, label_vector, lamp_cores,
                                         light_lamps, light_pools, noise_levels, sample_params)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def data_root(configured: str = "") -> Path:
    """Return the data folder: the config value, else $QDR_DATA, else ../shared/data beside the repo."""
    if configured:
        return Path(configured)
    if os.environ.get("QDR_DATA"):
        return Path(os.environ["QDR_DATA"])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name; a missing or empty folder is an error.

    A glob pattern (``detection/coco8*/images/*``) names several folders as one set: their images,
    sorted by name, each name once: sample sets share photos (coco8 and coco8-pose hold two of the same
    COCO photos, compressed apart), and the first folder's copy in sorted order is the one kept.
    """
    folder = Path(folder)
    folders = _folders(folder)
    if not folders or not folders[0].is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist (set data.root or QDR_DATA)")
    files: dict[str, Path] = {}
    for path in (p for f in folders for p in sorted(f.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES):
        files.setdefault(path.name, path)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [files[name] for name in sorted(files)]


HELD_OUT = ("clean/Kodak24", "detection/DAWN_fog", "lowlight_real/DICM")  # evaluation sets (data README)


def _folders(folder: Path) -> list[Path]:
    """Return the folders a data path names: itself, or for a glob pattern the folders it matches, sorted."""
    if not any(c in str(folder) for c in "*?["):
        return [folder]
    return sorted(Path(p) for p in glob.glob(str(folder)) if Path(p).is_dir())


def _image_files(folder: Path) -> set[Path]:
    """Every image file in a folder or glob of folders and their subfolders, resolved (none dropped by name)."""
    return {p.resolve() for f in _folders(folder) if f.is_dir() for p in f.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES}


def shared_images(root: Path, train: list[str], folder: str) -> list[Path]:
    """Return the images of ``folder`` (under ``root``) that the ``train`` folders hold too, as resolved files.

    Names are not enough: ``clean/*``, ``./clean/Kodak24`` or a trailing slash name the same photos.
    """
    trained = set().union(*(_image_files(root / t) for t in train)) if train else set()
    return sorted(_image_files(root / folder) & trained)


def refuse_held_out(root: Path, train: list[str]) -> None:
    """Stop a run whose ``data.train`` holds an evaluation image (``HELD_OUT``): those are never trained on."""
    for held in HELD_OUT:
        leaked = shared_images(root, train, held)
        if leaked:
            raise ValueError(f"data.train {train} holds {len(leaked)} images of the evaluation set {held} (e.g. "
                             f"{leaked[0].name}): evaluation images are never trained on; take them out of data.train")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div(255.0).unsqueeze(0)


class CropSampler:
    """Random crops with flips and 90-degree rotations from clean photos held in memory."""

    def __init__(self, folders: list[Path], crop: int, upscale_small: bool = False) -> None:
        """Hold the photos of ``folders``; one under ``crop`` is an error or, with ``upscale_small``, enlarged.

        Enlarging (bicubic, aspect kept) keeps a set with a few small photos in a large-crop run.
        """
        paths = [p for folder in folders for p in list_images(folder)]
        self.images = [read_rgb(p) for p in paths]
        small = sorted((min(im.shape[:2]), str(p)) for p, im in zip(paths, self.images) if min(im.shape[:2]) < crop)
        if small and not upscale_small:
            side, path = small[0]
            raise ValueError(f"{len(small)} training images are smaller than crop {crop} (the smallest, {path}, "
                             f"has a {side}-pixel side): set data.crop <= {side}, leave it out of data.train "
                             f"or set data.upscale_small=true")
        self.images = [_short_side_at_least(im, crop) for im in self.images]
        self.crop = crop

    def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` random crops, (n, 3, crop, crop) in [0, 1]."""
        return torch.from_numpy(np.stack([self._crop(gen) for _ in range(n)])).permute(0, 3, 1, 2).float().div(255.0)

    def most_textured(self, first: torch.Tensor, more: int, gen: torch.Generator) -> torch.Tensor:
        """Pick the most textured of ``first`` (3, crop, crop) and ``more`` new random crops.

        Texture is the mean absolute difference from a 3x3 box blur: the fine detail (foliage, sand,
        fabric) that a blind model mistakes for sensor noise when it sees too little of it clean.
        """
        candidates = torch.cat([first[None], self.batch(more, gen)])
        detail = (candidates - F.avg_pool2d(candidates, 3, 1, 1, count_include_pad=False)).abs().mean((1, 2, 3))
        return candidates[int(detail.argmax())]

    def _crop(self, gen: torch.Generator) -> np.ndarray:
        """One random crop of a random photo, flipped and rotated at random (HxWx3 uint8)."""
        img = self.images[int(torch.randint(len(self.images), (1,), generator=gen))]
        h, w = img.shape[:2]
        y = int(torch.randint(h - self.crop + 1, (1,), generator=gen))
        x = int(torch.randint(w - self.crop + 1, (1,), generator=gen))
        patch = img[y:y + self.crop, x:x + self.crop]
        flip, rot = torch.randint(2, (1,), generator=gen).item(), torch.randint(4, (1,), generator=gen).item()
        return np.ascontiguousarray(np.rot90(patch[:, ::-1] if flip else patch, rot))


def _short_side_at_least(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` unchanged, or enlarged (bicubic, aspect kept) until its short side is ``side``."""
    h, w = img.shape[:2]
    if min(h, w) >= side:
        return img
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))  # cv2 takes (width, height)
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Round-trip each image of ``x`` (N, 3, H, W in [0, 1]) through JPEG at its ``quality`` (N,)."""
    out = []
    for img, q in zip(x, quality.tolist()):
        rgb = (img.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(round(q))])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        out.append(torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1))
    return torch.stack(out).float().div(255.0)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class TrainBatches:
    """Degraded/clean training pairs and their condition labels, reproducible per (seed, step, rank).

    A specialist task degrades every crop with its own model. ``auto`` draws each crop's condition
    from ``mixture`` (proportions of clean and degraded conditions); a degraded crop is then
    JPEG-compressed with probability ``jpeg_prob`` (a nuisance of real camera streams, never a
    label). A clean crop's target is exactly its input: a ``clean_jpeg`` share of clean crops comes
    as a compressed stream delivers it (JPEG at ``jpeg_quality``, input and target the same decoded
    frame), so JPEG blocks alone never read as a condition to correct. With ``clean_candidates`` k > 1
    each clean crop is the most textured of k random crops (``CropSampler.most_textured``). A
    ``clean_dim`` share of clean crops are dim scenes: exposure from ``clean_dim_exposure`` in linear
    light, input and target alike, so that dimness alone is not low light (a dim room is a scene). With
    ``noise_label`` set, a crop is labelled ``noise`` where it holds at least that much sensor noise
    (8-bit levels, before JPEG), whatever its condition (``crop_labels``).
    """

    sampler: CropSampler
    task: str
    ranges: dict[str, Any]
    batch_size: int
    seed: int
    rank: int = 0
    mixture: dict[str, float] | None = None
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[float, float] = (50.0, 95.0)
    clean_jpeg: float = 0.0
    haze_window: tuple[float, float] = (1.0, 1.0)
    clean_candidates: int = 1
    noise_label: float | None = None
    clean_dim: float = 0.0
    clean_dim_exposure: tuple[float, float] = (1.0, 0.35)

    def __call__(self, step: int, device: torch.device) -> Batch:
        """(degraded, clean, labels): labels are (N, len(LABELS)) multi-hot over ``LABELS``."""
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 64 + self.rank)
        clean = self.sampler.batch(self.batch_size, gen)
        conditions = self.conditions(gen)
        if self.clean_candidates > 1:
            for i in (i for i, c in enumerate(conditions) if c == "clean"):
                clean[i] = self.sampler.most_textured(clean[i], self.clean_candidates - 1, gen)
        if self.clean_dim > 0:
            clean = self._dim_scenes(clean, conditions, gen)
        lq = clean.clone()
        noise = torch.zeros(len(conditions))
        for condition in dict.fromkeys(conditions):
            idx = torch.tensor([i for i, c in enumerate(conditions) if c == condition])
            params = sample_params(condition, self.ranges, len(idx), gen)
            if "haze" in CONDITION_LABELS[condition] and tuple(self.haze_window) != (1.0, 1.0):
                params.update(self._depth_window(len(idx), gen))
            if "lit" in params:  # low light's share of crops with lit parts, as a map of where light falls
                params["light"] = light_pools(params.pop("lit"), clean.shape[2], clean.shape[3], gen)
            lamps = lamp_cores(params["light"], params.pop("lamp")) if "lamp" in params else None
            if lamps is not None:  # a bulb is white in the scene, and stays white at any exposure
                clean[idx] = light_lamps(clean[idx], lamps)
            lq[idx] = degrade(clean[idx], condition, params, gen)
            if self.noise_label is not None:
                noise[idx] = noise_levels(clean[idx], condition, params, lq[idx])
            if lamps is not None:
                lq[idx] = light_lamps(lq[idx], lamps)
        if self.jpeg_prob > 0:
            idx, quality = self._jpeg_draw(self.jpeg_prob, [c != "clean" for c in conditions], gen)
            if len(idx):
                lq[idx] = jpeg(lq[idx], quality)
        if self.clean_jpeg > 0:
            idx, quality = self._jpeg_draw(self.clean_jpeg, [c == "clean" for c in conditions], gen)
            if len(idx):
                lq[idx] = clean[idx] = jpeg(clean[idx], quality)
        labels = torch.stack([label_vector(crop_labels(c, float(n), self.noise_label))
                              for c, n in zip(conditions, noise)])
        return lq.to(device), clean.to(device), labels.to(device)

    def _dim_scenes(self, clean: torch.Tensor, conditions: list[str], gen: torch.Generator) -> torch.Tensor:
        """Darken a ``clean_dim`` share of the clean crops as a dimmer scene would be, on the 8-bit grid.

        The low-light model's exposure cut without its noise: the crop is the scene, not a condition.
        """
        pick = (torch.rand(self.batch_size, generator=gen) < self.clean_dim).tolist()
        mildest, darkest = self.clean_dim_exposure
        exposure = mildest + torch.rand(self.batch_size, generator=gen) * (darkest - mildest)
        idx = [i for i, c in enumerate(conditions) if c == "clean" and pick[i]]
        if not idx:
            return clean
        out = clean.clone()
        out[idx] = dim(clean[idx], exposure[idx])
        return out

    def _depth_window(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Each hazy crop's window of its frame's depth range: a span from ``haze_window``, placed at random.

        Evaluation frames and camera frames are whole frames whose depth runs from far at the top to
        near at the bottom; a crop of one spans only part of that range, and a model trained on crops
        that each span all of it corrects whole frames too little.
        """
        low, high = self.haze_window
        span = low + torch.rand(n, generator=gen) * (high - low)
        return {"depth_span": span, "depth_offset": torch.rand(n, generator=gen) * (1.0 - span)}

    def _jpeg_draw(self, share: float, eligible: list[bool], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick each eligible crop with probability ``share``: (its indices, their JPEG qualities)."""
        pick = (torch.rand(self.batch_size, generator=gen) < share).tolist()
        low, high = self.jpeg_quality
        quality = low + torch.rand(self.batch_size, generator=gen) * (high - low)
        idx = torch.tensor([i for i, ok in enumerate(eligible) if ok and pick[i]], dtype=torch.long)
        return idx, quality[idx]

    def conditions(self, gen: torch.Generator) -> list[str]:
        """Each crop's condition: the task itself, or drawn from the mixture's proportions."""
        if self.mixture is None:
            return [self.task] * self.batch_size
        names = list(self.mixture)
        weights = torch.tensor([float(self.mixture[n]) for n in names])
        picks = torch.multinomial(weights, self.batch_size, replacement=True, generator=gen)
        return [names[i] for i in picks.tolist()]


def build_train_batches(cfg: dict[str, Any], rank: int = 0) -> TrainBatches:
    """Build the training batches of ``cfg``: its task, or the mixture of conditions when the task is ``auto``."""
    d = cfg["data"]
    root = data_root(d["root"])
    refuse_held_out(root, d["train"])
    sampler = CropSampler([root / f for f in d["train"]], d["crop"], d["upscale_small"])
    auto = cfg["task"] == "auto"
    mixture = {k: v for k, v in d["mixture"].items() if v > 0} if auto else None
    return TrainBatches(sampler, cfg["task"], cfg["degradation"], d["batch"], cfg["seed"], rank, mixture,
                        d["jpeg_prob"] if auto else 0.0, tuple(d["jpeg_quality"]), d["clean_jpeg"] if auto else 0.0,
                        tuple(float(v) for v in d["haze_window"]), d["clean_candidates"] if auto else 1,
                        d.get("noise_label"), d["clean_dim"] if auto else 0.0,
                        tuple(float(v) for v in d["clean_dim_exposure"]))


def paired_folder(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(name, input, target) triples from ``input/`` and ``target/`` subfolders matched by file name."""
    folder = Path(folder)
    inputs = {p.name: p for p in list_images(folder / "input")}
    targets = {p.name: p for p in list_images(folder / "target")}
    missing = sorted(set(inputs) ^ set(targets))
    if missing:
        raise ValueError(f"{folder}: input/ and target/ do not match: {missing[:5]}")
    return [(name, inputs[name], targets[name]) for name in sorted(inputs)]
