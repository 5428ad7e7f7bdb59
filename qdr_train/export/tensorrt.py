"""Build a TensorRT 10 INT8 engine from the Q/DQ ONNX, with a timing cache and a keyed engine cache.

The engine cache key hashes the ONNX file, the TensorRT version, the GPU name and compute
capability, the precision flags and the shape profile: a JetPack upgrade, another GPU or a
retrained model gets a new engine instead of a deserialization failure. The timing cache
makes rebuilds fast. ``tensorrt`` is imported only inside the build, so this module imports
anywhere; without TensorRT the build fails with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from qdr_ros.backends.tensorrt import _cuda, import_cudart, import_tensorrt
from qdr_ros.model_info import file_sha256, validate_model_file


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile over frame sizes (H, W), batch 1; sizes are multiples of the stride."""

    min_hw: tuple[int, int] = (64, 64)
    opt_hw: tuple[int, int] = (480, 640)
    max_hw: tuple[int, int] = (1080, 1920)

    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple((1, 3, *hw) for hw in (self.min_hw, self.opt_hw, self.max_hw))


def default_cache_dir() -> Path:
    """``$QDR_ENGINE_CACHE``, else ``~/.cache/qdr/engines``."""
    return Path(os.environ.get("QDR_ENGINE_CACHE", Path.home() / ".cache" / "qdr" / "engines"))


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str,
                     profile: ShapeProfile, fp16: bool = True) -> str:
    """Name of the cached engine: changes whenever anything that invalidates an engine changes."""
    blob = json.dumps({"onnx": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name, "sm": compute_capability,
                       "profile": asdict(profile), "int8": True, "fp16": fp16}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def gpu_identity(device_id: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') from the CUDA runtime."""
    cudart = import_cudart()
    prop = _cuda(cudart, cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return name.strip("\x00 "), f"{prop.major}.{prop.minor}"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build_engine(onnx_path: Path, engine_path: Path, timing_cache: Path, profile: ShapeProfile,
                 fp16: bool = True, workspace_mb: int = 1024) -> Path:
    """Parse the Q/DQ ONNX and build a serialized INT8 engine (FP16 allowed for float layers)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.set_flag(trt.BuilderFlag.INT8)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, *profile.shapes())
    config.add_optimization_profile(trt_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    _atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    _atomic_write(engine_path, bytes(serialized))
    return engine_path


def build_or_load_engine(onnx_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
                         profile: ShapeProfile | None = None, device_id: int = 0, fp16: bool = True) -> Path:
    """Return the cached engine for this ONNX + TensorRT + GPU, building it first if it does not exist yet."""
    onnx_path = Path(onnx_path)
    validate_model_file(onnx_path)
    trt = import_tensorrt()
    profile = profile or ShapeProfile()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    gpu, sm = gpu_identity(device_id)
    key = engine_cache_key(file_sha256(onnx_path), trt.__version__, gpu, sm, profile, fp16)
    engine = cache / f"{onnx_path.stem}-{key}.engine"
    if engine.exists():
        return engine
    return build_engine(onnx_path, engine, cache / f"timing-trt{trt.__version__}-sm{sm}.cache", profile, fp16)
