"""Turn a finished run into shipped files: ``models/<task>/`` model file, ONNX, evaluation and model card."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from qdr_ros.core.atomic import atomic_write
from qdr_train.config import AUTO, eval_tasks
from qdr_train.data.datasets import data_root, shared_images
from qdr_train.engine.checkpoint import load_model, safe_load
from qdr_train.evaluation.evaluator import evaluate, format_table, write_json
from qdr_train.export.onnx import export_model_file
from qdr_train.models.profile import count_macs, count_params


def release(run_dir: str | Path, models_dir: str | Path = "models", results_dir: str | Path = "results/eval",
            command: str = "", threads: int = 0, eval_data: str = "") -> dict[str, Any]:
    """Export ONNX, evaluate the ONNX on the held-out set, write the card; keep an FP32 run's model file.

    The FP32 ``efm_fp32.pt`` stays in ``models/``: INT8 training starts from it, and the benchmark times
    it. An INT8 run's own file is not copied: its ONNX files are what ships, and the card's command
    remakes it (the repository stays small enough to travel to a lent GPU machine with data beside it).

    ``eval_data`` (a folder under the data root) is the held-out set; empty means the run's ``data.val``,
    which a run may have pointed at a training-split set to watch it (then pass the held-out set here).
    """
    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    eval_data = eval_data or cfg["data"]["val"]
    clean = data_root(cfg["data"]["root"]) / eval_data
    if not clean.is_dir():
        raise FileNotFoundError(f"evaluation set {clean} not found; pass --eval-data <folder under the data root>")
    if shared_images(data_root(cfg["data"]["root"]), cfg["data"]["train"], eval_data):
        raise ValueError(f"evaluation set {eval_data} is in the run's data.train; pass a held-out set with --eval-data")
    info = safe_load(run_dir / "model.pt")
    task, precision = cfg["task"], "int8" if info.get("quantized") else "fp32"
    out = Path(models_dir) / task
    out.mkdir(parents=True, exist_ok=True)
    source = run_dir / "model.pt"
    kept = [shutil.copyfile(source, out / "efm_fp32.pt")] if precision == "fp32" else []
    onnx_files = export_model_file(source, out, cfg)
    conditions = eval_tasks(task) + (("clean",) if task == AUTO else ())
    reports, tables = {}, []
    for condition in conditions:
        report = evaluate({**cfg, "task": condition}, onnx_files[0], clean_dir=clean, threads=threads)
        name = task if condition == task else f"{task}_{condition}"
        write_json(report, Path(results_dir) / f"{name}_{precision}.json")
        reports[condition], tables = report, tables + [format_table(report)]
    model = load_model(source)[0]
    card = {
        "task": task, "precision": precision, "stage": cfg["stage"], "iterations": int(info["step"]),
        "params": count_params(model), "gmacs_640x480": round(count_macs(model, 480, 640) / 1e9, 3),
        "train_data": cfg["data"]["train"], "eval_data": eval_data,
        "level": {c: cfg["levels"][c] for c in conditions} if task == AUTO else cfg["levels"][task],
        "mean": {c: r["mean"] for c, r in reports.items()} if task == AUTO else reports[task]["mean"],
        "files": [str(p) for p in [*kept, *onnx_files]], "command": command,
    }
    atomic_write(out / f"MODEL_CARD_{precision}.md", format_card(card, "\n\n".join(tables)))
    write_json(card, out / f"model_card_{precision}.json")
    return card


def format_card(card: dict[str, Any], table: str) -> str:
    """Human-readable model card."""
    return "\n".join([
        f"# EFM {card['precision'].upper()} — {card['task']}", "",
        f"- Stage: `{card['stage']}`, {card['iterations']} iterations in its last run (every run: the commands below)",
        f"- Architecture: EFM with LDG, {card['params']:,} parameters, {card['gmacs_640x480']} GMAC per 640x480 frame",
        f"- Trained on: {', '.join(card['train_data'])} (random crops, synthetic `{card['task']}` degradations "
        "over the training ranges of `qdr_train/configs/default.yaml`"
        + (", mixed with clean crops and compound conditions as `data.mixture` says)" if card["task"] == AUTO else ")"),
        f"- Evaluated on: {card['eval_data']} (never trained on), documented level{'s' * (card['task'] == AUTO)} "
        f"{card['level']}, run through ONNX Runtime with the node's pre/post-processing"
        + " (the backend runs an INT8 file's `_cpu` twin)",
        f"- Files: {', '.join(f'`{f}`' for f in card['files'])}", "",
        "## Made with", "", "```", card["command"], "```", "",
        "## Evaluation (mean over the images)", "", table, "",
    ])
