"""Through ROS: ``restore_node`` in its own process, exactly as an operator starts it, probed from this one.

The node runs ``python -m qdr_ros.nodes.restore_node --ros-args -p model:=... -p threads:=...``
(``qdr_ros.tools.probe``); the benchmark process publishes frames and times the restored copies.
Per size: the bare transport latency of a pass-through node (the same restore node with
``bypass:=true``: a Python subscription that republishes the received message, so both directions
and both (de)serialisations are counted), once back to back and once paced: the benchmark runs the
engine before each frame, so the frame meets a transport whose threads slept and whose caches the
engine flushed for as long as during restoration (node overhead uses the paced one, the report
shows both); then the latency with one frame in flight; then the saturated throughput (two frames
in flight, sent 10 ms apart so the node's depth-1 input cannot drop one, and a frame lost on the way
replaced, so the next frame already waits in the node's mailbox when one finishes, as from a camera
faster than the node); then the ORT INT8 engine once more in the benchmark process while the node
idles. ``--rounds`` repeats that sequence and the medians are reported, each ratio against its own
round's engine timing (on a shared VM the engine's speed drifts by more than the node's overhead
between minutes, so an engine timed minutes earlier made the ratios noise). Node overhead =
end-to-end - engine-only - paced pass-through, i.e. what the node itself adds (conversions, worker
hand-off, output message). CPU% (of one core) and peak RSS (``VmHWM``) of the node process come from
psutil and /proc, one fresh process per size.
"""

from __future__ import annotations

import array
from dataclasses import asdict
from pathlib import Path
import sys
import time
from typing import Any, Callable

import numpy as np
import psutil

from qdr_ros.core.stats import percentiles
from qdr_ros.tools.bench.engines import Engine, Timing, engine_input, noise_frame, time_calls
from qdr_ros.tools.bench.report import fmt
from qdr_ros.tools.bench.settings import BenchError, Settings

NODE_NS = '/qdr_bench'
START_TIMEOUT_S = 90.0
START_ATTEMPTS = 2  # a node the probe never discovers is started once more (see start_discovered)
FRAME_TIMEOUT_S = 5.0
SPIN_WAKE_S = 0.25  # a short wake would rouse the benchmark every few ms during inference and take the node's CPU
LOST_AFTER, LOST_MIN_S = 4.0, 0.1  # a saturated frame is lost after 4x the one-in-flight latency (>= 0.1 s)
STAGGER_S = 0.01  # gap between the saturated run's first frames (see RestoreUnderTest.saturated)
TRIES = 3  # sends of one frame before one-in-flight timing gives up


def peak_rss_mb(pid: int, sampled: int) -> float:
    """Peak RSS of a process in MiB: the kernel's high-water mark (VmHWM) where it exists, else the sampled maximum."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(sampled / 2**20, 1)


class RestoreUnderTest:
    """restore_node (pass-through capable) in its own process and the probe that times its frames.

    The probe has an rclpy context of its own (rclpy is imported here, so engine-only runs work
    without ROS): a restarted node meets a fresh DDS participant on this side too.
    """

    def __init__(self, model: Path, width: int, height: int, threads: int) -> None:
        import rclpy
        from rclpy.context import Context
        from sensor_msgs.msg import Image
        from std_srvs.srv import SetBool

        from qdr_ros.tools.probe import NodeProcess, Probe

        self._set_bool = SetBool
        self.context = Context()  # our own, so a caller's rclpy state is neither needed nor touched
        rclpy.init(context=self.context)
        self.node = NodeProcess.start('qdr_ros.nodes.restore_node', namespace=NODE_NS, params={
            'model': model, 'backend': 'onnxruntime', 'threads': threads, 'warmup_width': width,
            'warmup_height': height, 'bypass': True})
        self.probe = Probe('qdr_bench_probe', context=self.context, watch=[self.node], wake_s=SPIN_WAKE_S)
        self.psutil = psutil.Process(self.node.pid)
        self.max_rss = 0
        self.input = f'{NODE_NS}/image'
        self.pub = self.probe.publisher(self.input)
        self.restored = self.probe.inbox(f'{NODE_NS}/image_restored', raw=True)
        self.msg = Image(height=height, width=width, encoding='rgb8', step=width * 3)
        self.msg.data = array.array('B', noise_frame(width, height, seed=1).tobytes())

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the node is up (its subscription exists only after the model is loaded and warm)."""
        self.probe.wait_for_graph(publishers=[self.restored.topic], subscribers=[self.input], timeout_s=timeout_s)

    def set_bypass(self, on: bool) -> None:
        reply = self.probe.call(self._set_bool, f'{NODE_NS}/restore_node/set_bypass',
                                self._set_bool.Request(data=on), FRAME_TIMEOUT_S)
        if not reply.success:
            raise BenchError(f'restore_node refused bypass {on}: {reply.message}')

    def publish(self) -> tuple[int, int]:
        """Publish the test frame with a fresh stamp; returns the stamp (the frame's identity)."""
        stamp = self.probe.node.get_clock().now().to_msg()
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
            for _ in range(TRIES):
                start = time.perf_counter()
                key = self.publish()
                if self.probe.spin_until(lambda: key in self.restored, FRAME_TIMEOUT_S):
                    break
            else:
                raise BenchError(f'no frame came back from restore_node in {TRIES} tries; its log:\n'
                                 f'{self.node.log_tail()}')
            if index >= warmup:
                seconds.append(self.restored.arrivals[key] - start)
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
        self.restored.clear()
        pending: dict[tuple[int, int], float] = {}
        lost = 0
        for index in range(in_flight):
            if index:
                time.sleep(STAGGER_S)
            pending[self.publish()] = time.monotonic()
        self.psutil.cpu_percent(None)
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            self.probe.spin_until(lambda: not pending.keys().isdisjoint(self.restored.arrivals), lost_after_s)
            now = time.monotonic()
            for key, sent in list(pending.items()):
                arrived = key in self.restored
                if arrived or now - sent > lost_after_s:
                    lost += not arrived
                    del pending[key]
                    pending[self.publish()] = time.monotonic()
        cpu = self.psutil.cpu_percent(None)
        times = sorted(self.restored.arrivals.values())
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return round(fps, 2), len(times), round(cpu, 1), lost

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.node.pid, self.max_rss)

    def close(self) -> None:
        """Stop the node with SIGINT (a normal exit for it) and free this side."""
        import rclpy

        self.probe.close()
        self.node.stop()
        rclpy.try_shutdown(context=self.context)


def start_discovered(model: Path, width: int, height: int, threads: int, timeout_s: float = START_TIMEOUT_S,
                     attempts: int = START_ATTEMPTS) -> RestoreUnderTest:
    """Start restore_node and wait until the probe sees its topics; one that stays unseen is started again.

    Under Fast DDS LARGE_DATA, 3 of 6 bench runs in one session saw a node come up (its log said so)
    that the probe never discovered in 90 s, while the next run came up at once
    (docs/benchmarks.md#discovery). A node that exits is an error at once, not a retry.
    """
    from qdr_ros.tools.probe import ProbeError

    attempt = 1
    while True:
        node = RestoreUnderTest(model, width, height, threads)
        try:
            node.wait_ready(timeout_s)
            return node
        except ProbeError:
            alive = node.node.alive
            node.close()
            if not alive or attempt >= attempts:
                raise
        print(f'  restore_node {width}x{height} was running but not discovered in {timeout_s:g} s (attempt {attempt} '
              f'of {attempts}); starting it again with fresh DDS participants', file=sys.stderr, flush=True)
        attempt += 1


def bench_ros(model: Path, settings: Settings, reference: Engine | None, stride: int) -> list[dict[str, Any]]:
    """Per size, ``settings.rounds`` rounds of: pass-through, end-to-end, saturated, then engine-only again.

    Each round's ratios use the engine timed in this process right after that round, with the node idle,
    so a machine that speeds up or slows down between minutes (turbo, neighbours on a VM) moves both
    sides of every ratio together; the row reports the median over rounds.
    """
    from qdr_ros.tools.probe import ProbeError

    try:
        return [_bench_size(model, width, height, settings, reference, stride) for width, height in settings.sizes]
    except ProbeError as exc:
        raise BenchError(str(exc)) from exc


def _bench_size(model: Path, width: int, height: int, settings: Settings, reference: Engine | None,
                stride: int) -> dict[str, Any]:
    """All rounds at one size, on a fresh restore_node process (so its peak RSS is this size's)."""
    x = engine_input(width, height, stride)
    frame, restored = noise_frame(width, height), np.empty((height, width, 3), np.uint8)
    node = start_discovered(model, width, height, settings.threads)
    rounds = []
    try:
        for _ in range(settings.rounds):
            node.set_bypass(True)
            back_to_back = node.one_in_flight(settings.runs, settings.warmup)
            passthrough = (node.one_in_flight(settings.runs, settings.warmup, lambda: reference.infer(x))
                           if reference is not None else back_to_back)
            node.set_bypass(False)
            e2e = node.one_in_flight(settings.runs, settings.warmup)
            lost_after_s = max(LOST_MIN_S, LOST_AFTER * e2e.median_ms / 1e3)
            fps, frames, cpu, lost = node.saturated(settings.saturate_s, lost_after_s)
            engine = (time_calls(lambda: reference.infer(x), settings.warmup, settings.runs)
                      if reference is not None else None)
            node_call = (time_calls(lambda: reference.restore_uint8(frame, out=restored), settings.warmup,
                                    settings.runs)
                         if reference is not None and reference.restore_uint8 is not None else None)
            rounds.append(ros_round((passthrough, back_to_back), e2e, (fps, frames, lost), cpu, engine, node_call))
        rss = node.peak_rss_mb()
    finally:
        node.close()
    row = ros_row(width, height, rounds, rss)
    print(f"  node   {width}x{height:<5} pass-through {row['passthrough_ms']:7.2f} ms (back to back "
          f"{row['passthrough_back_to_back_ms']:.2f})  end-to-end {row['end_to_end_ms']:7.2f} ms  engine "
          f"{fmt(row['engine_median_ms'], 2)} ms  overhead {fmt(row['overhead_percent'])}% (back to back "
          f"{fmt(row['overhead_back_to_back_percent'])}%)  saturated {row['saturated_fps']:6.1f} FPS "
          f"({fmt(row['saturated_percent'])}%)  CPU {row['node_cpu_percent']:5.1f}%  peak RSS {rss:6.1f} MiB"
          f"  (median of {len(rounds)} rounds)", flush=True)
    return row


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
    found = percentiles((v for v in values if v is not None), (50,))
    return round(found[0], digits) if found else None


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
