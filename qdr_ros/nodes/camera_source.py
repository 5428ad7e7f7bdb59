"""camera_source: replay an image folder, a video or a rosbag2 as a camera driver would, optionally degraded.

Publishes ``image`` (``sensor_msgs/Image``) and ``camera_info`` (from the camera_info_manager YAML
file ``camera_info_url``, else a declared pinhole guess) with one header at ``rate`` Hz: stamped
with the node clock (sim time under ``use_sim_time``) or, with ``stamp:=recorded``, a bag's
recorded stamps; ``frame_id`` an optical frame. Reliable by default, as REP 2003 asks of drivers
(a best-effort subscriber still matches). ``/diagnostics`` carries ``<full node name>: camera``.

``task`` (a development feature: needs the training install) degrades each frame with the TRAINING
degradation of that task (documented evaluation level, or ``severity`` in [0, 1]; seeded per frame
name, see ``frame_sources.Degrader``) and the clean frame goes out on ``image_clean`` with the same
header, so a downstream node or the demo can compute PSNR. ``schedule`` (``qdr_ros.core.schedule``, e.g.
``"clean:8 derain:8 dehaze:8 night:8"``) changes the degradation every few frames instead, so a node
meets changing weather; the listener gets each frame's name tagged with its condition. Relative
topic names: remap them in launch.

Frames are read and degraded in the timer callback; a frame that takes longer than the period
delays the next tick (the source never queues frames); such missed ticks count as dropped frames.
"""

from __future__ import annotations

from dataclasses import replace
import sys
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np
import rclpy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from qdr_ros.nodes.base_node import QdrNode, StartupError, image_msg, qos, run_node
from qdr_ros.core.calibration import Calibration, CalibrationError, load_calibration, pinhole_guess
from qdr_ros.nodes.diagnostics import CAMERA, OK, Report
from qdr_ros.core.frame_sources import (BagSource, Degrader, Frame, FrameSource, SourceError, Unreadable, open_source,
                                        resize)
from qdr_ros.nodes.params import CAMERA_PARAMS
from qdr_ros.core.schedule import Schedule, tagged

DEPTH = 5  # history depth of the outputs (that of the sensor-data profile)
FrameListener = Callable[[Header, str], None]


def to_image(header: Header, rgb: np.ndarray, encoding: str) -> Image:
    """Wrap an HxWx3 uint8 RGB frame as a ``sensor_msgs/Image`` in ``encoding`` (rgb8/bgr8)."""
    return image_msg(header, rgb if encoding == 'rgb8' else rgb[..., ::-1], encoding)


def camera_info(header: Header, calibration: Calibration) -> CameraInfo:
    """Build the ``sensor_msgs/CameraInfo`` of a frame: its header and the calibration at its size."""
    c = calibration
    return CameraInfo(header=header, width=c.width, height=c.height, distortion_model=c.distortion_model,
                      d=list(c.d), k=list(c.k), r=list(c.r), p=list(c.p))


class CameraSource(QdrNode):
    """Publish frames of a source at a fixed rate, degraded (plus the clean reference) when ``task`` is set."""

    def __init__(self, listener: FrameListener | None = None, **kwargs: Any) -> None:
        """Open the source; ``listener(header, frame_name)`` is called per published frame (in-process users)."""
        super().__init__(CAMERA_PARAMS, CAMERA, 'camera', **kwargs)
        values = self._values
        try:
            self._calibration = load_calibration(values['camera_info_url']) if values['camera_info_url'] else None
            self._source: FrameSource = open_source(values['source'], values['topic'])
            self._degrader = (Degrader(values['task'], None if values['level'] == 'documented'
                                       else values['severity'], values['seed']) if values['task'] else None)
            self._schedule = Schedule.parse(values['schedule'].split()) if values['schedule'] else None
            steps = self._schedule.steps if self._schedule else ()
            self._degraders = {c: Degrader(c, None, values['seed']) for c, _ in steps}
        except (CalibrationError, SourceError, ValueError, OSError) as exc:
            raise StartupError(str(exc)) from exc
        if values['stamp'] == 'recorded' and not isinstance(self._source, BagSource):
            raise StartupError(f'stamp:=recorded needs a rosbag2 source (only a bag records stamps); '
                               f'{self._source.describe()} has none: use stamp:=now')
        self._calibrations: dict[tuple[int, int], Calibration] = {}
        self._listener = listener
        self._frames: Iterator[Frame] = iter(self._source)
        self._pass = 0
        self._last_tick: int | None = None  # node-clock ns of the previous tick, for missed ticks
        self._stopped = ''
        self.published = 0
        self.finished = threading.Event()
        out_qos = qos(values['reliability'], DEPTH)
        self._pub = self.create_publisher(Image, 'image', out_qos)
        self._info_pub = self.create_publisher(CameraInfo, 'camera_info', out_qos)
        degrading = self._degrader is not None or self._schedule is not None
        self._clean_pub = self.create_publisher(Image, 'image_clean', out_qos) if degrading else None
        # Node clock (the default): under use_sim_time the timer follows /clock, as a bag replay needs.
        self._timer = self.create_timer(1.0 / values['rate'], self._tick)
        size = (f"{values['width'] or 'auto'}x{values['height'] or 'auto'}" if values['width'] or values['height']
                else 'source size')
        what = (f'{self._degrader.describe()}; clean frames on {self._clean_pub.topic_name}' if self._degrader
                else f"weather schedule {values['schedule']}; clean frames on {self._clean_pub.topic_name}"
                if self._clean_pub else 'clean frames (no degradation)')
        calibration = (f"calibration {values['camera_info_url']} ({self._calibration.camera_name or 'unnamed'}, "
                       f'{self._calibration.width}x{self._calibration.height})' if self._calibration
                       else 'no calibration file: pinhole guess')
        self.get_logger().info(f"replaying {self._source.describe()} on {self._pub.topic_name} at {values['rate']} Hz, "
                               f"{size}, loop {values['loop']}, max_frames {values['max_frames'] or 'unlimited'}, "
                               f"{values['reliability']}, frame {values['frame_id']}, stamps {values['stamp']}, "
                               f'{calibration}: {what}')

    @property
    def source_description(self) -> str:
        return self._source.describe()

    def _calibration_for(self, width: int, height: int) -> Calibration:
        """Return the calibration at the published size (the file's, scaled when resized), made once per size."""
        calibration = self._calibrations.get((width, height))
        if calibration is None:
            if self._calibration is None:
                calibration = pinhole_guess(width, height)
            else:
                calibration = self._calibration.scaled(width, height)
                if calibration is not self._calibration:
                    self.get_logger().info(f'frames are {width}x{height}: calibration of '
                                           f'{self._calibration.width}x{self._calibration.height} scaled to match')
            self._calibrations[(width, height)] = calibration
        return calibration

    def _next_frame(self) -> Frame | Unreadable | None:
        """Return the next frame or unreadable item (restarting the source when looping), or None at the end."""
        frame = next(self._frames, None)
        if frame is None and self._values['loop']:
            self._pass += 1
            self._frames = iter(self._source)
            frame = next(self._frames, None)
            if frame is not None and self._values['stamp'] == 'recorded':
                self.get_logger().warning('loop: recorded stamps start again from the beginning (time goes back '
                                          'for subscribers)')
        if frame is None or isinstance(frame, Unreadable):
            return frame
        # Later passes get their own noise (a real camera never repeats it); the first pass matches evaluation.
        return frame if self._pass == 0 else replace(frame, name=f'{frame.name}@pass{self._pass}')

    def _finish(self, why: str) -> None:
        self._timer.cancel()
        self._stopped = why
        self._publish_diagnostics()
        self.finished.set()
        self.get_logger().info(f'{why}: published {self.published} frames, stopping')

    def _count_ticks(self) -> None:
        """Count this tick and the ones missed since the last (a frame that overran the period skips ticks)."""
        now = self.get_clock().now().nanoseconds
        period = 1e9 / self._values['rate']
        missed = 0 if self._last_tick is None else max(0, round((now - self._last_tick) / period) - 1)
        self._last_tick = now
        self._stats.offered(1 + missed, dropped=missed)

    def _tick(self) -> None:
        values = self._values
        if values['max_frames'] and self.published >= values['max_frames']:
            self._finish(f"max_frames={values['max_frames']} reached")
            return
        self._count_ticks()
        start = time.perf_counter()
        try:
            frame = self._next_frame()
        except (SourceError, ValueError, OSError) as exc:  # a source that breaks as a whole (a bag that vanished)
            self._skip(f'{type(exc).__name__}: {exc}', f'cannot read the next frame of {self._source.describe()}')
            return
        if frame is None:
            self._finish(f'end of {self._source.describe()} (loop false)')
            return
        if isinstance(frame, Unreadable):  # a corrupt file in a folder, a broken bag message: the next tick goes on
            self._stats.rejected('unreadable')
            self.get_logger().error(f'skipped {frame.name} of {self._source.describe()}: {frame.reason}',
                                    throttle_duration_sec=5.0)
            return
        self._stats.frame_in()
        try:
            self._publish(frame)
        except Exception as exc:  # a frame the resize or degradation cannot take must not stop the stream
            self._skip(f'{type(exc).__name__}: {exc}', f'dropped frame {frame.name}')
            return
        self._stats.frame_out(inference_ms=(time.perf_counter() - start) * 1e3)

    def _skip(self, reason: str, what: str) -> None:
        """Count a failure to read or publish a frame as an error and say why, at most every 5 s."""
        self._stats.backend_error(reason)
        self.get_logger().error(f'{what}: {reason}', throttle_duration_sec=5.0)

    def _publish(self, frame: Frame) -> None:
        """Resize, degrade and publish one frame with its camera_info (and the clean frame when degrading)."""
        values = self._values
        clean = resize(frame.rgb, values['width'], values['height'])
        header = Header(frame_id=values['frame_id'], stamp=self.get_clock().now().to_msg())
        if values['stamp'] == 'recorded':
            header.stamp.sec, header.stamp.nanosec = divmod(frame.stamp_ns, 10**9)
        name, degrader = frame.name, self._degrader
        if self._schedule is not None:
            condition = self._schedule.condition(self.published)
            name, degrader = tagged(frame.name, condition), self._degraders[condition]
        if degrader is not None:
            self._pub.publish(to_image(header, degrader(clean, frame.name), values['encoding']))
            self._clean_pub.publish(to_image(header, clean, values['encoding']))
        else:
            self._pub.publish(to_image(header, clean, values['encoding']))
        self._info_pub.publish(camera_info(header, self._calibration_for(clean.shape[1], clean.shape[0])))
        self.published += 1
        if self._listener is not None:
            self._listener(header, name)

    def _publish_diagnostics(self) -> None:
        values = self._values
        facts = {'source': self._source.describe(), 'rate_hz': values['rate'], 'published': self.published,
                 'output_topic': self._pub.topic_name, 'stamps': values['stamp'],
                 'calibration': values['camera_info_url'] or 'pinhole guess'}
        # No frame for three periods while the timer runs means the source is stuck (never just a slow rate).
        report = self._health.report(max(2.0, 3.0 / values['rate']), values['drop_warn_ratio'], facts)
        if self._stopped:
            report = Report(OK, f'stopped: {self._stopped}', report.values)
        self._diagnostics.publish(report, values['frame_id'])


def _spin_until_finished(node: CameraSource) -> None:
    while rclpy.ok() and not node.finished.is_set():
        rclpy.spin_once(node, timeout_sec=0.5)


def main(args: list[str] | None = None) -> int:
    """Run until the source ends (loop false or max_frames) or Ctrl-C (see ``base_node.run_node``)."""
    return run_node(CameraSource, CAMERA_PARAMS.node_name, args, spin=_spin_until_finished)


if __name__ == '__main__':
    sys.exit(main())
