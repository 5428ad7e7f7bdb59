"""Real low light without ground truth: brightening dark frames without blowing them out.

DICM holds under-exposed photos and no reference, so PSNR cannot be scored. Two numbers can: the
brightening of the dark frames (mean of R, G, B after / before, on frames darker than
``DARK_BELOW``) and the extra clipping (share of pixels with every channel >= ``CLIP_AT``, after
minus before). A model that only learned synthetic low light brightens by blowing skies out,
which the second number shows. Frames are scaled so the long side is ``LONG_SIDE`` (area
averaging), the size a robot camera delivers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from qdr_ros.core.stats import percentiles
from qdr_train.data.datasets import list_images, read_rgb
from qdr_train.evaluation.evaluator import Restorer

LONG_SIDE = 480
DARK_BELOW = 64.0
CLIP_AT = 250


def scaled(rgb: np.ndarray, long_side: int = LONG_SIDE) -> np.ndarray:
    """``rgb`` with its long side scaled to ``long_side`` by area averaging (never enlarged)."""
    factor = long_side / max(rgb.shape[:2])
    if factor >= 1:
        return rgb
    size = (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def brightness(rgb: np.ndarray) -> float:
    """Mean of R, G and B over the frame."""
    return float(rgb.mean())


def clipped(rgb: np.ndarray) -> float:
    """Share of pixels whose three channels are all >= ``CLIP_AT``."""
    return float(np.all(rgb >= CLIP_AT, axis=2).mean())


def score_real_lowlight(restore: Restorer, folder: str | Path, mosaic: str | Path | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Brightening of the dark frames and extra clipping over every frame of ``folder``; optional mosaic."""
    rows, tiles = [], []
    for path in tqdm(list_images(folder), desc="real low light", disable=not progress, leave=False):
        frame = scaled(read_rgb(path))
        out = restore(frame)
        rows.append({"name": path.name, "brightness_in": brightness(frame), "brightness_out": brightness(out),
                     "clipped_in": clipped(frame), "clipped_out": clipped(out)})
        tiles.append(np.concatenate([frame, out], axis=1))
    dark = [r for r in rows if r["brightness_in"] < DARK_BELOW]
    gains = [r["brightness_out"] / max(r["brightness_in"], 1e-6) for r in dark]
    extra = [r["clipped_out"] - r["clipped_in"] for r in rows]
    summary = {"frames": len(rows), "dark_frames": len(dark),
               "median_brightening_dark": float(np.median(gains)) if gains else None,
               "mean_extra_clipped_points": 100 * float(np.mean(extra)),
               "p90_extra_clipped_points": 100 * percentiles(extra, (90,))[0] if extra else None,
               "long_side": LONG_SIDE, "dark_below": DARK_BELOW, "clip_at": CLIP_AT}
    if mosaic:
        write_mosaic(tiles, Path(mosaic))
    return {"summary": summary, "images": rows}


def write_mosaic(tiles: list[np.ndarray], path: Path, columns: int = 4, tile_width: int = 480) -> Path:
    """Grid of (input | output) pairs, each scaled to ``tile_width``, as one JPEG."""
    resized = [cv2.resize(t, (tile_width, round(t.shape[0] * tile_width / t.shape[1])),
                          interpolation=cv2.INTER_AREA) for t in tiles]
    height = max(t.shape[0] for t in resized)
    padded = [np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in resized]
    padded += [np.zeros_like(padded[0])] * (-len(padded) % columns)
    grid = np.concatenate([np.concatenate(padded[i:i + columns], axis=1) for i in range(0, len(padded), columns)])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path
