"""Reading an ONNX graph's constants, shared by the export, the CPU twin and the INT8 check."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every initializer and ``Constant`` node tensor (``value`` attribute) of ``graph``, by output name."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values
