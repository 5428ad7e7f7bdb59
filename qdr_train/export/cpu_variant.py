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

Convs with fewer output channels than a multiple of 16 (the one-channel gate logit, the 12-channel
tail) get zero filters up to it and a ``Slice`` of their 8-bit output back (``widen_narrow_convs``):
ORT's INT8 conv takes a slower path for such counts (a 16-to-1 3x3 conv at 320x240 took 0.91 ms
alone, 16-to-16 0.56 ms), and each output channel is computed on its own, so no value changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qdr_train.export.graph import constant_values


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Map each tensor name to the nodes that read it."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def shuffle_before_dequant(graph: onnx.GraphProto) -> int:
    """Turn ``DQ -> DepthToSpace`` into ``DepthToSpace -> DQ`` (per-tensor DQ, sole consumer); returns the count."""
    consts = constant_values(graph)
    consumers = _consumers(graph)
    producers = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    moved = 0
    for op in graph.node:
        dq = producers.get(op.input[0]) if op.op_type == "DepthToSpace" else None
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers[dq.output[0]]) != 1 \
                or dq.output[0] in outputs or getattr(consts.get(dq.input[1]), "ndim", None) != 0:
            continue
        codes, values = dq.input[0], op.output[0]
        op.input[0], op.output[0] = codes, f"{values}_8bit"
        dq.input[0], dq.output[0] = op.output[0], values
        moved += 1
    _sort_topologically(graph)
    return moved


def widen_narrow_convs(graph: onnx.GraphProto, multiple: int = 16) -> int:
    """Pad per-channel INT8 convs to ``multiple`` output channels, slicing their 8-bit output back; returns the count.

    Only a conv whose weights are a per-channel ``DequantizeLinear`` of constant codes (as the export
    writes them) and whose output is read by one ``QuantizeLinear`` is touched: the added filters are
    zero (scale 1, zero point 0, bias 0), and the Slice sits between the output Q and its DQs, so
    every consumer sees the same codes as before.
    """
    consts = constant_values(graph)
    inits = {init.name for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    widened = 0
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        if any(a.name == "group" and a.i != 1 for a in conv.attribute):
            continue  # a grouped conv's extra filters would shift which input channels each group reads
        w_dq = producers.get(conv.input[1])
        users = consumers.get(conv.output[0], [])
        if w_dq is None or w_dq.op_type != "DequantizeLinear" or len(w_dq.input) < 3 or w_dq.input[0] not in inits \
                or len(consumers[w_dq.output[0]]) != 1 or len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        weight, scale, zero = consts[w_dq.input[0]], consts.get(w_dq.input[1]), consts.get(w_dq.input[2])
        channels = weight.shape[0]
        wide = -(-channels // multiple) * multiple
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        if wide == channels or getattr(scale, "shape", None) != (channels,) \
                or getattr(zero, "shape", None) != (channels,) or (bias is not None and bias not in consts):
            continue

        def padded(values: np.ndarray, fill: float, role: str) -> str:
            name = f"{conv.name}_{role}_wide{wide}"  # new names: the originals may be shared
            extra = np.full((wide - channels, *values.shape[1:]), fill, values.dtype)
            graph.initializer.append(numpy_helper.from_array(np.concatenate([values, extra]), name))
            return name
        w_dq.input[0], w_dq.input[1] = padded(weight, 0, "weight"), padded(scale, 1, "scale")
        w_dq.input[2] = padded(zero, 0, "zero_point")
        if bias is not None:
            conv.input[2] = padded(consts[bias], 0, "bias")
        out_q = users[0]
        codes = out_q.output[0]
        out_q.output[0] = f"{codes}_wide{wide}"
        bounds = [numpy_helper.from_array(np.array([v], np.int64), f"{codes}_slice_{k}")
                  for k, v in (("starts", 0), ("ends", channels), ("axes", 1))]
        graph.initializer.extend(bounds)
        graph.node.append(helper.make_node("Slice", [out_q.output[0], *(b.name for b in bounds)], [codes],
                                           name=f"{conv.name}_narrow"))
        widened += 1
    _sort_topologically(graph)
    return widened


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
    consts = constant_values(graph)
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
    widen_narrow_convs(graph)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in used]:  # e.g. the narrow convs' originals
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst
