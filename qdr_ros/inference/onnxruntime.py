"""ONNX Runtime backend: CPU everywhere, CUDA/TensorRT execution providers where ORT was built with them.

For the float-tensor path ``session.run`` and IO binding with a preallocated output took the same
time, so the simpler ``run`` is used.

On the CPU the intra-op pool threads do not spin-wait for work (``allow_spinning`` 0): spinning
saves a little engine latency with the cores to itself, but it keeps a core busy after every run
that the node's executor, Fast DDS and the camera driver need, so through restore_node the
saturated rate is higher without it, at less CPU (docs/benchmarks.md#design-measurements).

The uint8-I/O twin session (``uint8_io``) needs the ``onnx`` package to build its graph. ``onnx``
has no rosdep key and is not in requirements/runtime.txt, so without it the backend converts
frames in numpy (``Backend._infer_uint8``, slower) and says so in ``reason``. A frame that
needs stride padding is padded in numpy (``Backend.restore_frame``) and then takes the same path.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qdr_ros.inference.base import Backend, Restoration, check_output, restoration
from qdr_ros.inference.uint8_io import BGR_ORDER, CHANNELS, IMAGE, RESTORED, RGB_ORDER, with_uint8_io
from qdr_ros.core.model_info import validate_model_file

LOG = logging.getLogger(__name__)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
CPU_SUFFIX = "_cpu"


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads slow conv kernels down rather than help)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:
        allowed = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or allowed
    except ImportError:
        physical = allowed
    return max(1, min(physical, allowed))


def cpu_variant_of(path: Path) -> Path | None:
    """``efm_int8_cpu.onnx`` next to ``efm_int8.onnx`` (the uint8-activation twin fast on x86 ORT), if present."""
    if path.suffix.lower() != ".onnx" or path.stem.endswith(CPU_SUFFIX):
        return None
    sibling = path.with_name(f"{path.stem}{CPU_SUFFIX}{path.suffix}")
    return sibling if sibling.is_file() else None


def provider_list(device: str, device_id: int = 0,
                  engine_cache_dir: str | None = None) -> list[str | tuple[str, dict[str, str]]]:
    """ORT providers for ``device`` (``"cuda"`` or ``"cpu"``), GPU ones first, CPU always last."""
    providers: list[str | tuple[str, dict[str, str]]] = []
    if device == "cuda":
        available = ort.get_available_providers()
        if "TensorrtExecutionProvider" in available:
            options = {"device_id": str(device_id)}
            if engine_cache_dir:
                options.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(engine_cache_dir))
            providers.append(("TensorrtExecutionProvider", options))
        if "CUDAExecutionProvider" in available:
            providers.append(("CUDAExecutionProvider", {"device_id": str(device_id)}))
    providers.append(CPU_PROVIDER)
    return providers


NO_VNNI = ("this x86 CPU has no VNNI: ONNX Runtime's 8-bit kernels can saturate its 16-bit sums and drift "
           "from the model; check the restored frames once against the FP32 model (docs/robot.md)")


def x86_without_vnni(cpuinfo: str | None = None) -> bool:
    """Whether this is an x86 CPU without VNNI, where ONNX Runtime's u8s8 kernels (VPMADDUBSW) can saturate.

    Reads the Linux ``flags`` line (``cpuinfo`` for tests); False where it cannot tell (not x86, not Linux).
    """
    import platform

    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64") or not Path("/proc/cpuinfo").is_file():
            return False
        cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return flags is not None and not {"avx512_vnni", "avx_vnni"} & set(flags)


class OnnxRuntimeBackend(Backend):
    """Run the ONNX model with ONNX Runtime; on CPU prefer the ``_cpu`` sibling file when it exists."""

    name = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike[str], device: str = "cpu", threads: int = 0,
                 prefer_cpu_variant: bool = True, device_id: int = 0, engine_cache_dir: str | None = None,
                 reason: str = "") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        requested = Path(model_path)
        info = validate_model_file(requested)
        if info.format != "onnx":
            raise ValueError(f"ONNX Runtime cannot run {requested} (a TensorRT engine); use backend:=tensorrt "
                             "or point model_path at the .onnx file")
        notes = [reason] if reason else []
        sibling = cpu_variant_of(requested) if device == "cpu" and prefer_cpu_variant else None
        if sibling is not None:
            info = validate_model_file(sibling)
            notes.append(f"using CPU variant {sibling.name} instead of {requested.name}")
        self.info = info
        self.model_path = str(info.path)
        self.precision = info.precision
        self.threads = threads if threads > 0 else physical_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if device == "cpu":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = provider_list(device, device_id, engine_cache_dir)
        self.session = ort.InferenceSession(self.model_path, options, providers=wanted)
        self.providers = self.session.get_providers()
        # Same model and settings with uint8 camera-frame I/O (see uint8_io); the node's path for 8-bit RGB/BGR.
        self._uint8_session: ort.InferenceSession | None = None
        if importlib.util.find_spec("onnx") is not None:
            import onnx

            self._uint8_session = ort.InferenceSession(
                with_uint8_io(onnx.load(self.model_path), integer_input=device == "cpu").SerializeToString(), options,
                providers=wanted)
        else:
            notes.append("onnx is not installed: 8-bit frames are converted in numpy (pip install onnx for the "
                         "faster uint8-I/O session)")
        first_wanted = wanted[0] if isinstance(wanted[0], str) else wanted[0][0]
        if self.providers[0] != first_wanted:
            notes.append(f"ONNX Runtime could not start {first_wanted} (see its log above); "
                         f"running on {self.providers[0]}")
        self.device = "cpu" if self.providers[0] == CPU_PROVIDER else "cuda"
        notes.append(f"ONNX Runtime {ort.__version__} on {self.providers[0]} with {self.threads} threads, "
                     f"{self.precision} model {info.path.name}")
        if self.device == "cpu" and self.precision == "int8" and x86_without_vnni():
            notes.append(NO_VNNI)
            LOG.warning("onnxruntime backend: %s", NO_VNNI)
        self.reason = "; ".join(notes)
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._extras = [name for name in self._outputs if name != self.info.output_name]
        LOG.info("onnxruntime backend: %s", self.reason)

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch with ``session.run`` (ORT copies nothing it does not have to)."""
        return dict(zip(self._outputs, self.session.run(self._outputs, {self._input: x})))

    def restore_frame(self, image: np.ndarray, bgr: bool = False, out: np.ndarray | None = None) -> Restoration:
        """As ``Backend.restore_frame``; a frame that needs no padding is written straight into ``out``.

        ONNX Runtime writes its output tensor into ``out``'s memory (IO binding), so the restored
        frame is never copied between the session and the caller's message buffer.
        """
        height, width = image.shape[:2]
        if out is None or self._uint8_session is None or self.input_size(height, width) != (height, width):
            return super().restore_frame(image, bgr, out)
        check_output(out, height, width)
        binding = self._uint8_session.io_binding()
        binding.bind_cpu_input(IMAGE, np.ascontiguousarray(image)[None])
        binding.bind_cpu_input(CHANNELS, BGR_ORDER if bgr else RGB_ORDER)
        binding.bind_output(RESTORED, "cpu", 0, np.uint8, (1, height, width, 3), out.ctypes.data)
        for name in self._extras:
            binding.bind_output(name, "cpu")
        self._uint8_session.run_with_iobinding(binding)
        extras = dict(zip(self._extras, (v.numpy() for v in binding.get_outputs()[1:])))
        return restoration(out, extras, height, width)

    def _infer_uint8(self, batch: np.ndarray, bgr: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the uint8-I/O twin session: conversions happen on ONNX Runtime's threads (numpy without onnx)."""
        if self._uint8_session is None:
            return super()._infer_uint8(batch, bgr)
        order = BGR_ORDER if bgr else RGB_ORDER
        restored, *extras = self._uint8_session.run([RESTORED, *self._extras],
                                                    {IMAGE: np.ascontiguousarray(batch), CHANNELS: order})
        return restored, dict(zip(self._extras, extras))

    def describe(self) -> dict[str, object]:
        """Return the base facts plus the ORT thread count and version."""
        return {**super().describe(), "threads": self.threads, "onnxruntime": ort.__version__}
