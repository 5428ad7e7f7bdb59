"""INT8 fake quantization in TensorRT's explicit-quantization format (signed, zero point 0).

Weights: per-output-channel scales on axis 0. Activations: one scale per tensor, calibrated
on data, then learned during QAT. Built on PyTorch's own ``fake_quantize_*`` ops, which the
ONNX exporter turns into QuantizeLinear/DequantizeLinear pairs.
"""

from qdr_train.quant.fake_quant import QMAX, QMIN, ActFakeQuant, QuantConv2d, QuantConvTranspose2d
from qdr_train.quant.prepare import calibrate, prepare_qat, quantizers

__all__ = ["QMAX", "QMIN", "ActFakeQuant", "QuantConv2d", "QuantConvTranspose2d", "calibrate",
           "prepare_qat", "quantizers"]
