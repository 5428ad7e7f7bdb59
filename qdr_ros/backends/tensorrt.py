"""TensorRT 10 backend: runs a serialized engine, or builds/loads one from the ONNX file via qdr_train's builder.

GPU memory and streams come from NVIDIA's ``cuda-python`` bindings (``pip install cuda-python``;
the same bindings TensorRT's own samples use): they are small and exist for Jetson too, unlike a
CUDA build of torch. ``tensorrt`` and ``cuda`` are imported lazily, so this module imports on any
machine and the failure surfaces as ``BackendUnavailable`` with what to install.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from qdr_ros.backends.base import Backend, BackendUnavailable
from qdr_ros.model_info import validate_model_file

LOG = logging.getLogger(__name__)


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
    """Import the CUDA runtime bindings of cuda-python (new and old module layout)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise BackendUnavailable(f"cuda-python is not installed (import failed: {exc}); the TensorRT backend "
                                     "needs it for GPU memory: pip install cuda-python") from exc
    return cudart


def _cuda(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, value...)`` tuple, raising on any error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        message = cudart.cudaGetErrorString(err)[1]
        raise RuntimeError(f"CUDA {what} failed: {message.decode() if isinstance(message, bytes) else message}")
    return values[0] if len(values) == 1 else values


def cuda_device_count(cudart: Any) -> tuple[int, str]:
    """Count CUDA GPUs; when there are none, also return the driver's reason."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        message = cudart.cudaGetErrorString(err)[1]
        return 0, message.decode() if isinstance(message, bytes) else str(message)
    return int(count), "" if count else "no CUDA-capable device is detected"


def tensorrt_unavailable_reason(device_id: int = 0) -> str | None:
    """Why TensorRT cannot run here (missing library, no GPU), or None when it can."""
    try:
        import_tensorrt()
        cudart = import_cudart()
    except BackendUnavailable as exc:
        return str(exc)
    count, why = cuda_device_count(cudart)
    if count <= device_id:
        return f"TensorRT is installed but CUDA GPU {device_id} is not usable ({why or f'{count} GPU(s) found'})"
    return None


def _build_engine(onnx_path: Path, cache_dir: str | None, device_id: int) -> bytes:
    """Return the serialized engine for an ONNX file from qdr's keyed engine cache (built on first use)."""
    from qdr_train.export.tensorrt import build_or_load_engine

    return build_or_load_engine(onnx_path, cache_dir, device_id=device_id).read_bytes()


class TensorRTBackend(Backend):
    """One engine, one execution context, one CUDA stream; call ``infer`` from one thread at a time."""

    name = "tensorrt"

    def __init__(self, model_path: str | os.PathLike[str], device_id: int = 0,
                 engine_cache_dir: str | None = None, reason: str = "") -> None:
        trt = import_tensorrt()
        self._cudart = cudart = import_cudart()
        count, why = cuda_device_count(cudart)
        if count <= device_id:
            raise BackendUnavailable(f"TensorRT needs CUDA GPU {device_id}, but {why or f'{count} GPU(s) found'}; "
                                     "use backend:=onnxruntime on this machine")
        self.device_id = device_id
        _cuda(cudart, cudart.cudaSetDevice(device_id), "cudaSetDevice")
        self.info = validate_model_file(model_path)
        self.model_path = str(self.info.path)
        if self.info.format == "onnx":
            blob = _build_engine(self.info.path, engine_cache_dir, device_id)
            self.precision = self.info.precision
            source = f"engine built/loaded from {self.info.path.name}"
        else:
            blob = self.info.path.read_bytes()
            self.precision = "unknown"
            source = f"serialized engine {self.info.path.name}"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise BackendUnavailable(f"TensorRT {trt.__version__} could not load {self.info.path.name}: engines only "
                                     "run on the TensorRT version and GPU model that built them; rebuild it here")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendUnavailable(f"engine {self.info.path.name} has inputs {inputs} and outputs {outputs}; "
                                     "a qdr model has one of each; rebuild it from the exported ONNX")
        self._input, self._output = inputs[0], outputs[0]
        self._in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._input)))
        self._out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self._output)))
        self.context = self.engine.create_execution_context()
        self._stream = _cuda(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}
        self.device = "cuda"
        self.providers = [f"TensorRT {trt.__version__}", f"cuda:{device_id}"]
        notes = [reason] if reason else []
        notes.append(f"TensorRT {trt.__version__} on CUDA GPU {device_id}, {source}")
        self.reason = "; ".join(notes)
        LOG.info("tensorrt backend: %s", self.reason)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """Device pointer for ``name`` with at least ``nbytes``; grows (never shrinks) as frame sizes change."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_cuda(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Copy in, ``execute_async_v3`` on the backend's stream, copy out, synchronize."""
        cudart = self._cudart
        _cuda(cudart, cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        host_in = np.ascontiguousarray(x, dtype=self._in_dtype)
        if not self.context.set_input_shape(self._input, host_in.shape):
            low, _, high = self.engine.get_tensor_profile_shape(self._input, 0)
            raise ValueError(f"input shape {host_in.shape} is outside the engine's profile "
                             f"{tuple(low)}..{tuple(high)}; rebuild the engine with a larger profile or resize frames")
        host_out = np.empty(tuple(self.context.get_tensor_shape(self._output)), self._out_dtype)
        d_in = self._device_buffer(self._input, host_in.nbytes)
        d_out = self._device_buffer(self._output, host_out.nbytes)
        to_dev, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda(cudart, cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, to_dev, self._stream),
              "copy to GPU")
        self.context.set_tensor_address(self._input, d_in)
        self.context.set_tensor_address(self._output, d_out)
        if not self.context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log above")
        _cuda(cudart, cudart.cudaMemcpyAsync(host_out.ctypes.data, d_out, host_out.nbytes, to_host, self._stream),
              "copy from GPU")
        _cuda(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {self._output: host_out.astype(np.float32, copy=False)}

    def close(self) -> None:
        """Free GPU buffers and the stream (also done at garbage collection)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(ptr)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        self.close()

    def describe(self) -> dict[str, object]:
        """Return the base facts plus the GPU index."""
        return {**super().describe(), "device_id": self.device_id}
