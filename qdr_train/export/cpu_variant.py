"""Re-encode a TensorRT-style INT8 Q/DQ ONNX for ONNX Runtime's fastest x86 kernels.

ONNX Runtime's x86 INT8 convs take uint8 activations. Signed INT8 with zero point 0 and
uint8 with zero point 128 are the same grid (q_u8 = q_s8 + 128, same scale), so switching
every per-tensor activation Q/DQ to uint8/128 changes no value. ``Relu`` between a DQ and
a Q becomes ``LeakyRelu(alpha=0)`` (the same function), which ORT runs as an INT8 lookup
(QLinearLeakyRelu) instead of dequantizing the whole tensor. Weights stay signed per-channel.

The final pixel shuffle moves to the 8-bit side of its DequantizeLinear
(``shuffle_before_dequant``): DepthToSpace only copies values and a per-tensor DQ acts on each
value alone, so no output value changes, while the copy moves a quarter of the bytes (and in
the node's uint8 path ORT fuses the residual Add and the output Q into one QLinearAdd), which
made a frame measurably faster (docs/benchmarks.md). The same move for the decoder's nearest
resizes made it slower (ORT's uint8 NCHW Resize is slower than its float one), so they stay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def shuffle_before_dequant(graph: onnx.GraphProto) -> int:
    """Turn ``DQ -> DepthToSpace`` into ``DepthToSpace -> DQ`` (per-tensor DQ, sole consumer); returns the count."""
    consts = _constant_values(graph)
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    moved = 0
    for op in graph.node:
        dq = producers.get(op.input[0]) if op.op_type == "DepthToSpace" else None
        if dq is None or dq.op_type != "DequantizeLinear" or consumers[dq.output[0]] != 1 \
                or dq.output[0] in outputs or getattr(consts.get(dq.input[1]), "ndim", None) != 0:
            continue
        codes, values = dq.input[0], op.output[0]
        op.input[0], op.output[0] = codes, f"{values}_8bit"
        dq.input[0], dq.output[0] = op.output[0], values
        moved += 1
    _sort_topologically(graph)
    return moved


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (ONNX requires it)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [n for n in pending if all(name in ready for name in n.input)]
        if not runnable:
            raise ValueError("graph has a cycle or an input nobody produces")
        for node in runnable:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if n not in runnable]
    del graph.node[:]
    graph.node.extend(ordered)


def to_cpu_variant(src: str | Path, dst: str | Path) -> Path:
    """Write the uint8-activation twin of ``src`` to ``dst``."""
    model = onnx.load(str(src))
    graph = model.graph
    consts = _constant_values(graph)
    weights = {init.name for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    u8_zero = "qdr_u8_zero_point_128"
    graph.initializer.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), u8_zero))
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = consts.get(node.input[2])
        if zp is None or zp.ndim != 0 or zp.dtype != np.int8:
            continue
        data = node.input[0]
        if node.op_type == "DequantizeLinear":
            q = producers.get(data)
            data = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else data
        if data in weights:
            continue
        node.input[2] = u8_zero
    for node in graph.node:
        if node.op_type == "Relu" and producers.get(node.input[0]) is not None \
                and producers[node.input[0]].op_type == "DequantizeLinear":
            node.op_type = "LeakyRelu"
            node.attribute.append(helper.make_attribute("alpha", 0.0))
    shuffle_before_dequant(graph)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst
