"""Check the EFM against its deployment budget: <= 1 M parameters, >= 30 FPS INT8 at 640x480 on ORT.

A quick estimate for choosing a graph (``qdr-train info``): FP32 then INT8 timed one after the other
in this process, which holds torch too. The speed the targets are judged on is ``make bench``'s, each
engine timed alone in its own process; its FP32/INT8 ratio comes out higher (2.68x against 2.33x for
the shipped auto model on the dev CPU, results/bench/).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qdr_train.engine.checkpoint import load_model
from qdr_train.export.cpu_variant import to_cpu_variant
from qdr_train.export.onnx import export_onnx
from qdr_train.models import build_model
from qdr_train.models.profile import count_macs, count_params
from qdr_train.quant import calibrate, prepare_qat

MAX_PARAMS = 1_000_000
MIN_INT8_FPS = 30.0


def time_backend(path: Path, height: int, width: int, threads: int, runs: int) -> float:
    """Median latency (ms) of the node's ONNX Runtime backend on one frame, after warm-up."""
    from qdr_ros.inference import create_backend
    backend = create_backend(path, "onnxruntime", threads=threads, prefer_cpu_variant=True)
    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    for _ in range(3):
        backend.infer(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        backend.infer(x)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def measure_budget(model_cfg: dict[str, Any], model_path: str | None, height: int, width: int,
                   threads: int = 0, runs: int = 20) -> dict[str, Any]:
    """Params, MACs, and FP32/INT8 ORT latency (INT8 from a PTQ calibration: speed does not depend on scales)."""
    model = load_model(model_path)[0] if model_path else build_model(model_cfg).eval()
    if getattr(model, "stride", 8) and (height % model.stride or width % model.stride):
        raise ValueError(f"{height}x{width} is not a multiple of the model stride {model.stride}")
    calib = [torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx")
        int8 = export_onnx(calibrate(prepare_qat(model), calib, progress=False), Path(tmp) / "efm_int8.onnx")
        to_cpu_variant(int8, Path(tmp) / "efm_int8_cpu.onnx")
        fp32_ms = time_backend(fp32, height, width, threads, runs)
        int8_ms = time_backend(int8, height, width, threads, runs)
    params, macs = count_params(model), count_macs(model, height, width)
    return {
        "resolution": f"{width}x{height}", "params": params, "gmacs_per_frame": round(macs / 1e9, 3),
        "ort_fp32_ms": round(fp32_ms, 2), "ort_int8_ms": round(int8_ms, 2),
        "ort_fp32_fps": round(1000 / fp32_ms, 1), "ort_int8_fps": round(1000 / int8_ms, 1),
        "int8_speedup": round(fp32_ms / int8_ms, 2),
        "int8_gmac_per_s": round(macs / 1e9 / (int8_ms / 1000), 1),
        "within_budget": params <= MAX_PARAMS and 1000 / int8_ms >= MIN_INT8_FPS,
    }
