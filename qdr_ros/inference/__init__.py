"""Pick and build the inference backend; every choice, including each fallback, is recorded in ``reason``.

``auto`` order: TensorRT (``tensorrt`` importable, cuda-python present and a CUDA GPU found;
runs ``.engine``/``.plan`` files directly and builds ``.onnx`` files with ``tensorrt_build``),
then ONNX Runtime with its TensorRT/CUDA execution providers when this ORT build has them, then
ONNX Runtime on the CPU. When TensorRT is there but fails for this model (engine build,
deserialisation or the first inference), ``auto`` logs why, runs ONNX Runtime and keeps the
reason in ``Backend.fallback``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from qdr_ros.inference.base import Backend, BackendUnavailable, Restoration
from qdr_ros.core.model_info import ENGINE_SUFFIXES

BACKENDS = ("auto", "onnxruntime", "tensorrt")
LOG = logging.getLogger(__name__)

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "Restoration", "create_backend"]


def create_backend(model_path: str | os.PathLike[str], backend: str = "auto", threads: int = 0,
                   prefer_cpu_variant: bool = True, device_id: int = 0,
                   engine_cache_dir: str | None = None, warmup_hw: tuple[int, int] | None = None,
                   max_pixels: int | None = None, dla_core: int = -1, force_rebuild: bool = False) -> Backend:
    """Build (and warm up, when ``warmup_hw`` is given) the backend for ``model_path``.

    ``backend`` is ``auto``, ``onnxruntime`` or ``tensorrt``. An explicit choice that cannot run
    raises (``BackendUnavailable``, or ``TensorRTFailure`` naming the stage); ``auto`` falls back
    and says why in the returned backend's ``reason`` (and ``fallback``). ``threads`` (0 = physical
    cores) applies to ORT on CPU. ``max_pixels`` and ``warmup_hw`` shape the TensorRT profile of an
    ``.onnx`` model (``ShapeProfile.for_frames``); ``dla_core`` (-1 = GPU) and ``force_rebuild``
    are TensorRT build options.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from qdr_ros.inference import tensorrt as trt_backend

    def tensorrt(reason: str) -> Backend:
        profile = None
        if max_pixels is not None:
            from qdr_ros.inference.tensorrt_build import ShapeProfile
            from qdr_ros.core.model_info import validate_model_file

            stride = validate_model_file(model_path).stride
            profile = ShapeProfile.for_frames(max_pixels, warmup_hw or (480, 640), stride)
        chosen = trt_backend.TensorRTBackend(model_path, device_id, engine_cache_dir, reason, profile, dla_core,
                                             force_rebuild)
        if warmup_hw is not None:
            chosen.warmup(*warmup_hw)
        return chosen

    is_engine = Path(model_path).suffix.lower() in ENGINE_SUFFIXES
    if backend == "tensorrt" or (backend == "auto" and is_engine):
        return tensorrt("backend tensorrt requested" if backend == "tensorrt"
                        else "auto: a TensorRT engine file runs only on TensorRT")
    notes: list[str] = []
    failure = ""
    if backend == "auto":
        why_not = trt_backend.tensorrt_unavailable_reason(device_id)
        if why_not is None:
            try:
                return tensorrt("auto: TensorRT and a CUDA GPU are available")
            except BackendUnavailable as exc:
                why_not = str(exc)
            except Exception as exc:  # TensorRTFailure, CUDA errors: whatever it is, ORT can still serve
                failure = why_not = str(exc) if isinstance(exc, trt_backend.TensorRTFailure) \
                    else f"TensorRT failed: {type(exc).__name__}: {exc}"
                LOG.warning("auto: falling back to ONNX Runtime for %s because %s", Path(model_path).name, why_not)
        notes.append(f"auto: TensorRT not used: {why_not}")
    chosen = _onnxruntime_backend(model_path, threads, prefer_cpu_variant, device_id, engine_cache_dir, notes)
    chosen.fallback = failure
    if warmup_hw is not None:
        chosen.warmup(*warmup_hw)
    return chosen


def _onnxruntime_backend(model_path: str | os.PathLike[str], threads: int, prefer_cpu_variant: bool,
                         device_id: int, engine_cache_dir: str | None, notes: list[str]) -> Backend:
    import onnxruntime as ort

    from qdr_ros.inference.onnxruntime import GPU_PROVIDERS, OnnxRuntimeBackend

    gpu = [p for p in GPU_PROVIDERS if p in ort.get_available_providers()]
    notes.append(f"ONNX Runtime GPU providers available: {', '.join(gpu)}" if gpu
                 else "this ONNX Runtime build has no GPU execution providers; using CPUExecutionProvider")
    return OnnxRuntimeBackend(model_path, device="cuda" if gpu else "cpu", threads=threads,
                              prefer_cpu_variant=prefer_cpu_variant, device_id=device_id,
                              engine_cache_dir=engine_cache_dir, reason="; ".join(notes))
