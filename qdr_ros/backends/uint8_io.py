"""Wrap a restoration ONNX model so camera bytes go in and come out: uint8 (N, H, W, 3) in and out.

The model takes (N, 3, H, W) float32 RGB in [0, 1]. Converting a 640x480 rgb8 frame to that and
back in numpy cost ~1.5 ms per frame inside the node (cold message buffers), 7% of the INT8
inference itself; as graph operators ONNX Runtime runs the same steps on its intra-op threads in
~0.3 ms. The wrapper adds, around the unchanged model:

    image (N, H, W, 3) uint8 -> Transpose to planes -> Gather(channels) -> DequantizeLinear(1/255)
      -> model -> QuantizeLinear(1/255, uint8) -> Gather(channels) -> Transpose -> (N, H, W, 3) uint8

``channels`` (int64[3]) is an input: [0, 1, 2] for rgb8, [2, 1, 0] for bgr8, so one session serves
both. QuantizeLinear saturates to [0, 255] and rounds half to even, i.e. exactly the clamp, scale
and ``np.rint`` of ``image_conversions.from_model_output``; DequantizeLinear multiplies by
float32(1/255) where the numpy path divides by 255, so a pixel can differ by one level.

``onnx`` is imported only when a wrapper is built: it has no rosdep key, so the runtime install
(requirements/runtime.txt) leaves it out and the ONNX Runtime backend then converts in numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

IMAGE = "image_u8"
CHANNELS = "channels"
RESTORED = "restored_u8"
RGB_ORDER = np.array([0, 1, 2], np.int64)
BGR_ORDER = np.array([2, 1, 0], np.int64)
_PREFIX = "uint8_io_"


def with_uint8_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` (one float (N, 3, H, W) input and output) with uint8 (N, H, W, 3) I/O."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(graph.input)} and {len(graph.output)}")
    if graph.input[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError(f"input {graph.input[0].name} is not float32")
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    g = wrapped.graph
    x, y = g.input[0].name, g.output[0].name
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
    g.output.extend([helper.make_tensor_value_info(RESTORED, TensorProto.UINT8, ["N", "H", "W", 3])])
    onnx.checker.check_model(wrapped)
    return wrapped
