"""Build a TensorRT engine from the Q/DQ ONNX on the robot, with a timing cache and a keyed engine cache.

Engine building is a runtime concern (as in Isaac ROS's TensorRT node): ``restore_node`` builds
the engine of its ``.onnx`` model on first use, and ``qdr-train build-engine`` calls this module
to build one ahead of time. Written against the TensorRT 10 Python API:

- the ONNX is read with ``OnnxParser.parse_from_file`` (external weight files resolve next to it);
- the network is strongly typed where TensorRT has ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
  (10.x; always on in 11): precisions then come from the Q/DQ nodes of the model itself, since
  the ``INT8``/``FP16`` builder flags are deprecated in 10.12 and gone in 11. Only a TensorRT
  without strong typing (8.x) gets ``INT8`` (+ ``FP16`` for the float layers) flags instead;
- ``dla_core`` >= 0 builds for that DLA core (Jetson AGX/NX), layers DLA cannot run fall back to the GPU;
- the build runs on CUDA device ``device_id`` and logs its phases (``IProgressMonitor``, 10.x).

Engine cache (``engine_cache_dir`` parameter / ``--cache-dir``; default ``$QDR_ENGINE_CACHE``,
else ``~/.cache/qdr/engines``): ``<onnx stem>-<key>.engine``, where the key hashes the ONNX file,
the TensorRT version, the GPU name and compute capability, the shape profile and the build
options, so a JetPack upgrade, another GPU or a retrained model gets a new engine instead of a
deserialisation failure; ``<engine>.json`` beside it keeps the ONNX metadata (stride, labels) and
``timing-trt<version>-sm<cc>.cache`` makes rebuilds fast. ``force_rebuild`` ignores a cached engine.
Nothing is ever deleted: remove old engines by hand.

``tensorrt`` and ``cuda`` are imported inside the calls, so this module imports anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qdr_ros.core.atomic import atomic_write
from qdr_ros.inference.base import BackendUnavailable
from qdr_ros.inference.cuda_runtime import cuda_call, import_cudart, import_tensorrt
from qdr_ros.core.model_info import file_sha256, validate_model_file

LOG = logging.getLogger(__name__)
MIN_SIDE = 64
# A 16:9 frame of max_pixels fits the profile in landscape and in portrait.
ASPECT = 16 / 9


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX or build an engine from it; the message holds TensorRT's errors."""


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile over frame sizes (H, W), batch 1; sizes are multiples of the stride."""

    min_hw: tuple[int, int] = (64, 64)
    opt_hw: tuple[int, int] = (480, 640)
    max_hw: tuple[int, int] = (1080, 1920)

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple((1, 3, *hw) for hw in (self.min_hw, self.opt_hw, self.max_hw))

    @property
    def is_fixed(self) -> bool:
        return self.min_hw == self.opt_hw == self.max_hw

    def fixed(self) -> ShapeProfile:
        """Return the profile of one frame size, ``opt_hw`` (what DLA needs)."""
        return ShapeProfile(self.opt_hw, self.opt_hw, self.opt_hw)

    @classmethod
    def for_frames(cls, max_pixels: int, opt_hw: tuple[int, int], stride: int) -> ShapeProfile:
        """Return the profile of restore_node's size policy: every frame it restores at full size fits.

        The maximum is a square whose side holds a 16:9 frame of ``max_pixels`` either way round
        (1920x1920 for 1920x1080), so portrait and 4:3 frames (1600x1200) fit too; frames of other
        shapes are shrunk to fit (``downscale_to_fit`` to ``Backend.max_hw``), smaller ones padded up to ``MIN_SIDE``.
        """
        side = _round_up(math.sqrt(max_pixels * ASPECT), stride)
        low = min(_round_up(MIN_SIDE, stride), side)
        opt = tuple(min(max(_round_up(v, stride), low), side) for v in opt_hw)
        return cls((low, low), (opt[0], opt[1]), (side, side))


def _round_up(value: float, stride: int) -> int:
    return max(stride, int(math.ceil(value / stride)) * stride)


def default_cache_dir() -> Path:
    """``$QDR_ENGINE_CACHE``, else ``~/.cache/qdr/engines``."""
    return Path(os.environ.get("QDR_ENGINE_CACHE", Path.home() / ".cache" / "qdr" / "engines"))


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str,
                     profile: ShapeProfile, fp16: bool = True, strongly_typed: bool = False,
                     dla_core: int = -1) -> str:
    """Name of the cached engine: changes whenever anything that invalidates an engine changes."""
    # a strongly typed build takes its types from the ONNX file: the fp16 option changes nothing there
    blob = json.dumps({"onnx": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name, "sm": compute_capability,
                       "profile": asdict(profile), "int8": True, "fp16": fp16 and not strongly_typed,
                       "strongly_typed": strongly_typed,
                       "dla_core": dla_core}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def gpu_identity(device_id: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') from the CUDA runtime."""
    cudart = import_cudart()
    prop = cuda_call(cudart, cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name.strip("\x00 "), f"{prop.major}.{prop.minor}"


def strongly_typed_flag(trt: Any) -> Any | None:
    """``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` where this TensorRT has it, else None."""
    return getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)


def network_flags(trt: Any) -> int:
    """``create_network`` flags: strongly typed where TensorRT has it (10+), else explicit batch.

    TensorRT 8.6's ``create_network(0)`` makes an implicit-batch network, which its ONNX parser refuses;
    from 10 on every network has an explicit batch and the flag is deprecated.
    """
    strong = strongly_typed_flag(trt)
    return 1 << int(strong if strong is not None else trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def timing_cache_path(cache_dir: Path, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT version and GPU model: TensorRT refuses a cache made on another device."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-") or "gpu"
    return cache_dir / f"timing-trt{trt_version}-{gpu}-sm{compute_capability}.cache"


def make_logger(trt: Any) -> Any:
    """Return a ``trt.ILogger`` that forwards to Python logging and keeps the errors for exception messages."""
    levels = {trt.ILogger.INTERNAL_ERROR: logging.ERROR, trt.ILogger.ERROR: logging.ERROR,
              trt.ILogger.WARNING: logging.WARNING, trt.ILogger.INFO: logging.DEBUG,
              trt.ILogger.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: deque[str] = deque(maxlen=20)  # the latest 20 explain a failure; a backend runs for hours

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            LOG.log(level, "TensorRT: %s", msg)

    return Logger()


def _progress_monitor(trt: Any, label: str) -> Any:
    """Return a ``trt.IProgressMonitor`` that logs the top-level build phases (a build can take minutes)."""

    class Progress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.start = time.monotonic()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            LOG.log(logging.DEBUG if parent_phase else logging.INFO, "TensorRT build of %s: %s (%d steps, %.0f s in)",
                    label, phase_name, num_steps, time.monotonic() - self.start)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            LOG.debug("TensorRT build of %s: %s done", label, phase_name)

    return Progress()


def recent_errors(items: list[str] | deque[str], count: int = 5) -> str:
    """Join the last ``count`` TensorRT errors for an exception message (they explain a False or None result)."""
    return "; ".join(list(items)[-count:]) if items else "see the TensorRT log above"


def build_engine(onnx_path: Path, engine_path: Path, timing_cache: Path, profile: ShapeProfile,
                 fp16: bool = True, workspace_mb: int = 1024, dla_core: int = -1) -> Path:
    """Parse the Q/DQ ONNX and build a serialized engine (strongly typed where TensorRT can)."""
    trt = import_tensorrt()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    strong = strongly_typed_flag(trt)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise EngineBuildError(f"TensorRT {trt.__version__} could not parse {onnx_path}: {recent_errors(errors)}; "
                               "check it with `qdr-train check-int8` and `polygraphy inspect model`")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if strong is None:
        config.set_flag(trt.BuilderFlag.INT8)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    if dla_core >= 0:
        if builder.num_DLA_cores <= dla_core:
            raise BackendUnavailable(f"dla_core {dla_core} requested but this device has {builder.num_DLA_cores} "
                                     "DLA core(s); use dla_core:=-1 (GPU) or a core below that count")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if hasattr(config, "progress_monitor"):
        config.progress_monitor = _progress_monitor(trt, onnx_path.name)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, *profile.shapes())
    config.add_optimization_profile(trt_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        LOG.warning("TensorRT refused the timing cache %s (made on another device or version); building "
                    "without it and replacing it", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    start = time.monotonic()
    LOG.info("building TensorRT %s engine of %s (profile %s, %s, %s); this can take minutes, the cache "
             "makes it once per model, TensorRT version and GPU", trt.__version__, onnx_path.name,
             "..".join("x".join(map(str, hw)) for hw in (profile.min_hw, profile.opt_hw, profile.max_hw)),
             "strongly typed" if strong is not None else "INT8" + ("+FP16" if fp16 else "") + " flags",
             f"DLA core {dla_core}" if dla_core >= 0 else "GPU")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path}: "
                               f"{recent_errors(logger.errors)}")
    atomic_write(engine_path, bytes(serialized))  # the engine first: a failing timing cache loses no build
    atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    LOG.info("built %s in %.0f s", engine_path, time.monotonic() - start)
    return engine_path


def build_or_load_engine(onnx_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
                         profile: ShapeProfile | None = None, device_id: int = 0, fp16: bool = True,
                         dla_core: int = -1, force_rebuild: bool = False) -> Path:
    """Return the cached engine for this ONNX + TensorRT + GPU + options, building it on GPU ``device_id`` if needed."""
    onnx_path = Path(onnx_path)
    info = validate_model_file(onnx_path)
    trt = import_tensorrt()
    cudart = import_cudart()
    cuda_call(cudart, cudart.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
    profile = profile or ShapeProfile()
    if dla_core >= 0 and not profile.is_fixed:
        # DLA runs only fixed shapes (min = opt = max): with a range every layer would quietly fall back
        # to the GPU. Frames of other sizes are padded up or shrunk to this one (Backend.min_hw/max_hw).
        profile = profile.fixed()
        LOG.info("DLA core %d: the engine is built for %dx%d frames only (DLA takes no dynamic shapes); "
                 "set warmup_width/warmup_height to the camera's size", dla_core, profile.opt_hw[1], profile.opt_hw[0])
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    gpu, sm = gpu_identity(device_id)
    key = engine_cache_key(file_sha256(onnx_path), trt.__version__, gpu, sm, profile, fp16,
                           strongly_typed_flag(trt) is not None, dla_core)
    engine = cache / f"{onnx_path.stem}-{key}.engine"
    if engine.exists() and not force_rebuild:
        LOG.info("using cached TensorRT engine %s", engine)
        return engine
    build_engine(onnx_path, engine, timing_cache_path(cache, trt.__version__, gpu, sm), profile, fp16,
                 dla_core=dla_core)
    atomic_write(sidecar_path(engine), json.dumps({"onnx": str(onnx_path), "metadata": info.metadata}).encode())
    return engine


def sidecar_path(engine: Path) -> Path:
    """``<engine>.json``: the ONNX metadata (stride, condition labels) that the engine itself does not keep."""
    return engine.with_name(engine.name + ".json")
