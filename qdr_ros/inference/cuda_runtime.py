"""Lazy imports of TensorRT and of cuda-python's CUDA runtime bindings, with what to install when missing.

GPU memory and streams come from NVIDIA's ``cuda-python`` (the bindings TensorRT's own samples
use): small, and available for Jetson too, unlike a CUDA build of torch. Its major version must be
the driver's CUDA's (``pip install 'cuda-python>=12,<13'`` on JetPack 6): 13.x needs a CUDA 13 driver.
Both are imported only when called, so every module that uses them imports anywhere.
"""

from __future__ import annotations

from typing import Any

from qdr_ros.inference.base import BackendUnavailable


def import_tensorrt() -> Any:
    """``import tensorrt`` or ``BackendUnavailable`` with the install hint."""
    try:
        import tensorrt
    except Exception as exc:  # a broken install raises OSError/AttributeError as well as ImportError
        raise BackendUnavailable(
            f"TensorRT is not installed in this Python environment (import tensorrt failed: {exc}). On a Jetson "
            "install JetPack's python3-libnvinfer; elsewhere use backend:=onnxruntime") from exc
    return tensorrt


def import_cudart() -> Any:
    """Import the CUDA runtime bindings of cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed (import failed: {exc}); the TensorRT backend "
                                     "needs it for GPU memory and streams: pip install the cuda-python of the "
                                     "driver's CUDA major version (JetPack 6, CUDA 12: "
                                     "pip install 'cuda-python>=12,<13')") from exc
    return cudart


def _message(cudart: Any, err: Any) -> str:
    message = cudart.cudaGetErrorString(err)[1]
    return message.decode() if isinstance(message, bytes) else str(message)


def cuda_call(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, value...)`` tuple, raising on any error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {what} failed: {_message(cudart, err)}")
    return values[0] if len(values) == 1 else values or None


def cuda_device_count(cudart: Any) -> tuple[int, str]:
    """Count CUDA GPUs; when there are none, also return the driver's reason."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        return 0, _message(cudart, err)
    return int(count), "" if count else "no CUDA-capable device is detected"
