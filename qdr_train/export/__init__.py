"""Export: ONNX (FP32 and INT8 Q/DQ) and the INT8 rule checker (engines: qdr_ros.inference.tensorrt_build)."""
