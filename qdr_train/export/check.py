"""Static proof that an INT8 ONNX file follows TensorRT's explicit-quantization rules.

Rules checked (TensorRT 10 "explicit quantization"; ONNX Runtime fuses the same pattern):
1. Every QuantizeLinear/DequantizeLinear is signed INT8 with zero point 0 and positive scales.
2. Activation scales are per-tensor (scalar).
3. Weights are constant, quantized per output channel: axis 0 for Conv, axis 1 for ConvTranspose,
   one scale per output channel.
4. No conv runs in float: each Conv/ConvTranspose reads a DequantizeLinear activation and a
   DequantizeLinear weight, and its output feeds only QuantizeLinear nodes.
5. Exact skip (models exported with ``exact_skip``, as their metadata says): the final residual Add
   reads the graph input itself, not a Q/DQ copy of it. The INT8 input grid has ~122 levels for
   256 camera values; a skip through it shifts half of all pixel values even where the gate is
   shut. The Add has no Q/DQ, so TensorRT runs that one layer in FP16/FP32 while rule 4 keeps
   every conv in INT8.
6. Each conv bias fits INT32 at the scale the runtimes fold it to, input scale x weight scale per
   channel: ONNX Runtime's INT8 kernels and TensorRT add it as an integer, and an overflowing one
   is silently lost (a near-zero weight channel with a bias does it).
Element-wise ops between a DequantizeLinear and a QuantizeLinear (the gate's sigmoid and its dead
zone, the condition probabilities) run in float on tensors of one channel or one value; the rules
bind the convs, where the time goes.
``cpu=True`` checks the CPU twin instead: activations uint8 with zero point 128 (the same grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import json

import numpy as np
import onnx

from qdr_train.export.graph import constant_values

CONV_OPS = {"Conv": 0, "ConvTranspose": 1}
BIAS_LIMIT = 2.0 ** 31  # a bias in input x weight scale steps must fit INT32 (rule 6)


@dataclass
class CheckReport:
    path: str
    convs: int = 0
    quantize_nodes: int = 0
    skip: str = "none"
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and self.convs > 0

    def summary(self) -> str:
        head = (f"{self.path}: {'OK' if self.ok else 'FAILED'} - {self.convs} convs, "
                f"{self.quantize_nodes} Q/DQ nodes, {self.skip} skip, {len(self.violations)} violations")
        return "\n".join([head, *(f"  - {v}" for v in self.violations)])


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def check_int8(path: str | Path, cpu: bool = False) -> CheckReport:
    """Check ``path`` against the rules above; ``report.ok`` is True only when all hold.

    A file that is not ONNX at all raises ``ValueError`` (the CLI's exit 2), not a failed report (exit 1).
    """
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # a missing file, protobuf's DecodeError, onnx's own errors on a corrupt one
        raise ValueError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc}); export it again") from exc
    graph = model.graph
    consts = constant_values(graph)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    report = CheckReport(str(path))
    bad = report.violations.append

    def is_weight(node: onnx.NodeProto) -> bool:
        src = node.input[0]
        if node.op_type == "DequantizeLinear" and src in producer and producer[src].op_type == "QuantizeLinear":
            src = producer[src].input[0]
        return src in consts

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        report.quantize_nodes += 1
        scale = consts.get(node.input[1])
        zp = consts.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or zp is None:
            bad(f"{node.name}: scale and zero point must be constants")
            continue
        if np.any(scale <= 0):
            bad(f"{node.name}: non-positive scale")
        weight = is_weight(node)
        want = (np.uint8, 128) if cpu and not weight else (np.int8, 0)
        if zp.dtype != want[0] or np.any(zp != want[1]):
            bad(f"{node.name}: zero point {zp.dtype} {zp.ravel()[:3]} (need {np.dtype(want[0]).name} {want[1]})")
        if not weight and scale.size != 1:
            bad(f"{node.name}: activation scale must be per-tensor, got {scale.size} values")

    for node in graph.node:
        if node.op_type not in CONV_OPS:
            continue
        report.convs += 1
        act, weight = producer.get(node.input[0]), producer.get(node.input[1])
        if act is None or act.op_type != "DequantizeLinear":
            bad(f"{node.name}: input is not dequantized INT8 (conv would run in float)")
        if weight is None or weight.op_type != "DequantizeLinear" or not is_weight(weight):
            bad(f"{node.name}: weight is not a constant INT8 DequantizeLinear")
        else:
            scale = consts[weight.input[1]]
            wshape = consts[weight.input[0]].shape if weight.input[0] in consts else \
                consts[producer[weight.input[0]].input[0]].shape
            axis = CONV_OPS[node.op_type]
            if scale.size != wshape[axis] or _axis(weight) != axis:
                bad(f"{node.name}: weight scales must be per output channel on axis {axis} "
                    f"({wshape[axis]} values), got {scale.size} on axis {_axis(weight)}")
            bias = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            in_scale = consts.get(act.input[1]) if act is not None and act.op_type == "DequantizeLinear" else None
            if bias is not None and in_scale is not None and in_scale.size == 1 and scale.size == bias.size:
                codes = np.abs(bias.astype(np.float64)) / (float(in_scale) * scale.astype(np.float64).ravel())
                if np.max(codes) >= BIAS_LIMIT:
                    bad(f"{node.name}: bias of channel {int(np.argmax(codes))} is {np.max(codes):.3g} steps of "
                        f"input x weight scale, above INT32 (2^31): runtimes fold it to an integer and lose it; "
                        "a near-zero weight channel with a bias does this, floor its weight scale")
        outs = consumers.get(node.output[0], [])
        if not outs or any(c.op_type != "QuantizeLinear" for c in outs):
            bad(f"{node.name}: output must feed only QuantizeLinear (found {[c.op_type for c in outs]})")
    if report.convs == 0:
        bad("no Conv nodes found: is this the restoration model?")
    report.skip = skip_kind(graph, producer)
    if _exports_exact_skip(model) and report.skip != "exact":
        bad(f"the model was trained with exact_skip but its output Add reads a {report.skip} input; "
            "re-export it with qdr_train.export.onnx")
    return report


def skip_kind(graph: onnx.GraphProto, producer: dict[str, onnx.NodeProto]) -> str:
    """How the first output's residual Add reads the graph input: ``exact``, ``quantized`` or ``none``."""
    image = graph.input[0].name
    add = producer.get(graph.output[0].name)
    if add is None or add.op_type != "Add":
        return "none"
    for name in add.input:
        if name == image:
            return "exact"
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] == image:
            return "quantized"
    return "none"


def _exports_exact_skip(model: onnx.ModelProto) -> bool:
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        return bool(json.loads(meta.get("model", "{}")).get("exact_skip", False))
    except (ValueError, AttributeError):
        return False
