"""Export: ONNX (FP32 and INT8 Q/DQ), the INT8 rule checker and the TensorRT engine builder."""
