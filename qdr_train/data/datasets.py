"""Image sources for training and evaluation.

Training draws batches statelessly: batch ``step`` of process ``rank`` comes from a generator
seeded by (seed, step, rank). A resumed run, or a run on more processes, therefore sees
exactly the crops and degradations it would have seen without the interruption, with no
sampler state to save.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from qdr_train.data.degradations import degrade, sample_params

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def data_root(configured: str = "") -> Path:
    """Return the data folder: the config value, else $QDR_DATA, else ../shared/data beside the repo."""
    if configured:
        return Path(configured)
    if os.environ.get("QDR_DATA"):
        return Path(os.environ["QDR_DATA"])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name; a missing or empty folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist (set data.root or QDR_DATA)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


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

    def __init__(self, folders: list[Path], crop: int) -> None:
        self.images = [read_rgb(p) for folder in folders for p in list_images(folder)]
        small = [i for i, im in enumerate(self.images) if min(im.shape[:2]) < crop]
        if small:
            raise ValueError(f"{len(small)} training images are smaller than crop {crop}")
        self.crop = crop

    def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        crops = []
        for _ in range(n):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=gen))]
            h, w = img.shape[:2]
            y = int(torch.randint(h - self.crop + 1, (1,), generator=gen))
            x = int(torch.randint(w - self.crop + 1, (1,), generator=gen))
            patch = img[y:y + self.crop, x:x + self.crop]
            flip, rot = torch.randint(2, (1,), generator=gen).item(), torch.randint(4, (1,), generator=gen).item()
            patch = np.rot90(patch[:, ::-1] if flip else patch, rot)
            crops.append(np.ascontiguousarray(patch))
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255.0)


@dataclass
class TrainBatches:
    """Degraded/clean training pairs for one task, reproducible per (seed, step, rank)."""

    sampler: CropSampler
    task: str
    ranges: dict[str, Any]
    batch_size: int
    seed: int
    rank: int = 0

    def __call__(self, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 64 + self.rank)
        clean = self.sampler.batch(self.batch_size, gen)
        params = sample_params(self.task, self.ranges, self.batch_size, gen)
        return degrade(clean, self.task, params, gen).to(device), clean.to(device)


def build_train_batches(cfg: dict[str, Any], rank: int = 0) -> TrainBatches:
    root = data_root(cfg["data"]["root"])
    sampler = CropSampler([root / f for f in cfg["data"]["train"]], cfg["data"]["crop"])
    return TrainBatches(sampler, cfg["task"], cfg["degradation"], cfg["data"]["batch"], cfg["seed"], rank)


def paired_folder(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """(name, input, target) triples from ``input/`` and ``target/`` subfolders matched by file name."""
    folder = Path(folder)
    inputs = {p.name: p for p in list_images(folder / "input")}
    targets = {p.name: p for p in list_images(folder / "target")}
    missing = sorted(set(inputs) ^ set(targets))
    if missing:
        raise ValueError(f"{folder}: input/ and target/ do not match: {missing[:5]}")
    return [(name, inputs[name], targets[name]) for name in sorted(inputs)]
