"""Average the weights of FP32 runs that share a starting point (a "model soup") into a new run folder.

Runs fine-tuned from the same model, each on its own mixture of conditions, trade conditions against
each other by a few tenths of a dB: auto_h10 (noise-heavy) gained 0.39 dB on denoise and lost 0.41 on
night. Their weight average lands between them condition by condition, and its mean was above both
in FP32 (docs/training.md), at no training cost. The result is a run folder like ``qdr-train fit``
writes (``model.pt`` + ``config.yaml``), so ``qdr-train screen``, ``scripts/release_auto.sh`` and
``qdr-train release`` take it as they take a trained run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from qdr_train.config import save_config
from qdr_train.engine.checkpoint import MODEL_FORMAT, safe_load, save_model_file
from qdr_train.models import build_model

SHARED = ("task", "levels")  # config sections every member must agree on: what the run is scored as


def _member(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a run folder's model file and config; refuse what cannot be averaged."""
    if not (run / "model.pt").is_file() or not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not a run folder (no model.pt and config.yaml): pass the folders "
                                "qdr-train fit wrote")
    info = safe_load(run / "model.pt")
    if info["format"] != MODEL_FORMAT or info.get("quantized"):
        raise ValueError(f"{run}/model.pt is not an FP32 model file: average FP32 runs, then train INT8 from the "
                         "average")
    return info, yaml.safe_load((run / "config.yaml").read_text())


def average_runs(runs: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Write the mean of the runs' weights to ``out/model.pt`` and a config for it; return its model-file info.

    Every member must have the same architecture, task and evaluation levels. The config is the first
    run's, with ``data.train`` the union of the members' (so no later step selects or reports on a set
    any of them trained on) and no ``init``; the model file records the members and the sum of their
    steps. A run listed twice weighs twice in the mean and counts once in the steps.
    """
    if len(runs) < 2:
        raise ValueError("average needs at least two runs")
    folders, out = [Path(r) for r in runs], Path(out)
    if out.resolve() in {f.resolve() for f in folders}:
        raise ValueError(f"--out {out} is one of the runs averaged: write the average to a new folder")
    members = [_member(run) for run in folders]
    (first, cfg), first_run = members[0], folders[0]
    for run, (info, run_cfg) in zip(folders[1:], members[1:]):
        if info["model"] != first["model"]:
            raise ValueError(f"{run} has another architecture than {first_run} ({info['model']} against "
                             f"{first['model']}): only runs of one graph average")
        for key in SHARED:
            if run_cfg[key] != cfg[key]:
                raise ValueError(f"{run} has another {key} than {first_run}: members must be scored alike")
    states = [info["state_dict"] for info, _ in members]
    steps = {f.resolve(): info["step"] for f, (info, _) in zip(folders, members)}  # a repeated run once
    mean = {k: torch.stack([s[k].double() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}
    out.mkdir(parents=True, exist_ok=True)
    merged = {**cfg, "name": out.name, "init": ""}
    merged["data"] = {**cfg["data"], "train": list(dict.fromkeys(t for _, c in members for t in c["data"]["train"]))}
    save_config(merged, out / "config.yaml")
    model = build_model(first["model"])
    model.load_state_dict(mean)
    save_model_file(model, first["model"], out / "model.pt", task=cfg["task"], stage=cfg["stage"],
                    step=sum(int(s) for s in steps.values()), averaged=[str(r) for r in folders])
    return safe_load(out / "model.pt")
