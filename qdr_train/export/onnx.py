"""Write the EFM (FP32 or fake-quantized) as ONNX with dynamic height and width.

A model with a condition head is written with three outputs: ``restored`` (N, 3, H, W),
``condition`` (N, L) per-label probabilities (label names in the metadata key
``condition_labels``) and ``gate`` (N, 1, H, W), the LDG map (computed at half resolution, each
value repeated over its 2x2 block, so the backends crop it like the image); other models with one.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from qdr_train.export.graph import constant_values

INPUT_NAME = "image"
OUTPUT_NAME = "restored"
CONDITION_NAME = "condition"
GATE_NAME = "gate"
OPSET = 17


class _ThreeOutputs(nn.Module):
    """Restored image, condition probabilities and gate map of a model with a condition head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, feats = self.model(x, return_features=True)
        gate = F.interpolate(feats["gate"], scale_factor=2.0, mode="nearest")
        return y, torch.sigmoid(feats["condition"]), gate


def has_condition_head(model: nn.Module) -> bool:
    """Tell whether the model has condition logits (then it is exported with three outputs)."""
    return getattr(model, "condition", None) is not None


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
    image_axes = {0: "batch", 2: "height", 3: "width"}
    outputs, axes = [OUTPUT_NAME], {INPUT_NAME: image_axes, OUTPUT_NAME: image_axes}
    graph: nn.Module = model
    metadata = dict(metadata or {})
    if has_condition_head(model):
        graph = _ThreeOutputs(model).eval()
        outputs += [CONDITION_NAME, GATE_NAME]
        axes.update({CONDITION_NAME: {0: "batch"}, GATE_NAME: image_axes})
        metadata["condition_labels"] = list(model.labels)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        model(dummy)  # refresh per-channel weight scales from the final weights
        torch.onnx.export(graph, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes)
    proto = onnx.load(str(path))
    fold_weight_quantization(proto.graph)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def fold_weight_quantization(graph: onnx.GraphProto) -> int:
    """Store quantized weights as INT8 initializers: ``Q(float W) -> DQ`` becomes ``int8 W -> DQ``.

    Same values (round half to even, saturate, as QuantizeLinear does), a quarter of the file
    size, and the form TensorRT and ONNX Runtime expect for constant weights. Returns the count.
    """
    inits = {i.name: i for i in graph.initializer}
    consts = constant_values(graph)
    folded = 0
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale, zero = consts[node.input[1]], consts[node.input[2]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [-1 if d == axis else 1 for d in range(w.ndim)] if scale.ndim else []
        q = np.rint(w / scale.reshape(shape)) + zero.reshape(shape).astype(np.float32)
        info = np.iinfo(zero.dtype)
        graph.initializer.append(numpy_helper.from_array(np.clip(q, info.min, info.max).astype(zero.dtype),
                                                         node.output[0]))
        graph.node.remove(node)
        folded += 1
    used = {name for n in graph.node for name in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return folded


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
