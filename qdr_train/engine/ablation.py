"""One command, one table: QDR against the usual ways to get an INT8 model, same data and budget.

Every INT8 variant is trained by the same trainer from the same FP32 teacher with the same
step budget, exported to Q/DQ ONNX and scored through ONNX Runtime (the deployed path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qdr_train.config import CONFIG_DIR, load_config
from qdr_train.data.datasets import data_root
from qdr_train.engine.evaluator import evaluate
from qdr_train.engine.trainer import Trainer
from qdr_train.export.onnx import export_model_file

VARIANTS = {
    "ptq": "PTQ (calibration only)",
    "qat": "QAT, reconstruction loss",
    "qat_out": "QAT + output distillation",
    "qat_dec": "QAT + decoder-feature distillation",
    "qdr_fixed": "QDR without LMR (fixed weights)",
    "qdr": "QDR (self-distillation + DFD + LMR)",
}


def _scores(report: dict[str, Any], kind: str) -> dict[str, float]:
    return {"psnr": report["mean"][kind]["psnr"], "ssim": report["mean"][kind]["ssim"]}


def run_ablation(task: str, teacher: str | Path, out: str | Path, overrides: list[str] | None = None,
                 variants: list[str] | None = None, limit: int = 0, threads: int = 0) -> dict[str, Any]:
    """Train, export and evaluate each variant; write ``ablation.json`` and ``ablation.md`` in ``out``."""
    unknown = [v for v in variants or [] if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {' '.join(VARIANTS)} (key=value "
                         "overrides go before --variants, or after another option)")
    out = Path(out)
    overrides = list(overrides or [])
    base = load_config(task, CONFIG_DIR / "int8.yaml", overrides)
    clean = data_root(base["data"]["root"]) / base["data"]["val"]
    export_model_file(teacher, out / "fp32")
    fp32 = evaluate(base, out / "fp32" / "efm_fp32.onnx", clean_dir=clean, limit=limit, baseline=False,
                    threads=threads, progress=False)
    rows: dict[str, Any] = {"input": _scores(fp32, "input"), "fp32": _scores(fp32, "output")}
    p_in, p_fp = rows["input"]["psnr"], rows["fp32"]["psnr"]
    for name in variants or list(VARIANTS):
        extra = [f"stage={name}", f"quant.teacher={teacher}", f"out={out / 'runs'}", f"name={name}"]
        if name == "ptq":
            extra.append("train.iters=0")
        cfg = load_config(task, CONFIG_DIR / "int8.yaml", overrides + extra)
        run = Trainer(cfg).fit()
        onnx_path = export_model_file(run / "model.pt", out / name, cfg)[0]
        report = evaluate(cfg, onnx_path, clean_dir=clean, limit=limit, baseline=False, threads=threads,
                          progress=False)
        s = _scores(report, "output")
        rows[name] = {**s, "psnr_ratio": s["psnr"] / p_fp, "gain_recovery": (s["psnr"] - p_in) / (p_fp - p_in),
                      "iters": cfg["train"]["iters"], "onnx": str(onnx_path)}
    result = {"task": task, "teacher": str(teacher), "data": base["data"]["val"], "images": len(fp32["images"]),
              "level": base["levels"][task], "evaluated_with": "ONNX Runtime on the exported ONNX", "rows": rows}
    (out / "ablation.json").write_text(json.dumps(result, indent=2))
    (out / "ablation.md").write_text(format_ablation(result))
    return result


def format_ablation(result: dict[str, Any]) -> str:
    """Markdown table: PSNR/SSIM, PSNR ratio and gain recovery per variant."""
    rows = result["rows"]
    lines = [f"### {result['task']} ({result['images']} images of {result['data']}, level {result['level']})", "",
             "| model | PSNR | SSIM | PSNR ratio INT8/FP32 | gain recovery |", "|---|---|---|---|---|",
             f"| degraded input | {rows['input']['psnr']:.2f} | {rows['input']['ssim']:.4f} | | |",
             f"| FP32 EFM (teacher) | {rows['fp32']['psnr']:.2f} | {rows['fp32']['ssim']:.4f} | 100% | 100% |"]
    for name, label in VARIANTS.items():
        if name in rows:
            r = rows[name]
            lines.append(f"| INT8 {label} | {r['psnr']:.2f} | {r['ssim']:.4f} | {100 * r['psnr_ratio']:.2f}% | "
                         f"{100 * r['gain_recovery']:.2f}% |")
    return "\n".join(lines) + "\n"
