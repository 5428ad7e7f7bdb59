"""Evaluate a checkpoint or an exported ONNX file the way the robot runs it.

Every model goes through the node's own pre/post-processing: ONNX files run in the node's ONNX
Runtime backend on its 8-bit path (``Backend.restore_uint8``, the CPU twin of an INT8 file, the
conversions inside the graph), torch files through ``qdr_ros.core.image_conversions`` (uint8 frame ->
padded float tensor -> restored uint8 frame). So a reported PSNR is the deployed model's, rounding
included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from qdr_ros.core.atomic import atomic_write
from qdr_ros.core.image_conversions import from_model_output, tensor_to_rgb_uint8, to_model_input
from qdr_train.evaluation.baselines import BASELINES, classical_baseline
from qdr_train.data.datasets import data_root, jpeg, list_images, paired_folder, read_rgb, to_tensor
from qdr_train.data.degradations import degrade, image_seed, sample_params, synthesize
from qdr_train.engine.checkpoint import load_model
from qdr_train.metrics import image_metrics

Restorer = Callable[[np.ndarray], np.ndarray]
KINDS = ("input", "output", "baseline")


def load_restorer(path: str | Path, threads: int = 0) -> Restorer:
    """uint8 RGB -> restored uint8 RGB for a ``.pt`` (torch) or ``.onnx`` (ONNX Runtime) model."""
    path = Path(path)
    if path.suffix == ".onnx":
        from qdr_ros.inference import create_backend
        backend = create_backend(path, "onnxruntime", threads=threads)
        return lambda rgb: backend.restore_uint8(np.ascontiguousarray(rgb))
    model, _ = load_model(path)

    def restore(rgb: np.ndarray) -> np.ndarray:
        x, (h, w) = to_model_input(rgb, "rgb8", stride=model.stride)
        with torch.no_grad():
            return from_model_output(model(torch.from_numpy(x)).numpy(), h, w, "rgb8")

    return restore


def load_chain(paths: Sequence[str | Path], threads: int = 0) -> Restorer:
    """Apply the models of ``paths`` in turn, as a robot would chain specialists (e.g. lowlight, then denoise)."""
    restorers = [load_restorer(p, threads) for p in paths]

    def restore(rgb: np.ndarray) -> np.ndarray:
        for step in restorers:
            rgb = step(rgb)
        return rgb

    return restorers[0] if len(restorers) == 1 else restore


def degraded_input(clean: np.ndarray, task: str, cfg: dict[str, Any], name: str,
                   severity: float | None = None) -> np.ndarray:
    """Make the deterministic degraded frame for ``clean``: the documented level, or a severity in [0, 1].

    ``cfg["eval_seed"]`` draws it, not the training ``seed``: the INT8 students of seeds 0-2 and their
    teacher are scored on the same frames, so their gain recovery compares like with like.
    """
    x = to_tensor(clean)
    if severity is None:
        return tensor_to_rgb_uint8(synthesize(x, task, cfg["levels"], cfg["eval_seed"], name))
    gen = torch.Generator().manual_seed(image_seed(task, cfg["eval_seed"], name))
    params = sample_params(task, cfg["degradation"], 1, gen, severity)
    return tensor_to_rgb_uint8(degrade(x, task, params, gen))


def as_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Return the frame as a camera that streams JPEG at ``quality`` delivers it (encoded, then decoded)."""
    return tensor_to_rgb_uint8(jpeg(to_tensor(rgb), torch.tensor([float(quality)])))


def evaluate(cfg: dict[str, Any], model_path: str | Path | Sequence[str | Path], clean_dir: str | Path | None = None,
             pairs_dir: str | Path | None = None, severity: float | None = None, limit: int = 0,
             baseline: bool = True, threads: int = 0, progress: bool = True,
             jpeg_quality: int | None = None) -> dict[str, Any]:
    """Score input, model output and the classical baseline on every image; returns the report dict.

    Several model paths are scored as one chain, applied in the order given. ``jpeg_quality``: each
    clean photo is first JPEG-compressed at that quality and taken as the reference, so with task
    ``clean`` it scores what a model does to the clean frames of a compressed camera stream.
    """
    if jpeg_quality is not None and (pairs_dir or not 1 <= jpeg_quality <= 100):
        raise ValueError(f"--jpeg {jpeg_quality}: a JPEG quality in 1..100, for synthetic (--clean) data only")
    task = cfg["task"]
    paths = [model_path] if isinstance(model_path, (str, Path)) else list(model_path)
    restore = load_chain(paths, threads)
    if pairs_dir:
        items = [(name, lambda p=inp: read_rgb(p), read_rgb(tgt)) for name, inp, tgt in paired_folder(pairs_dir)]
    else:
        files = list_images(clean_dir)
        items = [(p.name, None, read_rgb(p)) for p in files]
    if limit:
        items = items[:limit]
    images = []
    for name, read_input, clean in tqdm(items, desc=f"eval {task}", disable=not progress, leave=False):
        if jpeg_quality is not None:
            clean = as_jpeg(clean, jpeg_quality)
        lq = read_input() if read_input else degraded_input(clean, task, cfg, name, severity)
        if lq.shape != clean.shape:
            raise ValueError(f"{name}: input {lq.shape} and target {clean.shape} differ in size")
        out = restore(lq)
        row: dict[str, Any] = {"name": name, "input": image_metrics(lq, clean), "output": image_metrics(out, clean),
                               "mse": float(np.mean((out.astype(np.float64) - clean) ** 2)),
                               "changed": float(np.mean(np.any(out != lq, axis=2)))}
        if baseline and task in BASELINES:
            row["baseline"] = image_metrics(classical_baseline(task, lq), clean)
        images.append(row)
    kinds = [k for k in KINDS if k in images[0]]
    mean = {k: {m: float(np.mean([r[k][m] for r in images])) for m in images[0][k]} for k in kinds}
    level = cfg["levels"][task] if severity is None else {"severity": severity}
    pooled = {"psnr_pooled": pooled_psnr([r["mse"] for r in images]),
              "changed_pixels": float(np.mean([r["changed"] for r in images])),
              "exact_images": sum(r["mse"] == 0 for r in images)}  # their PSNR is inf, and so is a mean with one
    shown = " -> ".join(shown_data_path(p) for p in paths)
    return {"task": task, **pooled, "model": shown, "data": shown_data_path(pairs_dir or clean_dir),
            "synthetic": not pairs_dir, "seed": cfg["eval_seed"], "level": None if pairs_dir else level,
            "jpeg_quality": jpeg_quality,
            "mean": mean, "images": images}


def pooled_psnr(mses: list[float]) -> float:
    """PSNR of the MSE pooled over images (one number for a set; a mean of per-image PSNRs hides a bad frame)."""
    mse = float(np.mean(mses))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def shown_data_path(path: str | Path | None) -> str:
    """Show a path relative to the data root or the working folder when it lies inside one."""
    resolved = Path(str(path)).resolve()
    for base in (data_root(), Path.cwd()):
        if resolved.is_relative_to(base.resolve()):
            return str(resolved.relative_to(base.resolve()))
    return str(path)


def format_table(report: dict[str, Any]) -> str:
    """Markdown table of the mean metrics."""
    jpeg_note = f", as JPEG quality {report['jpeg_quality']}" if report.get("jpeg_quality") is not None else ""
    lines = [f"{report['task']} on {report['data']} ({len(report['images'])} images{jpeg_note})",
             "| | PSNR | SSIM | PSNR-Y | SSIM-Y |", "|---|---|---|---|---|"]
    for kind, m in report["mean"].items():
        lines.append(f"| {kind} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} |")
    lines.append(f"Output PSNR of the pooled MSE: {report['psnr_pooled']:.2f} dB; pixels the model changed: "
                 f"{100 * report['changed_pixels']:.2f}%; outputs equal to the reference: "
                 f"{report.get('exact_images', 0)} of {len(report['images'])}")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | Path) -> None:
    """Write ``report`` atomically: a run killed mid-write leaves the old file or none, never half of one."""
    atomic_write(path, json.dumps(report, indent=2))
