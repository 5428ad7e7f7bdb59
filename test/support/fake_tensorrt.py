"""A stand-in for TensorRT 10 and cuda-python, for the TensorRT policy tests only (no GPU or TensorRT here).

It keeps the real API's sequence (Builder -> create_network -> OnnxParser.parse_from_file ->
builder config -> build_serialized_network -> Runtime.deserialize_cuda_engine -> execution
context -> set_input_shape / set_tensor_address / execute_async_v3) and the real failure
signals (``None`` from a build or deserialisation, ``False`` from ``execute_async_v3``, errors
through the logger). An "engine" runs its ONNX model with ONNX Runtime on host memory that the
fake ``cudaMalloc`` hands out, and refuses input shapes outside its profile as TensorRT does.
``fail_at`` ("build", "load", "inference") makes that step fail.
"""

from __future__ import annotations

import ctypes
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

OK = 0
MISMATCHED_TIMING_CACHE = b"made on another GPU"  # a timing cache the fake TensorRT refuses, as the real one does


@dataclass
class FakeTensorRT:
    """The fake modules and what the code under test did with them."""

    fail_at: str | None = None
    strongly_typed: bool = True
    dla_cores: int = 0
    gpus: int = 2
    builds: list[dict[str, Any]] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)
    timing_caches: list[bytes] = field(default_factory=list)  # what each set_timing_cache was given
    device: int = 0
    runtime_dla_core: int = -1
    _memory: dict[int, np.ndarray] = field(default_factory=dict)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
        """Put ``tensorrt`` and ``cuda.bindings.runtime`` into ``sys.modules`` for this test."""
        cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
        runtime = self._cudart()
        cuda.bindings, bindings.runtime = bindings, runtime
        for name, module in {"tensorrt": self._tensorrt(), "cuda": cuda, "cuda.bindings": bindings,
                             "cuda.bindings.runtime": runtime}.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self

    def _cudart(self) -> types.ModuleType:
        fake = self
        cudart = types.ModuleType("cuda.bindings.runtime")
        cudart.cudaError_t = types.SimpleNamespace(cudaSuccess=OK)
        cudart.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
        cudart.cudaGetErrorString = lambda err: (OK, b"fake CUDA error")
        cudart.cudaGetDeviceCount = lambda: (OK, fake.gpus)

        def set_device(device: int) -> tuple[int]:
            fake.device = device
            return (OK,) if device < fake.gpus else (100,)

        def malloc(nbytes: int) -> tuple[int, int]:
            block = np.zeros(nbytes, np.uint8)
            fake._memory[block.ctypes.data] = block
            return OK, block.ctypes.data

        def memcpy(dst: int, src: int, nbytes: int, kind: int, stream: int) -> tuple[int]:
            ctypes.memmove(dst, src, nbytes)
            return (OK,)

        cudart.cudaSetDevice = set_device
        cudart.cudaGetDeviceProperties = lambda d: (OK, types.SimpleNamespace(name=b"Fake GPU", major=8, minor=7))
        cudart.cudaStreamCreate = lambda: (OK, 7)
        cudart.cudaStreamSynchronize = cudart.cudaStreamDestroy = lambda stream: (OK,)
        cudart.cudaMalloc = malloc
        cudart.cudaFree = lambda ptr: (OK,) if fake._memory.pop(ptr, None) is not None else (1,)
        cudart.cudaMemcpyAsync = memcpy
        return cudart

    def _tensorrt(self) -> types.ModuleType:
        fake = self
        trt = types.ModuleType("tensorrt")
        trt.__version__ = "10.13.0"

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self) -> None:
                pass

        class IProgressMonitor:
            def __init__(self) -> None:
                pass

        trt.ILogger, trt.IProgressMonitor = ILogger, IProgressMonitor
        # TensorRT's enum values (NvInfer.h: kEXPLICIT_BATCH 0, kSTRONGLY_TYPED 1; 8.6 has only the first)
        flags = {"EXPLICIT_BATCH": 0, **({"STRONGLY_TYPED": 1} if self.strongly_typed else {})}
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        trt.BuilderFlag = types.SimpleNamespace(INT8="int8", FP16="fp16", GPU_FALLBACK="gpu_fallback")
        trt.DeviceType = types.SimpleNamespace(GPU="gpu", DLA="dla")
        trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
        trt.DataType = types.SimpleNamespace(FLOAT="float")
        trt.nptype = lambda dtype: np.float32

        class Network:
            def __init__(self, flags: int) -> None:
                self.flags, self.onnx = flags, None

            def get_input(self, index: int) -> Any:
                return types.SimpleNamespace(name=onnx.load(self.onnx).graph.input[index].name)

        class OnnxParser:
            num_errors = 0

            def __init__(self, network: Network, logger: ILogger) -> None:
                self.network = network

            def parse_from_file(self, path: str) -> bool:
                self.network.onnx = path
                return True

        class Config:
            progress_monitor = None

            def __init__(self) -> None:
                self.flags: set[str] = set()
                self.default_device_type, self.DLA_core, self.shapes = "gpu", -1, None

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                pass

            def set_flag(self, flag: str) -> None:
                self.flags.add(flag)

            def add_optimization_profile(self, profile: Any) -> None:
                self.shapes = profile.shapes

            def create_timing_cache(self, data: bytes) -> Any:
                return types.SimpleNamespace(data=data, serialize=lambda: b"timing")

            def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
                fake.timing_caches.append(cache.data)
                return cache.data != MISMATCHED_TIMING_CACHE  # as TensorRT: False for another device's cache

            def get_timing_cache(self) -> Any:
                return types.SimpleNamespace(serialize=lambda: b"timing")

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                self.logger, self.device, self.num_DLA_cores = logger, fake.device, fake.dla_cores

            def create_network(self, flags: int) -> Network:
                return Network(flags)

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Any:
                profile = types.SimpleNamespace(shapes=None)
                profile.set_shape = lambda name, *shapes: setattr(profile, "shapes", [list(s) for s in shapes])
                return profile

            def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
                fake.builds.append({"device": self.device, "network_flags": network.flags, "onnx": network.onnx,
                                    "flags": config.flags, "device_type": config.default_device_type,
                                    "dla_core": config.DLA_core, "shapes": config.shapes})
                if config.progress_monitor is not None:
                    config.progress_monitor.phase_start("Building engine", None, 2)
                    fake.progress.append("Building engine")
                    config.progress_monitor.step_complete("Building engine", 0)
                    config.progress_monitor.phase_finish("Building engine")
                if fake.fail_at == "build":
                    self.logger.log(ILogger.ERROR, "fake: no implementation obeys the requested constraints")
                    return None
                return json.dumps({"onnx": network.onnx, "shapes": config.shapes}).encode()

        class Runtime:
            def __init__(self, logger: ILogger) -> None:
                self.logger = logger

            def __setattr__(self, name: str, value: Any) -> None:
                if name == "DLA_core":
                    fake.runtime_dla_core = value
                object.__setattr__(self, name, value)

            def deserialize_cuda_engine(self, blob: bytes) -> Engine | None:
                if fake.fail_at == "load":
                    self.logger.log(ILogger.ERROR, "fake: serialization version mismatch")
                    return None
                data = json.loads(blob)
                return Engine(data["onnx"], data["shapes"], self.logger)

        class Engine:
            def __init__(self, path: str, shapes: list[list[int]], logger: ILogger) -> None:
                self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                self.inputs = [i.name for i in self.session.get_inputs()]
                self.outputs = [o.name for o in self.session.get_outputs()]
                self.shapes, self.logger = shapes, logger
                self.num_io_tensors = len(self.inputs) + len(self.outputs)

            def get_tensor_name(self, index: int) -> str:
                return (self.inputs + self.outputs)[index]

            def get_tensor_mode(self, name: str) -> str:
                return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name: str) -> str:
                return trt.DataType.FLOAT

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                nodes = self.session.get_inputs() + self.session.get_outputs()
                shape = next(n.shape for n in nodes if n.name == name)
                return tuple(d if isinstance(d, int) else -1 for d in shape)

            def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
                return [tuple(s) for s in self.shapes]

            def create_execution_context(self) -> Context:
                return Context(self)

        class Context:
            def __init__(self, engine: Engine) -> None:
                self.engine, self.addresses, self.shape = engine, {}, None
                self.output_shapes: dict[str, tuple[int, ...]] = {}

            def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
                low, _, high = self.engine.shapes
                if not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                    return False
                self.shape = tuple(shape)
                outputs = self.engine.session.run(None, {name: np.zeros(shape, np.float32)})
                self.output_shapes = {n: y.shape for n, y in zip(self.engine.outputs, outputs)}
                return True

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return self.output_shapes[name]

            def set_tensor_address(self, name: str, address: int) -> bool:
                self.addresses[name] = address
                return True

            def execute_async_v3(self, stream: int) -> bool:
                if fake.fail_at == "inference":
                    self.engine.logger.log(ILogger.ERROR, "fake: illegal memory access")
                    return False
                name = self.engine.inputs[0]
                size = int(np.prod(self.shape)) * 4
                x = np.frombuffer((ctypes.c_char * size).from_address(self.addresses[name]), np.float32)
                outputs = self.engine.session.run(None, {name: x.reshape(self.shape).copy()})
                for out_name, y in zip(self.engine.outputs, outputs):
                    y = np.ascontiguousarray(y, np.float32)
                    ctypes.memmove(self.addresses[out_name], y.ctypes.data, y.nbytes)
                return True

        trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
        return trt
