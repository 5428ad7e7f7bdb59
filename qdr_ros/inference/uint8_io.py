"""Wrap a restoration ONNX model so camera bytes go in and come out: uint8 (N, H, W, 3) in and out.

The model takes (N, 3, H, W) float32 RGB in [0, 1]. Converting a 640x480 rgb8 frame to that and
back in numpy cost ~1.5 ms per frame inside the node (cold message buffers), 7% of the INT8
inference itself; as graph operators ONNX Runtime runs the same steps on its intra-op threads in
~0.3 ms. The wrapper adds, around the unchanged model:

    image (N, H, W, 3) uint8 -> Transpose to planes -> Gather(channels) -> DequantizeLinear(1/255)
      -> model -> QuantizeLinear(1/255, uint8) -> Gather(channels) -> Transpose -> (N, H, W, 3) uint8

``channels`` (int64[3]) is an input: [0, 1, 2] for rgb8, [2, 1, 0] for bgr8, so one session serves
both. Other outputs of the model (an "auto" model's ``condition`` and ``gate``) stay as they are,
float32 at the padded size. QuantizeLinear saturates to [0, 255] and rounds half to even, i.e.
exactly the clamp, scale and ``np.rint`` of ``image_conversions.from_model_output``; DequantizeLinear multiplies by
float32(1/255) where the numpy path divides by 255, so a pixel can differ by one level.

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


def with_uint8_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with uint8 (N, H, W, 3) image I/O in place of its float (N, 3, H, W) ones.

    The image output is the only output, or the one named ``restored``; any others are kept unchanged.
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
    nodes = before + list(g.node) + after
    del g.node[:]
    g.node.extend(nodes)
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, ["N", "H", "W", 3]),
                    helper.make_tensor_value_info(CHANNELS, TensorProto.INT64, [3])])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(RESTORED, TensorProto.UINT8, ["N", "H", "W", 3]), *extras])
    onnx.checker.check_model(wrapped)
    return wrapped
