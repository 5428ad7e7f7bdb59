"""Re-encode a TensorRT-style INT8 Q/DQ ONNX for ONNX Runtime's fastest x86 kernels.

ONNX Runtime's x86 INT8 convs take uint8 activations. Signed INT8 with zero point 0 and
uint8 with zero point 128 are the same grid (q_u8 = q_s8 + 128, same scale), so switching
every per-tensor activation Q/DQ to uint8/128 changes no value. ``Relu`` between a DQ and
a Q becomes ``LeakyRelu(alpha=0)`` (the same function), which ORT runs as an INT8 lookup
(QLinearLeakyRelu) instead of dequantizing the whole tensor. Weights stay signed per-channel.
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
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst
