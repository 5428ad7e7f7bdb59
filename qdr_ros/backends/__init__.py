"""Pick and build the inference backend; every choice, including each fallback, is recorded in ``reason``.

``auto`` order: TensorRT (``tensorrt`` importable, cuda-python present and a CUDA GPU found;
runs ``.engine``/``.plan`` files directly and ``.onnx`` through qdr_train's engine builder), then
ONNX Runtime with its TensorRT/CUDA execution providers when this ORT build has them, then ONNX
Runtime on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

from qdr_ros.backends.base import Backend, BackendUnavailable
from qdr_ros.model_info import ENGINE_SUFFIXES

BACKENDS = ("auto", "onnxruntime", "tensorrt")

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "create_backend"]


def create_backend(model_path: str | os.PathLike[str], backend: str = "auto", threads: int = 0,
                   prefer_cpu_variant: bool = True, device_id: int = 0,
                   engine_cache_dir: str | None = None) -> Backend:
    """Build the backend for ``model_path``; ``backend`` is ``auto``, ``onnxruntime`` or ``tensorrt``.

    An explicit choice that cannot run raises ``BackendUnavailable``; ``auto`` falls back and says
    why in the returned backend's ``reason``. ``threads`` (0 = physical cores) applies to ORT on CPU.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from qdr_ros.backends import tensorrt as trt_backend

    is_engine = Path(model_path).suffix.lower() in ENGINE_SUFFIXES
    if backend == "tensorrt" or (backend == "auto" and is_engine):
        return trt_backend.TensorRTBackend(model_path, device_id, engine_cache_dir,
                                           reason=f"backend {backend} requested" if backend == "tensorrt"
                                           else "auto: a TensorRT engine file runs only on TensorRT")
    notes: list[str] = []
    if backend == "auto":
        why_not = trt_backend.tensorrt_unavailable_reason(device_id)
        if why_not is None:
            try:
                return trt_backend.TensorRTBackend(model_path, device_id, engine_cache_dir,
                                                   reason="auto: TensorRT and a CUDA GPU are available")
            except BackendUnavailable as exc:
                why_not = str(exc)
        notes.append(f"auto: TensorRT not used: {why_not}")
    return _onnxruntime_backend(model_path, threads, prefer_cpu_variant, device_id, engine_cache_dir, notes)


def _onnxruntime_backend(model_path: str | os.PathLike[str], threads: int, prefer_cpu_variant: bool,
                         device_id: int, engine_cache_dir: str | None, notes: list[str]) -> Backend:
    import onnxruntime as ort

    from qdr_ros.backends.onnxruntime import GPU_PROVIDERS, OnnxRuntimeBackend

    gpu = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]
    notes.append(f"ONNX Runtime GPU providers available: {', '.join(gpu)}" if gpu
                 else "this ONNX Runtime build has no GPU execution providers; using CPUExecutionProvider")
    return OnnxRuntimeBackend(model_path, device="cuda" if gpu else "cpu", threads=threads,
                              prefer_cpu_variant=prefer_cpu_variant, device_id=device_id,
                              engine_cache_dir=engine_cache_dir, reason="; ".join(notes))
