"""Write the EFM (FP32 or fake-quantized) as ONNX with dynamic height and width."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

INPUT_NAME = "image"
OUTPUT_NAME = "restored"
OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None,
                size: tuple[int, int] = (64, 64)) -> Path:
    """Export ``model`` (NCHW float RGB in [0, 1] -> same) and store ``metadata`` as JSON props.

    The TorchScript-based exporter is used because it turns PyTorch's fake-quantize ops into
    QuantizeLinear/DequantizeLinear; the dynamo exporter rejects them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    device = next(model.parameters()).device
    dummy = torch.rand(1, 3, *size, device=device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model(dummy)  # refresh per-channel weight scales from the final weights
        torch.onnx.export(
            model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}},
        )
    proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_model_file(model_path: str | Path, out: str | Path, config: dict[str, Any] | None = None) -> list[Path]:
    """Export a qdr model file: FP32 -> ``efm_fp32.onnx``; fake-quantized -> ``efm_int8.onnx`` + CPU twin.

    ``out`` is a folder. The model's architecture, task and the run config go into the metadata.
    """
    from qdr_train.engine.checkpoint import load_model
    from qdr_train.export.cpu_variant import to_cpu_variant

    model, info = load_model(model_path)
    out = Path(out)
    precision = "int8" if info.get("quantized") else "fp32"
    meta = {"task": info.get("task", ""), "precision": precision, "stride": model.stride,
            "model": info["model"], "stage": info.get("stage", ""), "config": config or {}}
    path = export_onnx(model, out / f"efm_{precision}.onnx", meta)
    if precision == "fp32":
        return [path]
    return [path, to_cpu_variant(path, out / "efm_int8_cpu.onnx")]
