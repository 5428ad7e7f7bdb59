"""Engine only: every available backend and precision, each on the padded input tensor after a warm-up.

torch FP32 from ``efm_fp32.pt``, ONNX Runtime FP32 ``efm_fp32.onnx``, ONNX Runtime INT8 as the node picks
it (``efm_int8.onnx`` or its ``_cpu`` twin) and TensorRT INT8 where it can run; anything missing is
skipped with the reason. Reported: median, p95, FPS (frames over the summed run times), MACs per frame
(``count_macs`` on the torch model) and the achieved GMAC/s.

Each ONNX Runtime engine (FP32 and INT8) is timed alone, in a fresh process that loads only that
model: timed in one process after torch and the other sessions, the FP32 file ran much slower than
alone, which made the INT8 speed-up look larger than it is. torch (and TensorRT) are timed in the
benchmark process afterwards. Neither engine spin-waits: the ONNX Runtime backend turns intra-op
spinning off, and torch gets ``OMP_WAIT_POLICY=PASSIVE`` (unless set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
from pathlib import Path
import time
from typing import Any, Callable, Sequence

import numpy as np

from qdr_ros.core.image_conversions import padded_size, to_model_input
from qdr_ros.core.report_paths import shown_path
from qdr_ros.core.stats import percentiles
from qdr_ros.tools.bench.settings import Settings

CASE_LIMIT_S = 20.0  # stop timing one case after this long (at least MIN_RUNS runs), so 1080p FP32 stays bounded
MIN_RUNS = 5


@dataclass
class Timing:
    """Latency statistics of repeated runs, in milliseconds.

    ``fps`` is runs per second of their total time (1000 / mean), the rate the saturated share is
    measured against; the INT8 >= 30 FPS target reads 1000 / median instead (report.check_targets).
    """

    runs: int
    median_ms: float
    p95_ms: float
    mean_ms: float
    fps: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        ms = np.asarray(seconds, np.float64) * 1e3
        median, p95 = percentiles(ms, (50, 95))
        return cls(runs=len(ms), median_ms=round(median, 3), p95_ms=round(p95, 3), mean_ms=round(float(ms.mean()), 3),
                   fps=round(float(1e3 * len(ms) / ms.sum()), 2))


@dataclass
class Engine:
    """One backend/precision ready to time: ``infer`` takes the padded (1, 3, H, W) float32 input.

    ``restore_uint8`` (where the backend has one) is the node's own call: an HxWx3 uint8 frame in,
    written into the given output frame, conversions included.
    """

    backend: str
    precision: str
    device: str
    model: str
    infer: Callable[[np.ndarray], Any] = field(repr=False)
    note: str = ''
    restore_uint8: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return engine_label(self.backend, self.precision, self.device)


def engine_label(backend: str, precision: str, device: str) -> str:
    """``onnxruntime INT8``, or ``torch FP16 (cuda)`` off the CPU: one name in the log, table and plot."""
    return f"{backend} {precision.upper()}{'' if device == 'cpu' else f' ({device})'}"


def model_files(models_dir: Path, task: str) -> dict[str, Path]:
    """Return the shipped files of ``task`` that exist: fp32_pt, fp32_onnx, int8_onnx, int8_cpu_onnx."""
    folder = models_dir / task
    names = {'fp32_pt': 'efm_fp32.pt', 'fp32_onnx': 'efm_fp32.onnx', 'int8_onnx': 'efm_int8.onnx',
             'int8_cpu_onnx': 'efm_int8_cpu.onnx'}
    return {key: folder / name for key, name in names.items() if (folder / name).is_file()}


def torch_model(files: dict[str, Path]) -> Any:
    """Load the FP32 torch model from ``efm_fp32.pt``, else rebuild it from ONNX ``model`` metadata (MACs only)."""
    from qdr_train.engine.checkpoint import load_model
    from qdr_train.models import build_model

    if 'fp32_pt' in files:
        return load_model(files['fp32_pt'])[0]
    from qdr_ros.core.model_info import validate_model_file

    for key in ('fp32_onnx', 'int8_onnx'):
        if key in files and 'model' in (meta := validate_model_file(files[key]).metadata):
            return build_model(json.loads(meta['model'])).eval()
    return None


def build_engines(files: dict[str, Path], threads: int, torch_net: Any) -> tuple[list[Engine], list[dict[str, str]]]:
    """Every engine that can run here, and a reason for each one that cannot."""
    from qdr_ros.inference import create_backend
    from qdr_ros.inference.tensorrt import tensorrt_unavailable_reason

    engines: list[Engine] = []
    skipped: list[dict[str, str]] = []

    def skip(backend: str, precision: str, reason: str) -> None:
        skipped.append({'backend': backend, 'precision': precision, 'reason': reason})

    if 'fp32_pt' in files:
        import torch

        torch.set_num_threads(threads)

        @torch.inference_mode()
        def torch_infer(x: np.ndarray) -> Any:
            return torch_net(torch.from_numpy(x))

        engines.append(Engine('torch', 'fp32', 'cpu', str(files['fp32_pt']), torch_infer,
                              f'torch {torch.__version__}, {torch.get_num_threads()} threads'))
        if torch.cuda.is_available():
            engines += torch_cuda_engines(torch_net, files['fp32_pt'])
        else:
            skip('torch', 'fp32/fp16 cuda', 'no CUDA device visible to torch')
    else:
        skip('torch', 'fp32', 'efm_fp32.pt not found')
    for key, precision in (('fp32_onnx', 'fp32'), ('int8_onnx', 'int8')):
        if key not in files:
            skip('onnxruntime', precision, f'efm_{precision}.onnx not found')
            continue
        backend = create_backend(files[key], 'onnxruntime', threads=threads, prefer_cpu_variant=True)
        engines.append(Engine('onnxruntime', backend.precision, backend.device, backend.model_path, backend.infer,
                              backend.reason, backend.restore_uint8))
    why_not = tensorrt_unavailable_reason()
    if why_not is not None:
        skip('tensorrt', 'int8', why_not)
    elif 'int8_onnx' not in files:
        skip('tensorrt', 'int8', 'efm_int8.onnx not found')
    else:
        backend = create_backend(files['int8_onnx'], 'tensorrt')
        engines.append(Engine('tensorrt', 'int8', backend.device, backend.model_path, backend.infer, backend.reason))
    return engines, skipped


def torch_cuda_engines(torch_net: Any, model: Path) -> list[Engine]:
    """Run the FP32 model on the GPU in FP32 and FP16, copying the frame in and the result out as a node must."""
    import copy

    import torch

    name = torch.cuda.get_device_name()
    engines = []
    for precision, dtype in (('fp32', torch.float32), ('fp16', torch.float16)):
        net = copy.deepcopy(torch_net).to('cuda', dtype).eval()

        @torch.inference_mode()
        def infer(x: np.ndarray, net: Any = net, dtype: Any = dtype) -> np.ndarray:
            return net(torch.from_numpy(x).to('cuda', dtype)).float().cpu().numpy()

        engines.append(Engine('torch', precision, 'cuda', str(model), infer,
                              f'torch {torch.__version__} on {name}, host<->device copies included'))
    return engines


def time_calls(call: Callable[[], Any], warmup: int, runs: int, limit_s: float = CASE_LIMIT_S) -> Timing:
    """Time ``call`` ``runs`` times after ``warmup`` calls; stops early after ``limit_s`` (never below MIN_RUNS)."""
    for _ in range(warmup):
        call()
    seconds: list[float] = []
    start = time.perf_counter()
    while len(seconds) < runs and (len(seconds) < min(MIN_RUNS, runs) or time.perf_counter() - start < limit_s):
        t = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t)
    return Timing.of(seconds)


def noise_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Return a noisy HxWx3 uint8 frame (the network's cost does not depend on the content)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def engine_input(width: int, height: int, stride: int) -> np.ndarray:
    """Return the padded (1, 3, H, W) float32 tensor every engine timing runs on."""
    return to_model_input(noise_frame(width, height), 'rgb8', stride=stride)[0]


def time_alone(model: str, threads: int, sizes: list[tuple[int, int]], warmup: int, runs: int,
               stride: int) -> list[dict[str, Any]]:
    """Time one ONNX Runtime model at every size in this (fresh) process: nothing else is loaded here."""
    from qdr_ros.inference import create_backend

    backend = create_backend(model, 'onnxruntime', threads=threads, prefer_cpu_variant=True)
    timings = []
    for width, height in sizes:
        x = engine_input(width, height, stride)
        timings.append(asdict(time_calls(lambda: backend.infer(x), warmup, runs)))
    return timings


def timed_alone(engines: list[Engine], sizes: list[tuple[int, int]], settings: Settings,
                stride: int) -> dict[str, list[dict[str, Any]]]:
    """Time each ONNX Runtime engine in its own spawned process, one after the other."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    alone = {}
    for engine in engines:
        if engine.backend != 'onnxruntime':
            continue
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn')) as pool:
            alone[engine.label] = pool.submit(time_alone, engine.model, settings.threads, sizes, settings.warmup,
                                              settings.runs, stride).result()
    return alone


def bench_engines(engines: list[Engine], sizes: list[tuple[int, int]], settings: Settings, stride: int,
                  torch_net: Any) -> list[dict[str, Any]]:
    """Engine-only timing of every engine at every size, with MACs and GMAC/s (ONNX Runtime: each alone)."""
    from qdr_train.models.profile import count_macs

    alone = timed_alone(engines, sizes, settings, stride)
    rows = []
    for index, (width, height) in enumerate(sizes):
        x = engine_input(width, height, stride)
        macs = count_macs(torch_net, *padded_size(height, width, stride)) if torch_net is not None else None
        for engine in engines:
            timing = (Timing(**alone[engine.label][index]) if engine.label in alone
                      else time_calls(lambda: engine.infer(x), settings.warmup, settings.runs))
            rows.append({'backend': engine.backend, 'precision': engine.precision, 'device': engine.device,
                         'model': shown_path(engine.model), 'timed_alone': engine.label in alone,
                         'size': f'{width}x{height}', 'width': width,
                         'height': height,
                         **asdict(timing), 'macs': macs,
                         'gmac_per_s': round(macs / 1e6 / timing.median_ms, 2) if macs else None})
            print(f'  engine {engine.label:<18} {width}x{height:<5} median {timing.median_ms:8.2f} ms  '
                  f'p95 {timing.p95_ms:8.2f} ms  {timing.fps:7.1f} FPS  ({timing.runs} runs)', flush=True)
    return rows
