"""Write the EFM (FP32 or fake-quantized) as ONNX with dynamic height and width."""

from __future__ import annotations

import json
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
    with torch.no_grad():
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
