"""qdr-bench restore: how fast the EFM restores frames, in the engine alone and through a real ROS graph.

    qdr-bench restore --json results/bench/restore.json          # full run, a few minutes
    qdr-bench restore --quick --no-ros                            # seconds, engine only

Engine-only: every available backend and precision (torch FP32 from ``efm_fp32.pt``, ONNX Runtime
FP32 ``efm_fp32.onnx``, ONNX Runtime INT8 as the node picks it, i.e. ``efm_int8.onnx`` or its
``_cpu`` twin, and TensorRT INT8 where it can run; anything missing is skipped with the reason)
runs the padded input tensor after a warm-up; median, p95, FPS (frames over the summed run times),
MACs per frame (``count_macs`` on the torch model) and the achieved GMAC/s.

End-to-end (ROS): ``restore_node`` runs in its own process, exactly as an operator starts it
(``python -m qdr_ros.nodes.restore_node --ros-args -p model:=... -p threads:=...``); this process publishes
frames and times the restored copies. Per size: the bare transport latency of a pass-through node
(the same restore node with ``bypass:=true``: a Python subscription that republishes the received
message, so both directions and both (de)serialisations are counted), once back to back and once
paced: this process runs the engine before each frame, so the frame meets a transport whose
threads slept and whose caches the engine flushed for as long as during restoration (640x480 here:
2.3 ms paced vs 1.1 ms back to back; node overhead uses the paced one, the report shows both),
then the latency with one frame in flight, then the saturated throughput (two frames in flight,
sent 10 ms apart so the node's depth-1 input cannot drop one, and a frame lost on the way replaced,
so the next frame already waits in the node's mailbox when one finishes and arrives while the node
is busy, as from a camera faster than the node), then the ORT INT8 engine once more in this process
while the node idles; ``--rounds`` repeats that sequence and the medians are reported, each ratio
against its own round's engine timing (on a shared VM the engine's speed drifts by more than the
node's overhead between minutes, so an engine timed minutes earlier made the ratios noise). Node
overhead = end-to-end - engine-only - paced pass-through, i.e. what the node itself adds (conversions,
worker hand-off, output message; timed inside the node at 640x480: 0.1 ms hand-off, 0.2 ms to
stamp and wrap the output, the uint8 call 0.3 ms slower than back to back). CPU% (of one core)
and peak RSS (``VmHWM``) of the node process come from psutil and /proc, one fresh process per size.

Each ONNX Runtime engine (FP32 and INT8) is timed alone, in a fresh process that loads only that
model: timed in one process after torch and the other sessions, the FP32 file ran 47.8 ms against
~32 ms alone at 640x480, which made the INT8 speed-up look larger than it is. torch (and TensorRT)
are timed in this process afterwards. Neither engine spin-waits: the ONNX Runtime backend turns
intra-op spinning off, and torch gets ``OMP_WAIT_POLICY=PASSIVE`` (unless set).

Results: a markdown table (stdout and ``restore.md``), ``--json PATH`` and ``restore_latency.png``
in ``--out`` (default ``results/bench``), with the machine they were measured on and PASS/MISS per
target. The environment comes from ``qdr_ros.core.ros_env`` (Fast DDS LARGE_DATA, a fresh domain).
"""

from __future__ import annotations

import argparse
import array
from dataclasses import asdict, dataclass, field
from importlib import metadata
import json
import os
from pathlib import Path
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np
import psutil

from qdr_ros.core import ros_env
from qdr_ros.core.image_conversions import padded_size, to_model_input
from qdr_ros.tools.processes import stop_process
from qdr_ros.core.report_paths import shown_path

PROG = 'qdr-bench restore'
SIZES = ((256, 256), (640, 480), (1280, 720), (1920, 1080))  # width x height
QUICK_SIZE = (160, 120)
REFERENCE_SIZE = (640, 480)
DEFAULT_OUT = ros_env.REPO_ROOT / 'results' / 'bench'
CASE_LIMIT_S = 20.0  # stop timing one case after this long (at least MIN_RUNS runs), so 1080p FP32 stays bounded
MIN_RUNS = 5
NODE_NS = '/qdr_bench'
START_TIMEOUT_S = 90.0
FRAME_TIMEOUT_S = 5.0
SPIN_WAKE_S = 0.25  # longest wait inside one spin_once, so a dead node is noticed within it
SATURATE_S = 5.0
LOST_AFTER, LOST_MIN_S = 4.0, 0.1  # a saturated frame is lost after 4x the one-in-flight latency (>= 0.1 s)
STAGGER_S = 0.01  # gap between the saturated run's first frames (see NodeProbe.saturated)
ROUNDS = 5  # node measurement rounds per size, each paired with a fresh engine-only timing (medians)
TARGETS = {  # name: (threshold, comparison, unit, description)
    'int8_fps': (30.0, '>=', 'FPS', 'ORT INT8 engine-only at 640x480'),
    'int8_speedup': (2.0, '>=', 'x', 'ORT INT8 vs ORT FP32 at 640x480'),
    'node_overhead': (10.0, '<=', '% of engine', 'node overhead, one frame in flight, 640x480'),
    'saturated_ratio': (90.0, '>=', '% of engine', 'saturated end-to-end vs engine-only FPS, 640x480'),
    'node_peak_rss': (400.0, '<=', 'MB', 'restore node peak RSS, ORT INT8, 640x480'),
    'int8_file_size': (1.0, '<=', 'MB', 'shipped INT8 model file(s)'),
}


class BenchError(RuntimeError):
    """The benchmark cannot run as asked (no model at all, node failed to start); the message says why."""


@dataclass
class Timing:
    """Latency statistics of repeated runs, in milliseconds."""

    runs: int
    median_ms: float
    p95_ms: float
    mean_ms: float
    fps: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        ms = np.asarray(seconds, np.float64) * 1e3
        return cls(runs=len(ms), median_ms=round(float(np.median(ms)), 3),
                   p95_ms=round(float(np.percentile(ms, 95)), 3), mean_ms=round(float(ms.mean()), 3),
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


@dataclass
class Settings:
    """What one benchmark run measures (the parsed command line)."""

    task: str
    models_dir: Path
    sizes: list[tuple[int, int]]
    runs: int
    warmup: int
    threads: int
    ros: bool
    quick: bool
    out: Path
    json_path: Path | None
    saturate_s: float = SATURATE_S
    rounds: int = ROUNDS


# --- machine and models ---

def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, GPU (through nvidia-smi) and library versions: what the numbers depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    gpu = 'none (nvidia-smi not found)'
    if shutil.which('nvidia-smi'):
        try:
            result = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version', '--format=csv,noheader'],
                                    capture_output=True, text=True, timeout=20)
            gpu = result.stdout.strip().replace('\n', '; ') or f'nvidia-smi failed: {result.stderr.strip()}'
        except (OSError, subprocess.TimeoutExpired) as exc:
            gpu = f'nvidia-smi failed: {exc}'
    return {
        'cpu': cpu,
        'logical_cores': os.cpu_count(),
        'physical_cores': psutil.cpu_count(logical=False),
        'memory_gb': round(psutil.virtual_memory().total / 2**30, 1),
        'gpu': gpu,
        'os': platform.platform(),
        'python': platform.python_version(),
        'versions': {d: _version(d) for d in ('onnxruntime', 'onnxruntime-gpu', 'torch', 'numpy', 'tensorrt',
                                              'ros-rclpy', 'ros-rmw-fastrtps-cpp') if _version(d)},
        'load_average_at_start': [round(v, 2) for v in os.getloadavg()],
    }


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


# --- engine-only ---

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


def _timed_alone(engines: list[Engine], sizes: list[tuple[int, int]], settings: Settings,
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

    alone = _timed_alone(engines, sizes, settings, stride)
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


# --- end-to-end through ROS ---

def stamp_of(serialized: bytes) -> tuple[int, int]:
    """``header.stamp`` (sec, nanosec) of a CDR-serialized message whose first field is a std_msgs/Header.

    The probe takes restored frames raw: it needs only their identity, and turning 0.9-6 MB of pixels
    into a Python message per frame would take CPU from the node it measures.
    """
    little = serialized[1] & 1  # encapsulation id: 0x0001 CDR_LE, 0x0000 CDR_BE
    return struct.unpack_from('<iI' if little else '>iI', serialized, 4)


def _peak_rss_mb(proc: psutil.Process, sampled: int) -> float:
    """Peak RSS of a process: the kernel's high-water mark (VmHWM) where it exists, else the sampled maximum."""
    try:
        for line in Path(f'/proc/{proc.pid}/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(sampled / 2**20, 1)


class NodeProbe:
    """This process's side of the graph: starts restore_node in its own process, publishes and times frames."""

    def __init__(self, model: Path, width: int, height: int, threads: int, log_dir: Path, context: Any) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_srvs.srv import SetBool

        self._set_bypass_type = SetBool
        self.log_path = log_dir / f'restore_node_{width}x{height}.log'
        self._log = self.log_path.open('w')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'qdr_ros.nodes.restore_node', '--ros-args', '-r', f'__ns:={NODE_NS}',
             '-p', f'model:={model}', '-p', 'backend:=onnxruntime', '-p', f'threads:={threads}',
             '-p', f'warmup_width:={width}', '-p', f'warmup_height:={height}', '-p', 'bypass:=true'],
            stdout=self._log, stderr=subprocess.STDOUT)
        self.psutil = psutil.Process(self.process.pid)
        self.max_rss = 0
        self.node = rclpy.create_node('qdr_bench_probe', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.pub = self.node.create_publisher(Image, f'{NODE_NS}/image', qos_profile_sensor_data)
        self.arrivals: dict[tuple[int, int], float] = {}
        self.node.create_subscription(Image, f'{NODE_NS}/image_restored', self._on_restored, 10, raw=True)
        self.bypass_client = self.node.create_client(SetBool, f'{NODE_NS}/restore_node/set_bypass')
        self.msg = Image(height=height, width=width, encoding='rgb8', step=width * 3)
        self.msg.data = array.array('B', noise_frame(width, height, seed=1).tobytes())

    def _on_restored(self, serialized: bytes) -> None:
        self.arrivals[stamp_of(serialized)] = time.perf_counter()

    def _spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                return False
            if self.process.poll() is not None:
                raise BenchError(f'restore_node exited with {self.process.returncode}; its log:\n{self.log_tail()}')
            # Returns as soon as a callback ran; a short timeout would wake this process every few ms
            # during inference and take CPU from the node it measures.
            self.executor.spin_once(timeout_sec=min(SPIN_WAKE_S, max(0.0, deadline - time.monotonic())))
        return True

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])

    def wait_ready(self) -> None:
        """Wait until the node is up (its subscription exists only after the model is loaded and warm)."""
        ready = self._spin_until(lambda: self.pub.get_subscription_count() > 0
                                 and self.node.count_publishers(f'{NODE_NS}/image_restored') > 0
                                 and self.bypass_client.service_is_ready(), START_TIMEOUT_S)
        if not ready:
            seen = (f'matched subscriptions on {NODE_NS}/image: {self.pub.get_subscription_count()}, publishers of '
                    f"{NODE_NS}/image_restored: {self.node.count_publishers(f'{NODE_NS}/image_restored')}, "
                    f'set_bypass service ready: {self.bypass_client.service_is_ready()}')
            raise BenchError(f'restore_node did not come up within {START_TIMEOUT_S:.0f} s ({seen}); its log:\n'
                             f'{self.log_tail()}')

    def set_bypass(self, on: bool) -> None:
        future = self.bypass_client.call_async(self._set_bypass_type.Request(data=on))
        if not self._spin_until(future.done, FRAME_TIMEOUT_S) or not future.result().success:
            raise BenchError(f'could not set bypass {on} on restore_node')

    def publish(self) -> tuple[int, int]:
        """Publish the test frame with a fresh stamp; returns the stamp (the frame's identity)."""
        stamp = self.node.get_clock().now().to_msg()
        self.msg.header.stamp = stamp
        self.pub.publish(self.msg)
        self.max_rss = max(self.max_rss, self.psutil.memory_info().rss)
        return stamp.sec, stamp.nanosec

    def one_in_flight(self, frames: int, warmup: int, between: Callable[[], Any] | None = None) -> Timing:
        """Publish a frame, wait for its restored copy, repeat; a frame lost on the way is sent again.

        ``between`` (untimed) runs before each frame is sent, so frames can be paced like real ones.
        """
        seconds: list[float] = []
        for index in range(warmup + frames):
            if between is not None:
                between()
            for _ in range(3):
                start = time.perf_counter()
                key = self.publish()
                if self._spin_until(lambda: key in self.arrivals, FRAME_TIMEOUT_S):
                    break
            else:
                raise BenchError(f'no frame came back from restore_node in 3 tries; its log:\n{self.log_tail()}')
            if index >= warmup:
                seconds.append(self.arrivals[key] - start)
        return Timing.of(seconds)

    def saturated(self, duration_s: float, lost_after_s: float,
                  in_flight: int = 2) -> tuple[float, int, float, int]:
        """Keep ``in_flight`` frames outstanding for ``duration_s``, as a camera faster than the node would.

        The frames go out ``STAGGER_S`` apart, not back to back: the node's input keeps one frame (depth
        1), so two arriving before its executor takes the first would lose one there, and the run would
        measure one frame in flight. A frame still missing after ``lost_after_s`` counts as lost (best
        effort) and is replaced, so a loss never shrinks the pipeline. Returns restored FPS, frames
        restored, node CPU% and frames lost.
        """
        self.arrivals.clear()
        pending: dict[tuple[int, int], float] = {}
        lost = 0
        for index in range(in_flight):
            if index:
                time.sleep(STAGGER_S)
            pending[self.publish()] = time.monotonic()
        self.psutil.cpu_percent(None)
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            self._spin_until(lambda: not pending.keys().isdisjoint(self.arrivals), lost_after_s)
            now = time.monotonic()
            for key, sent in list(pending.items()):
                arrived = key in self.arrivals
                if arrived or now - sent > lost_after_s:
                    lost += not arrived
                    del pending[key]
                    pending[self.publish()] = time.monotonic()
        cpu = self.psutil.cpu_percent(None)
        times = sorted(self.arrivals.values())
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return round(fps, 2), len(times), round(cpu, 1), lost

    def close(self) -> None:
        """Stop the node with SIGINT (a normal exit for it) and free this side."""
        stop_process(self.process)
        self.executor.shutdown()
        self.node.destroy_node()
        self._log.close()


def bench_ros(model: Path, settings: Settings, reference: Engine | None, stride: int) -> list[dict[str, Any]]:
    """Per size, ``settings.rounds`` rounds of: pass-through, end-to-end, saturated, then engine-only again.

    Each round's ratios use the engine timed in this process right after that round, with the node idle,
    so a machine that speeds up or slows down between minutes (turbo, neighbours on a VM) moves both
    sides of every ratio together; the row reports the median over rounds.
    """
    import rclpy
    from rclpy.context import Context

    rows = []
    context = Context()  # our own, so a caller's rclpy state is neither needed nor touched
    rclpy.init(context=context)
    try:
        with tempfile.TemporaryDirectory(prefix='qdr_bench_') as logs:
            for width, height in settings.sizes:
                x = engine_input(width, height, stride)
                frame, restored = noise_frame(width, height), np.empty((height, width, 3), np.uint8)
                probe = NodeProbe(model, width, height, settings.threads, Path(logs), context)
                rounds = []
                try:
                    probe.wait_ready()
                    for _ in range(settings.rounds):
                        probe.set_bypass(True)
                        back_to_back = probe.one_in_flight(settings.runs, settings.warmup)
                        passthrough = (probe.one_in_flight(settings.runs, settings.warmup, lambda: reference.infer(x))
                                       if reference is not None else back_to_back)
                        probe.set_bypass(False)
                        e2e = probe.one_in_flight(settings.runs, settings.warmup)
                        lost_after_s = max(LOST_MIN_S, LOST_AFTER * e2e.median_ms / 1e3)
                        fps, frames, cpu, lost = probe.saturated(settings.saturate_s, lost_after_s)
                        engine = (time_calls(lambda: reference.infer(x), settings.warmup, settings.runs)
                                  if reference is not None else None)
                        node_call = (time_calls(lambda: reference.restore_uint8(frame, out=restored), settings.warmup,
                                                settings.runs)
                                     if reference is not None and reference.restore_uint8 is not None else None)
                        rounds.append(ros_round((passthrough, back_to_back), e2e, (fps, frames, lost), cpu, engine,
                                                node_call))
                    rss = _peak_rss_mb(probe.psutil, probe.max_rss)
                finally:
                    probe.close()
                rows.append(ros_row(width, height, rounds, rss))
                r = rows[-1]
                print(f"  node   {width}x{height:<5} pass-through {r['passthrough_ms']:7.2f} ms (back to back "
                      f"{r['passthrough_back_to_back_ms']:.2f})  end-to-end {r['end_to_end_ms']:7.2f} ms  engine "
                      f"{_fmt(r['engine_median_ms'], 2)} ms  overhead {_fmt(r['overhead_percent'])}% (back to back "
                      f"{_fmt(r['overhead_back_to_back_percent'])}%)  saturated {r['saturated_fps']:6.1f} FPS "
                      f"({_fmt(r['saturated_percent'])}%)  CPU {r['node_cpu_percent']:5.1f}%  peak RSS {rss:6.1f} MB"
                      f"  (median of {len(rounds)} rounds)", flush=True)
    finally:
        rclpy.try_shutdown(context=context)
    return rows


def ros_round(passthrough: tuple[Timing, Timing], e2e: Timing, saturated: tuple[float, int, int], cpu: float,
              engine: Timing | None, node_call: Timing | None = None) -> dict[str, Any]:
    """One round's node measurements and its ratios to the engine timed in the same round.

    ``passthrough`` is (paced, back to back): the pass-through latency with the engine run in this
    process before each frame, as frames meet the transport during restoration (the overhead's
    baseline), and with each frame sent as soon as the previous one came back (reported beside it).
    ``saturated`` is (restored FPS, frames restored, frames lost and replaced) of the saturated run.
    ``node_call`` (the node's uint8 call timed alone) is reported beside the engine, not used in a ratio.
    """
    paced, back_to_back = passthrough
    fps, frames, lost = saturated
    result: dict[str, Any] = {'passthrough': asdict(paced), 'passthrough_back_to_back': asdict(back_to_back),
                              'end_to_end': asdict(e2e), 'saturated_fps': fps,
                              'saturated_frames': frames, 'saturated_lost': lost, 'node_cpu_percent': cpu,
                              'engine': None,
                              'node_call': asdict(node_call) if node_call is not None else None,
                              'overhead_ms': None, 'overhead_percent': None, 'overhead_back_to_back_percent': None,
                              'saturated_percent': None}
    if engine is not None:
        overhead = e2e.median_ms - engine.median_ms - paced.median_ms
        tight = e2e.median_ms - engine.median_ms - back_to_back.median_ms
        result.update(engine=asdict(engine), overhead_ms=round(overhead, 2),
                      overhead_percent=round(100 * overhead / engine.median_ms, 1),
                      overhead_back_to_back_percent=round(100 * tight / engine.median_ms, 1),
                      saturated_percent=round(100 * fps / engine.fps, 1))
    return result


def _median(values: list[Any], digits: int = 2) -> float | None:
    present = [v for v in values if v is not None]
    return round(float(np.median(present)), digits) if present else None


def ros_row(width: int, height: int, rounds: list[dict[str, Any]], rss: float) -> dict[str, Any]:
    """One size: the median over rounds of every measurement and ratio, with the rounds themselves."""
    engines = [r['engine'] for r in rounds if r['engine'] is not None]
    return {'size': f'{width}x{height}', 'width': width, 'height': height, 'rounds': rounds,
            'passthrough_ms': _median([r['passthrough']['median_ms'] for r in rounds], 3),
            'passthrough_back_to_back_ms': _median([r['passthrough_back_to_back']['median_ms'] for r in rounds], 3),
            'end_to_end_ms': _median([r['end_to_end']['median_ms'] for r in rounds], 3),
            'end_to_end_p95_ms': _median([r['end_to_end']['p95_ms'] for r in rounds], 3),
            'engine_median_ms': _median([e['median_ms'] for e in engines], 3),
            'node_call_median_ms': _median([r['node_call']['median_ms'] for r in rounds if r.get('node_call')], 3),
            'engine_fps': _median([e['fps'] for e in engines]),
            'overhead_ms': _median([r['overhead_ms'] for r in rounds]),
            'overhead_percent': _median([r['overhead_percent'] for r in rounds], 1),
            'overhead_back_to_back_percent': _median([r['overhead_back_to_back_percent'] for r in rounds], 1),
            'saturated_fps': _median([r['saturated_fps'] for r in rounds]),
            'saturated_percent': _median([r['saturated_percent'] for r in rounds], 1),
            'saturated_frames': sum(r['saturated_frames'] for r in rounds),
            'saturated_lost': sum(r['saturated_lost'] for r in rounds),
            'node_cpu_percent': _median([r['node_cpu_percent'] for r in rounds], 1),
            'node_peak_rss_mb': rss}


# --- targets and reports ---

def check_targets(engine_rows: list[dict[str, Any]], ros_rows: list[dict[str, Any]],
                  files: dict[str, Path]) -> list[dict[str, Any]]:
    """PASS/MISS per target (n/a when its measurement was not part of this run)."""
    ref = '{}x{}'.format(*REFERENCE_SIZE)
    by_key = {(r['backend'], r['precision'], r['size']): r for r in engine_rows}
    int8, fp32 = by_key.get(('onnxruntime', 'int8', ref)), by_key.get(('onnxruntime', 'fp32', ref))
    node = next((r for r in ros_rows if r['size'] == ref), None)
    int8_files = [files[k] for k in ('int8_onnx', 'int8_cpu_onnx') if k in files]
    values = {
        'int8_fps': 1e3 / int8['median_ms'] if int8 else None,
        'int8_speedup': fp32['median_ms'] / int8['median_ms'] if int8 and fp32 else None,
        'node_overhead': node['overhead_percent'] if node else None,
        'saturated_ratio': node['saturated_percent'] if node else None,
        'node_peak_rss': node['node_peak_rss_mb'] if node else None,
        'int8_file_size': max(p.stat().st_size for p in int8_files) / 1e6 if int8_files else None,
    }
    results = []
    for name, (threshold, op, unit, text) in TARGETS.items():
        value = values[name]
        status = 'n/a' if value is None else (
            'PASS' if (value >= threshold if op == '>=' else value <= threshold) else 'MISS')
        results.append({'name': name, 'description': text, 'value': None if value is None else round(value, 2),
                        'threshold': threshold, 'comparison': op, 'unit': unit, 'status': status})
    return results


def _fmt(value: Any, digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown(report: dict[str, Any]) -> str:
    """Render the human-readable report: machine, engine table, node table, targets."""
    m = report['machine']
    versions = ', '.join(f'{k} {v}' for k, v in m['versions'].items())
    lines = [f"# Restore benchmark ({report['settings']['task']})", '',
             f"Machine: {m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
             f"{m['memory_gb']} GiB, GPU: {m['gpu']}; {versions}; load average at start "
             f"{m['load_average_at_start'][0]}.", '',
             f"Command: `{report['command']}` ({report['elapsed_s']:.0f} s). Threads: {report['settings']['threads']}.",
             '', '## Engine only', '',
             '| engine | device | size | median ms | p95 ms | FPS | GMAC/frame | GMAC/s |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for r in report['engine']:
        lines.append(f"| {r['backend']} {r['precision'].upper()} | {r['device']} | {r['size']} | "
                     f"{_fmt(r['median_ms'], 2)} | {_fmt(r['p95_ms'], 2)} | {_fmt(r['fps'])} | "
                     f"{_fmt(r['macs'] / 1e9 if r['macs'] else None, 2)} | {_fmt(r['gmac_per_s'])} |")
    lines += [''] + [f"Skipped {s['backend']} {s['precision'].upper()}: {s['reason']}" for s in report['skipped']]
    lines += [f"Models: {', '.join(f'{Path(p).name} {s / 1e6:.2f} MB' for p, s in report['model_sizes'].items())}."]
    if report['ros']:
        lines += ['', f"## Through ROS (restore_node in its own process, ORT INT8; pass-through = "
                  f"{report['passthrough_node']})", '',
                  f"Each size: {report['settings']['rounds']} rounds of pass-through (back to back, then paced), "
                  f"end-to-end, {report['settings']['saturate_s']:g} s saturated, then the ORT INT8 engine again in "
                  "the benchmark process with the node idle; ratios are per round against that round's engine, each "
                  "cell is the median over rounds (every round is in the JSON). Pass-through paced = each frame "
                  "sent after one engine run in the benchmark process, so it meets the transport after the same "
                  "work and idle time as a frame during restoration; this is the overhead's baseline. Back to back "
                  "= each frame sent as soon as the previous one came back (a transport kept hot), with the "
                  "overhead against it beside. Engine = the model on a float tensor; node's uint8 call = "
                  "`restore_uint8` on a camera frame as the node makes it (conversions inside the graph, output "
                  "written into the message array), timed the same way, for reference.",
                  '',
                  '| size | pass-through ms paced (back to back) | end-to-end ms (p95) | engine ms '
                  '| node\'s uint8 call ms | node overhead ms (% of engine; vs back to back) '
                  '| saturated FPS (% of engine) | node CPU % | node peak RSS MB |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in report['ros']:
            lines.append(f"| {r['size']} | {_fmt(r['passthrough_ms'], 2)} "
                         f"({_fmt(r['passthrough_back_to_back_ms'], 2)}) | "
                         f"{_fmt(r['end_to_end_ms'], 2)} ({_fmt(r['end_to_end_p95_ms'], 2)}) | "
                         f"{_fmt(r['engine_median_ms'], 2)} | {_fmt(r.get('node_call_median_ms'), 2)} | "
                         f"{_fmt(r['overhead_ms'], 2)} "
                         f"({_fmt(r['overhead_percent'])}%; {_fmt(r['overhead_back_to_back_percent'])}%) | "
                         f"{_fmt(r['saturated_fps'])} "
                         f"({_fmt(r['saturated_percent'])}%) | {_fmt(r['node_cpu_percent'], 0)} | "
                         f"{_fmt(r['node_peak_rss_mb'], 0)} |")
        lines += ['', 'Saturated = two frames in flight, the second arriving while the node works on the first (a '
                  'camera faster than the node); frames lost on the way and replaced, all rounds: '
                  + ', '.join(f"{r['size']} {r['saturated_lost']} of {r['saturated_frames']}" for r in report['ros'])
                  + '.']
    lines += ['', '## Targets', '', '| target | measured | needed | result |', '|---|---:|---:|---|']
    for t in report['targets']:
        lines.append(f"| {t['description']} | {_fmt(t['value'], 2)} {t['unit']} | {t['comparison']} "
                     f"{t['threshold']:g} {t['unit']} | {t['status']} |")
    return '\n'.join(lines) + '\n'


def plot(report: dict[str, Any], path: Path) -> str | None:
    """Median latency vs pixels per engine (and the node end to end); returns why no plot was made, else None."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f'matplotlib is not installed ({exc})'
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    for r in report['engine']:
        series.setdefault(engine_label(r['backend'], r['precision'], r['device']), []).append(
            (r['width'] * r['height'] / 1e6, r['median_ms']))
    for r in report['ros']:
        series.setdefault('restore_node end-to-end (ORT INT8)', []).append(
            (r['width'] * r['height'] / 1e6, r['end_to_end_ms']))
    for label, points in series.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker='o', linestyle='--' if label.startswith('restore_node') else '-', label=label)
    ax.axhline(1e3 / 30, color='grey', linewidth=0.8, linestyle=':', label='30 FPS')
    sizes = sorted({(r['width'], r['height']) for r in report['engine']}, key=lambda s: s[0] * s[1])
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xticks([w * h / 1e6 for w, h in sizes], [f'{w}x{h}' for w, h in sizes])
    ax.minorticks_off()
    ax.set_xlabel('resolution')
    ax.set_ylabel('median latency (ms)')
    m = report['machine']
    ax.set_title(f"EFM {report['settings']['task']}: latency vs resolution\n{m['cpu']}; GPU: {m['gpu']}", fontsize=9)
    ax.grid(True, which='major', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def benchmark(settings: Settings, command: str) -> dict[str, Any]:
    """Measure everything ``settings`` asks for and write the reports; returns the JSON report."""
    started = time.perf_counter()
    ros_env.apply()
    # Before torch loads: its OpenMP threads otherwise spin-wait, and with anything else on two cores
    # that made FP32 runs 10-70x slower (700 vs 9 ms at 160x120); ONNX Runtime does not spin either.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    files = model_files(settings.models_dir, settings.task)
    if not files:
        raise BenchError(f'no models in {settings.models_dir / settings.task} (expected efm_fp32.pt, efm_fp32.onnx, '
                         'efm_int8.onnx, efm_int8_cpu.onnx); train and export them, or pass --models-dir')
    machine = machine_info()
    print(f"{PROG}: {machine['cpu']}, {machine['physical_cores']} physical cores, GPU: {machine['gpu']}", flush=True)
    busy = machine['load_average_at_start'][0]
    if busy > 0.5 * (machine['logical_cores'] or 1):
        print(f'{PROG}: warning: load average {busy} at start; other processes are using the CPU and the '
              'numbers will be slower than this machine can do', flush=True)
    torch_net = torch_model(files)
    engines, skipped = build_engines(files, settings.threads, torch_net)
    for s in skipped:
        print(f"  skipped {s['backend']} {s['precision'].upper()}: {s['reason']}", flush=True)
    stride = int(getattr(torch_net, 'stride', 8) or 8)
    engine_rows = bench_engines(engines, settings.sizes, settings, stride, torch_net)
    ros_rows: list[dict[str, Any]] = []
    if settings.ros and 'int8_onnx' in files:
        reference = next((e for e in engines if e.backend == 'onnxruntime' and e.precision == 'int8'), None)
        ros_rows = bench_ros(files['int8_onnx'], settings, reference, stride)
    elif settings.ros:
        print(f'  skipped ROS end-to-end: efm_int8.onnx not found in {settings.models_dir / settings.task}')
    report = {
        'command': command,
        'machine': machine,
        'settings': {'task': settings.task, 'models_dir': shown_path(settings.models_dir),
                     'sizes': [f'{w}x{h}' for w, h in settings.sizes], 'runs': settings.runs,
                     'warmup': settings.warmup, 'threads': settings.threads, 'quick': settings.quick,
                     'ros': settings.ros, 'rounds': settings.rounds, 'saturate_s': settings.saturate_s,
                     'omp_wait_policy': os.environ['OMP_WAIT_POLICY']},
        'model_sizes': {shown_path(p): p.stat().st_size for p in files.values()},
        'engine': engine_rows,
        'skipped': skipped,
        'passthrough_node': 'restore_node with bypass:=true (same process, republishes the received message)',
        'ros': ros_rows,
        'targets': check_targets(engine_rows, ros_rows, files),
    }
    report['elapsed_s'] = round(time.perf_counter() - started, 1)
    text = markdown(report)
    print('\n' + text, flush=True)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / 'restore.md').write_text(text)
    why_no_plot = plot(report, settings.out / 'restore_latency.png')
    if why_no_plot:
        print(f'{PROG}: no plot: {why_no_plot}')
    if settings.json_path is not None:
        settings.json_path.parent.mkdir(parents=True, exist_ok=True)
        settings.json_path.write_text(json.dumps(report, indent=2) + '\n')
    return report


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT``."""
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must look like 640x480, got {text!r}') from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f'size {text} is too small (at least 8x8)')
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qdr-bench restore``."""
    parser.add_argument('--task', default='auto', help='model folder under --models-dir (default: %(default)s)')
    parser.add_argument('--models-dir', type=Path, default=ros_env.REPO_ROOT / 'models',
                        help='holds <task>/efm_fp32.pt|.onnx, efm_int8.onnx, efm_int8_cpu.onnx (default: %(default)s)')
    parser.add_argument('--sizes', type=parse_size, nargs='+', metavar='WxH',
                        help='frame sizes (default: ' + ' '.join(f'{w}x{h}' for w, h in SIZES) + ')')
    parser.add_argument('--runs', type=int, help='timed runs per case (default 30; 5 with --quick)')
    parser.add_argument('--rounds', type=int,
                        help=f'node measurement rounds per size, median reported (default {ROUNDS}; 1 with --quick)')
    parser.add_argument('--threads', type=int, default=0,
                        help='CPU threads for ORT/torch and the node; 0 = physical cores (default)')
    parser.add_argument('--quick', action='store_true',
                        help=f'smoke run for CI: {QUICK_SIZE[0]}x{QUICK_SIZE[1]} only, few runs, a few seconds')
    parser.add_argument('--no-ros', dest='ros', action='store_false', help='engine-only, no restore_node process')
    parser.add_argument('--json', type=Path, dest='json_path', metavar='PATH', help='also write the report as JSON')
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT,
                        help='folder for restore.md and restore_latency.png (default: %(default)s)')


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve defaults that depend on --quick and the thread count."""
    from qdr_ros.inference.onnxruntime import physical_cores

    for name in ('runs', 'rounds'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BenchError(f'--{name} must be at least 1')
    sizes = args.sizes or ([QUICK_SIZE] if args.quick else list(SIZES))
    return Settings(task=args.task, models_dir=args.models_dir, sizes=sizes,
                    runs=args.runs or (5 if args.quick else 30), warmup=1 if args.quick else 3,
                    threads=args.threads if args.threads > 0 else physical_cores(), ros=args.ros, quick=args.quick,
                    out=args.out, json_path=args.json_path, saturate_s=1.0 if args.quick else SATURATE_S,
                    rounds=args.rounds or (1 if args.quick else ROUNDS))


def command_line(settings: Settings) -> str:
    """Return the command that repeats this run (recorded in the report)."""
    sizes = ' '.join(f'{w}x{h}' for w, h in settings.sizes)
    parts = ['qdr-bench restore', f'--task {settings.task}', f'--sizes {sizes}', f'--runs {settings.runs}',
             f'--rounds {settings.rounds}', f'--threads {settings.threads}']
    if settings.models_dir != ros_env.REPO_ROOT / 'models':
        parts.append(f'--models-dir {settings.models_dir}')
    parts += ['--quick'] * settings.quick + ['--no-ros'] * (not settings.ros)
    if settings.json_path is not None:
        parts.append(f'--json {settings.json_path}')
    if settings.out != DEFAULT_OUT:
        parts.append(f'--out {settings.out}')
    return ' '.join(parts)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``qdr-bench restore``; a BenchError is one line on stderr and exit 1."""
    try:
        settings = settings_from(args)
        benchmark(settings, command_line(settings))
    except BenchError as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return 1
    return 0
