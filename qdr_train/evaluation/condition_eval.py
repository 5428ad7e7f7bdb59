"""How well the condition head names what degrades a frame, scored the way the node reads it.

Each held-out image is degraded at the documented level of every condition (and left clean), for
several seeds, and run through the node's backend on its 8-bit path. A label counts as present
when its sigmoid is >= 0.5; "clean" is the answer when no degradation label is present
(``qdr_ros.core.condition.labels_of``). Reported: per-label recall and precision, the share of clean
frames called clean, and the share of frames whose whole label set is right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from qdr_ros.inference import create_backend
from qdr_ros.core.condition import CLEAN, labels_of
from qdr_train.config import AUTO_EVAL
from qdr_train.data.datasets import list_images, read_rgb, to_tensor
from qdr_train.data.degradations import crop_labels, level_params, noise_levels
from qdr_train.evaluation.evaluator import degraded_input, shown_data_path

CONDITIONS = AUTO_EVAL + ("clean",)


def evaluate_conditions(cfg: dict[str, Any], model_path: str | Path, clean_dir: str | Path, seeds: list[int],
                        limit: int = 0, threads: int = 0, progress: bool = True) -> dict[str, Any]:
    """Score the condition output of ``model_path`` on every (condition, seed, image)."""
    backend = create_backend(Path(model_path), "onnxruntime", threads=threads)
    labels = backend.info.condition_labels
    if not labels:
        raise ValueError(f"{model_path} has no condition output; only models such as models/auto can be scored")
    files = list_images(clean_dir)[:limit or None]
    images = [(p.name, read_rgb(p)) for p in files]
    frames = []
    jobs = [(c, s) for c in CONDITIONS for s in seeds]
    for condition, seed in tqdm(jobs, desc="conditions", disable=not progress, leave=False):
        for name, clean in images:
            lq = degraded_input(clean, condition, {**cfg, "eval_seed": seed}, name)
            probs = backend.restore_frame(lq).condition
            frames.append({"condition": condition, "seed": seed, "name": name,
                           "truth": list(truth_labels(cfg, condition, clean, lq)),
                           "predicted": list(labels_of(probs, labels)),
                           "probabilities": [round(float(p), 4) for p in probs]})
    return {"model": shown_data_path(model_path), "data": shown_data_path(clean_dir), "seeds": seeds,
            "labels": list(labels), "levels": {c: cfg["levels"][c] for c in CONDITIONS},
            "noise_label": cfg["data"].get("noise_label"),
            "summary": summarize(frames, labels), "frames": frames}


def truth_labels(cfg: dict[str, Any], condition: str, clean: np.ndarray, lq: np.ndarray) -> tuple[str, ...]:
    """Return what ``lq`` shows: ``condition``'s labels, with ``data.noise_label`` set ``noise`` where it holds noise.

    Scored by the rule the model was trained with: pass the training run's ``data.noise_label``.
    """
    threshold = cfg["data"].get("noise_label")
    noise = 0.0
    if threshold is not None:
        x = to_tensor(clean)
        noise = float(noise_levels(x, condition, level_params(condition, cfg["levels"]), to_tensor(lq))[0])
    return crop_labels(condition, noise, threshold)


def summarize(frames: list[dict[str, Any]], labels: tuple[str, ...]) -> dict[str, Any]:
    """Per-label recall/precision, clean frames called clean, exact label-set accuracy (overall and per condition)."""
    recall, precision = {}, {}
    for label in labels:
        truth = np.array([label in f["truth"] for f in frames])
        said = np.array([label in f["predicted"] for f in frames])
        recall[label] = float((truth & said).sum() / truth.sum()) if truth.any() else None
        precision[label] = float((truth & said).sum() / said.sum()) if said.any() else None
    clean = [f for f in frames if f["condition"] == CLEAN]
    exact = {c: float(np.mean([set(f["truth"]) == set(f["predicted"]) for f in frames if f["condition"] == c]))
             for c in dict.fromkeys(f["condition"] for f in frames)}
    return {"recall": recall, "precision": precision,
            "clean_called_clean": float(np.mean([f["predicted"] == [CLEAN] for f in clean])) if clean else None,
            "exact_set": float(np.mean([set(f["truth"]) == set(f["predicted"]) for f in frames])),
            "exact_set_per_condition": exact, "frames": len(frames)}


def format_conditions(report: dict[str, Any]) -> str:
    """Markdown table of the summary."""
    s = report["summary"]
    lines = [f"Condition head on {report['data']} ({s['frames']} frames: {len(CONDITIONS)} conditions x "
             f"{len(report['seeds'])} seeds), label present at sigmoid >= 0.5", "",
             "| label | recall | precision |", "|---|---|---|"]
    for label in report["labels"]:
        r, p = s["recall"][label], s["precision"][label]
        lines.append(f"| {label} | {'-' if r is None else f'{r:.3f}'} | {'-' if p is None else f'{p:.3f}'} |")
    lines += ["", f"Clean frames called clean: {s['clean_called_clean']:.3f}; whole label set right: "
              f"{s['exact_set']:.3f} (" + ", ".join(f"{c} {v:.2f}" for c, v in s["exact_set_per_condition"].items())
              + ")"]
    return "\n".join(lines)
