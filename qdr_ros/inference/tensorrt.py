"""TensorRT 10 backend: runs a serialized engine, or builds/loads one from the ONNX file (``tensorrt_build``).

Sizes: the engine accepts the frame sizes of its optimization profile. Inputs below the profile's
minimum are padded up by reflection and the outputs cropped back (``Backend.min_hw``); frames
above its maximum are shrunk by the caller (restore_node: ``downscale_to_fit`` to ``max_hw``), and an
``.onnx`` model gets the profile of the node's size policy (``ShapeProfile.for_frames``). So a
frame the node accepts never fails for its size.

Failures name their stage (``TensorRTFailure.stage``: build, load, inference) so that
``backend:=auto`` can fall back to ONNX Runtime and say why. ``tensorrt`` and ``cuda`` are
imported lazily: this module imports on any machine.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from qdr_ros.inference.base import Backend, BackendUnavailable
from qdr_ros.inference.cuda_runtime import cuda_call, cuda_device_count, import_cudart, import_tensorrt
from qdr_ros.inference.tensorrt_build import (EngineBuildError, ShapeProfile, build_or_load_engine, make_logger,
                                              recent_errors, sidecar_path)
from qdr_ros.core.model_info import INPUT_NAME, describe_engine, validate_model_file

LOG = logging.getLogger(__name__)


class TensorRTFailure(RuntimeError):
    """TensorRT is installed but failed at ``stage`` (``build``, ``load`` or ``inference``) for this model."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"TensorRT {stage} failed: {message}")
        self.stage = stage


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


def _sidecar_metadata(engine: Path) -> dict[str, str]:
    """Return the ONNX metadata saved beside an engine by ``tensorrt_build`` (empty when there is none)."""
    try:
        return dict(json.loads(sidecar_path(engine).read_text())["metadata"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


class TensorRTBackend(Backend):
    """One engine, one execution context, one CUDA stream; call it from one thread at a time."""

    name = "tensorrt"

    def __init__(self, model_path: str | os.PathLike[str], device_id: int = 0,
                 engine_cache_dir: str | None = None, reason: str = "", profile: ShapeProfile | None = None,
                 dla_core: int = -1, force_rebuild: bool = False) -> None:
        trt = import_tensorrt()
        self._cudart = cudart = import_cudart()
        count, why = cuda_device_count(cudart)
        if count <= device_id:
            raise BackendUnavailable(f"TensorRT needs CUDA GPU {device_id}, but {why or f'{count} GPU(s) found'}; "
                                     "use backend:=onnxruntime on this machine")
        self.device_id = device_id
        cuda_call(cudart, cudart.cudaSetDevice(device_id), "cudaSetDevice")
        info = validate_model_file(model_path)
        self.model_path = str(info.path)
        if info.format == "onnx":
            try:
                engine_path = build_or_load_engine(info.path, engine_cache_dir, profile, device_id,
                                                   dla_core=dla_core, force_rebuild=force_rebuild)
            except EngineBuildError as exc:
                raise TensorRTFailure("build", str(exc)) from exc
            source = f"engine {engine_path} built from/cached for {info.path.name}"
        else:
            engine_path = info.path
            source = f"serialized engine {info.path.name}"
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if dla_core >= 0:
            self._runtime.DLA_core = dla_core
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            errors = recent_errors(self._logger.errors, 3)
            raise TensorRTFailure("load", f"TensorRT {trt.__version__} could not deserialise {engine_path.name} "
                                  f"({errors}); engines run only on the TensorRT version and GPU model that built "
                                  "them: rebuild it here (force_engine_rebuild:=true, or point model at the .onnx)")
        self._describe_io(trt, info, engine_path)
        self.context = self.engine.create_execution_context()
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}
        self.device = f"dla:{dla_core}" if dla_core >= 0 else "cuda"
        self.providers = [f"TensorRT {trt.__version__}", f"cuda:{device_id}"]
        notes = [reason] if reason else []
        notes.append(f"TensorRT {trt.__version__} on CUDA GPU {device_id}{f' DLA core {dla_core}' * (dla_core >= 0)}, "
                     f"{source}, frames {self.min_hw[0]}x{self.min_hw[1]}..{self.max_hw[0]}x{self.max_hw[1]}")
        self.reason = "; ".join(notes)
        LOG.info("tensorrt backend: %s", self.reason)

    def _describe_io(self, trt: Any, info: Any, engine_path: Path) -> None:
        """Read tensor names, dtypes and the profile's size range from the engine; refuse what qdr cannot run."""
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME]:
            raise TensorRTFailure("load", f"engine {engine_path.name} has inputs {inputs}; a qdr model has one input "
                                  f"{INPUT_NAME!r}: rebuild it from the exported ONNX")
        try:
            self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        except TypeError as exc:  # BF16, FP8, INT4 have no NumPy type
            raise TensorRTFailure("load", f"engine {engine_path.name} has a tensor type NumPy cannot hold ({exc}); "
                                  "rebuild it from the exported ONNX") from exc
        described = [(n, "tensor(float)" if self._dtypes[n] in (np.float32, np.float16) else str(self._dtypes[n]),
                      tuple(engine.get_tensor_shape(n))) for n in outputs]
        metadata = info.metadata if info.format == "onnx" else _sidecar_metadata(engine_path)
        try:
            self.info = describe_engine(info, metadata, described)
        except ValueError as exc:
            raise TensorRTFailure("load", str(exc)) from exc
        self.precision = self.info.precision
        self._outputs = outputs
        low, _, high = (tuple(int(v) for v in dims) for dims in engine.get_tensor_profile_shape(INPUT_NAME, 0))
        stride = self.stride
        self.min_hw = (-(-low[2] // stride) * stride, -(-low[3] // stride) * stride)
        self.max_hw = (high[2] // stride * stride, high[3] // stride * stride)
        if self.min_hw[0] > self.max_hw[0] or self.min_hw[1] > self.max_hw[1]:
            raise TensorRTFailure("load", f"engine {engine_path.name} accepts {low}..{high}, which holds no size that "
                                  f"is a multiple of the model stride {stride}; rebuild it with a wider profile")

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """Device pointer for ``name`` with at least ``nbytes``; grows (never shrinks) as frame sizes change."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                del self._buffers[name]  # gone before it is freed: a failing cudaMalloc must not leave it for close()
                cuda_call(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(cuda_call(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _bind(self, name: str, ptr: int) -> None:
        """Point the context's tensor ``name`` at ``ptr``; TensorRT says False (not an exception) when it refuses."""
        if not self.context.set_tensor_address(name, ptr):
            errors = recent_errors(self._logger.errors, 3)
            raise TensorRTFailure("inference", f"set_tensor_address({name!r}) returned false ({errors})")

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Copy in, ``execute_async_v3`` on the backend's stream, copy every output out, synchronize."""
        cudart = self._cudart
        cuda_call(cudart, cudart.cudaSetDevice(self.device_id), "cudaSetDevice")
        host_in = np.ascontiguousarray(x, dtype=self._dtypes[INPUT_NAME])
        if not self.context.set_input_shape(INPUT_NAME, host_in.shape):
            raise ValueError(f"input shape {host_in.shape} is outside the engine's profile "
                             f"{self.min_hw}..{self.max_hw}; bring frames into it with input_size/fit_scale")
        to_dev, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        d_in = self._device_buffer(INPUT_NAME, host_in.nbytes)
        cuda_call(cudart, cudart.cudaMemcpyAsync(d_in, host_in.ctypes.data, host_in.nbytes, to_dev, self._stream),
                  "copy to GPU")
        self._bind(INPUT_NAME, d_in)
        results = {}
        for name in self._outputs:
            results[name] = np.empty(tuple(self.context.get_tensor_shape(name)), self._dtypes[name])
            self._bind(name, self._device_buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(int(self._stream)):
            errors = recent_errors(self._logger.errors, 3)
            raise TensorRTFailure("inference", f"execute_async_v3 returned false ({errors})")
        for name, host in results.items():
            cuda_call(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes, to_host,
                                                     self._stream), "copy from GPU")
        cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: host.astype(np.float32, copy=False) for name, host in results.items()}

    def warmup(self, height: int, width: int, runs: int = 2) -> float:
        """As ``Backend.warmup``; a failure is a ``TensorRTFailure`` of stage ``inference`` (auto falls back)."""
        try:
            return super().warmup(height, width, runs)
        except TensorRTFailure:
            raise
        except Exception as exc:  # CUDA errors and anything TensorRT raises on its first run
            raise TensorRTFailure("inference", f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Free the GPU buffers, the stream, the execution context and the engine (also at garbage collection)."""
        cudart = getattr(self, "_cudart", None)
        buffers, stream = getattr(self, "_buffers", {}), getattr(self, "_stream", None)
        if cudart is not None and (buffers or stream is not None):  # not closed, and __init__ got that far
            cudart.cudaSetDevice(self.device_id)  # the buffers live on this backend's GPU, not the current one
            for ptr, _ in buffers.values():
                cudart.cudaFree(ptr)
            self._buffers = {}
            if stream is not None:
                cudart.cudaStreamDestroy(stream)
                self._stream = None
        self.context = self.engine = None  # their device memory (most of it) goes with the last reference

    def __del__(self) -> None:
        self.close()

    def describe(self) -> dict[str, object]:
        """Return the base facts plus the GPU index and the frame sizes the engine accepts."""
        return {**super().describe(), "device_id": self.device_id,
                "engine_frames": f"{self.min_hw[0]}x{self.min_hw[1]}..{self.max_hw[0]}x{self.max_hw[1]}"}
