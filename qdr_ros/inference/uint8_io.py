"""Wrap a restoration ONNX model so camera bytes go in and come out: uint8 (N, H, W, 3) in and out.

The model takes (N, 3, H, W) float32 RGB in [0, 1]. Converting a camera frame to that and back in
numpy inside the node costs a noticeable share of the INT8 inference itself (cold message
buffers); as graph operators ONNX Runtime runs the same steps on its intra-op threads several
times faster (docs/benchmarks.md#design-measurements). The wrapper adds, around the unchanged model:

    image (N, H, W, 3) uint8 -> Transpose to planes -> Gather(channels) -> DequantizeLinear(1/255)
      -> model -> QuantizeLinear(1/255, uint8) -> Gather(channels) -> Transpose -> (N, H, W, 3) uint8

``channels`` (int64[3]) is an input: [0, 1, 2] for rgb8, [2, 1, 0] for bgr8, so one session serves
both. Other outputs of the model (an "auto" model's ``condition`` and ``gate``) stay as they are,
float32 at the padded size. QuantizeLinear saturates to [0, 255] and rounds half to even, as the
clamp, scale and ``np.rint`` of ``image_conversions.from_model_output`` do, but divides by float32(1/255)
where the numpy path multiplies by 255: a value within float rounding of a half level (about 8 of a
random 640x480 frame's values; none seen on real model outputs) can land one level apart. Likewise
DequantizeLinear multiplies by float32(1/255) where the numpy path divides by 255.

A model whose first step quantizes the float image to uint8 (``QuantizeLinear``, one scale, as
the ``_cpu`` INT8 variants do) gets that step as a 256-entry table on the camera bytes instead
(``integer_input``): ONNX Runtime's ``QLinearLeakyRelu`` with alpha 1 maps each uint8 value
through DequantizeLinear(1/255) and the model's quantizer, both evaluated by ONNX Runtime itself
when the session starts, so the float image is never made for it. The table is used only where
it gives the same byte as the float steps for every one of the 256 inputs, checked in ONNX
Runtime when the wrapper is built; the restored frame, condition and gate are unchanged. The
image's other use, the model's exact skip (``restored = image + residual``), ONNX Runtime already
fuses into an integer ``QLinearAdd`` on the uint8 image. ``QLinearLeakyRelu`` is a CPU kernel,
so GPU sessions keep the float steps.

``onnx`` is imported only when a wrapper is built: it has no rosdep key, so the runtime install
(requirements/runtime.txt) leaves it out and the ONNX Runtime backend then converts in numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

from qdr_ros.core.model_info import OUTPUT_NAME

IMAGE = "image_u8"
CHANNELS = "channels"
RESTORED = "restored_u8"
RGB_ORDER = np.array([0, 1, 2], np.int64)
BGR_ORDER = np.array([2, 1, 0], np.int64)
_PREFIX = "uint8_io_"
_MS_DOMAIN = "com.microsoft"


def with_uint8_io(model: onnx.ModelProto, integer_input: bool = False) -> onnx.ModelProto:
    """Return a copy of ``model`` with uint8 (N, H, W, 3) image I/O in place of its float (N, 3, H, W) ones.

    The image output is the only output, or the one named ``restored``; any others are kept unchanged.
    ``integer_input`` replaces the model's input quantizer by a table on the uint8 image where that
    gives the same bytes (see the module docstring); for ONNX Runtime on the CPU.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    names = [o.name for o in graph.output]
    if len(graph.input) != 1 or not names or (len(names) > 1 and OUTPUT_NAME not in names):
        raise ValueError(f"expected one input and the output {OUTPUT_NAME!r} (or a single output), got inputs "
                         f"{[i.name for i in graph.input]} and outputs {names}")
    if graph.input[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError(f"input {graph.input[0].name} is not float32")
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    g = wrapped.graph
    x, y = g.input[0].name, names[0] if len(names) == 1 else OUTPUT_NAME
    extras = []
    for output in g.output:
        if output.name != y:
            extras.append(onnx.ValueInfoProto())
            extras[-1].CopyFrom(output)
    p = _PREFIX
    g.initializer.extend([numpy_helper.from_array(np.array(1 / 255, np.float32), p + "scale"),
                          numpy_helper.from_array(np.array(0, np.uint8), p + "zero")])
    before = [helper.make_node("Transpose", [IMAGE], [p + "planes"], perm=[0, 3, 1, 2]),
              helper.make_node("Gather", [p + "planes", CHANNELS], [p + "rgb"], axis=1),
              helper.make_node("DequantizeLinear", [p + "rgb", p + "scale", p + "zero"], [x])]
    after = [helper.make_node("QuantizeLinear", [y, p + "scale", p + "zero"], [p + "out_rgb"]),
             helper.make_node("Gather", [p + "out_rgb", CHANNELS], [p + "out_planes"], axis=1),
             helper.make_node("Transpose", [p + "out_planes"], [RESTORED], perm=[0, 2, 3, 1])]
    model_nodes = list(g.node)
    if integer_input:
        model_nodes = _integer_input(g, model_nodes, x, p + "rgb", p + "scale", p + "zero")
        if not any(o.domain == _MS_DOMAIN for o in wrapped.opset_import):
            wrapped.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    nodes = before + model_nodes + after
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, ["N", "H", "W", 3]),
                    helper.make_tensor_value_info(CHANNELS, TensorProto.INT64, [3])])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(RESTORED, TensorProto.UINT8, ["N", "H", "W", 3]), *extras])
    onnx.checker.check_model(wrapped)
    return wrapped


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """Return the value of ``name`` when it is an initializer or a Constant node's output, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and list(node.output) == [name] and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _integer_input(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], image: str, image_u8: str, scale: str,
                   zero: str) -> list[onnx.NodeProto]:
    """``nodes`` with the model's per-tensor uint8 quantizer of ``image`` read from ``image_u8`` through a table.

    Unchanged when there is no such quantizer or when the table differs from the float steps for any input.
    """
    from onnx import helper

    quantizers = [n for n in nodes if image in n.input]
    quantizers = [n for n in quantizers if n.op_type == "QuantizeLinear" and list(n.input[:1]) == [image]]
    if len(quantizers) != 1 or len(quantizers[0].input) != 3:
        return nodes
    quantizer = quantizers[0]
    q_scale, q_zero = (_constant(graph, name) for name in quantizer.input[1:])
    if q_scale is None or q_zero is None or q_scale.size != 1 or q_zero.size != 1 or q_zero.dtype != np.uint8:
        return nodes
    if not _table_matches(float(q_scale.reshape(-1)[0]), int(q_zero.reshape(-1)[0]), q_scale.dtype):
        return nodes
    table = helper.make_node("QLinearLeakyRelu", [image_u8, scale, zero, *quantizer.input[1:]], list(quantizer.output),
                             name=_PREFIX + "input_table", domain=_MS_DOMAIN, alpha=1.0)
    return [table if n is quantizer else n for n in nodes]


def _table_matches(q_scale: float, q_zero: int, scale_type: np.dtype) -> bool:
    """Whether ONNX Runtime's table gives the bytes of DequantizeLinear(1/255) -> QuantizeLinear for all 256 values."""
    from onnx import TensorProto, helper, numpy_helper
    import onnxruntime as ort

    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "z"),
             numpy_helper.from_array(np.array(q_scale, scale_type), "qs"),
             numpy_helper.from_array(np.array(q_zero, np.uint8), "qz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["f"]),
             helper.make_node("QuantizeLinear", ["f", "qs", "qz"], ["float_steps"]),
             helper.make_node("QLinearLeakyRelu", ["x", "s", "z", "qs", "qz"], ["table"], domain=_MS_DOMAIN, alpha=1.0)]
    graph = helper.make_graph(nodes, "check", [helper.make_tensor_value_info("x", TensorProto.UINT8, [256])],
                              [helper.make_tensor_value_info(n, TensorProto.UINT8, [256])
                               for n in ("float_steps", "table")], inits)
    check = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS_DOMAIN, 1)])
    check.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(check.SerializeToString(), options, providers=["CPUExecutionProvider"])
        float_steps, table = session.run(None, {"x": np.arange(256, dtype=np.uint8)})
    except Exception:  # an ONNX Runtime without the contrib op: keep the float steps
        return False
    return bool(np.array_equal(float_steps, table))
