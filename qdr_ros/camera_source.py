"""camera_source: replay an image folder, a video or a rosbag2 as a camera, optionally degraded on the fly.

Publishes ``image`` (``sensor_msgs/Image``, sensor-data QoS) at ``rate`` Hz with a fresh stamp and
``frame_id``. With ``task`` set, each frame is degraded with the TRAINING degradation of that task
(documented evaluation level, or ``severity`` in [0, 1]; seeded per frame name, see
``frame_sources.Degrader``) and the clean frame goes out on ``image_clean`` with the same header,
so a downstream node or the demo can compute PSNR. Relative topic names: remap them in launch.

Frames are read and degraded in the timer callback; a frame that takes longer than the period
delays the next tick (the source never queues frames).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Iterator

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from qdr_ros.frame_sources import SAMPLES, Degrader, Frame, FrameSource, SourceError, open_source, resize
from qdr_ros.params import ParamSpec
from qdr_ros.base_node import StartupError, descriptor, image_msg, run_node

NODE_NAME = 'camera_source'
TASKS = ('', 'denoise', 'derain', 'lowlight', 'dehaze')
LEVELS = ('documented', 'severity')
FrameListener = Callable[[Header, str], None]

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('source', SAMPLES, 'Image folder, video file, rosbag2 (folder or .mcap/.db3), a single image, or '
              f'"{SAMPLES}" (real photos bundled with ultralytics and scikit-image).', read_only=True),
    ParamSpec('topic', '', 'Image topic to replay from a rosbag2; empty = the first image topic.', read_only=True),
    ParamSpec('rate', 10.0, 'Frames per second.', min_value=0.1, max_value=240.0, read_only=True),
    ParamSpec('loop', True, 'Start again at the end of the source (otherwise stop publishing).'),
    ParamSpec('max_frames', 0, 'Stop after this many frames; 0 = no limit.', min_value=0, max_value=10**9),
    ParamSpec('width', 0, 'Output width in pixels; 0 = keep (or follow height, keeping the aspect ratio).',
              min_value=0, max_value=8192),
    ParamSpec('height', 0, 'Output height in pixels; 0 = keep (or follow width, keeping the aspect ratio).',
              min_value=0, max_value=8192),
    ParamSpec('frame_id', 'camera', 'header.frame_id of the published frames.'),
    ParamSpec('encoding', 'rgb8', 'Published pixel layout.', choices=('rgb8', 'bgr8')),
    ParamSpec('task', '', 'Degrade frames with this training degradation; empty = publish clean frames.',
              choices=TASKS, read_only=True),
    ParamSpec('level', 'documented', 'documented: the fixed evaluation level of the task (configs, levels:); '
              'severity: the training range at "severity".', choices=LEVELS, read_only=True),
    ParamSpec('severity', 0.5, 'Severity in [0, 1] across the training range (with level:=severity).',
              min_value=0.0, max_value=1.0, read_only=True),
    ParamSpec('seed', 0, 'Degradation seed; each frame is seeded from (task, seed, frame name).',
              min_value=0, max_value=2**31 - 1, read_only=True),
)
SPECS = {spec.name: spec for spec in PARAMS}


def to_image(header: Header, rgb: np.ndarray, encoding: str) -> Image:
    """Wrap an HxWx3 uint8 RGB frame as a ``sensor_msgs/Image`` in ``encoding`` (rgb8/bgr8)."""
    return image_msg(header, rgb if encoding == 'rgb8' else rgb[..., ::-1], encoding)


class CameraSource(Node):
    """Publish frames of a source at a fixed rate, degraded (plus the clean reference) when ``task`` is set."""

    def __init__(self, listener: FrameListener | None = None, **kwargs: Any) -> None:
        """Open the source; ``listener(header, frame_name)`` is called per published frame (in-process users)."""
        super().__init__(NODE_NAME, **kwargs)
        try:
            for spec in PARAMS:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
        except Exception as exc:  # rclpy's InvalidParameterTypeException / InvalidParameterValueException
            raise StartupError(f'invalid parameter: {exc}') from exc
        self._values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMS}
        values = self._values
        try:
            self._source: FrameSource = open_source(values['source'], values['topic'])
            self._degrader = (Degrader(values['task'], None if values['level'] == 'documented'
                                       else values['severity'], values['seed']) if values['task'] else None)
        except (SourceError, ValueError, OSError) as exc:
            raise StartupError(str(exc)) from exc
        self._listener = listener
        self._frames: Iterator[Frame] = iter(self._source)
        self._pass = 0
        self.published = 0
        self.finished = threading.Event()
        self._pub = self.create_publisher(Image, 'image', qos_profile_sensor_data)
        self._clean_pub = (self.create_publisher(Image, 'image_clean', qos_profile_sensor_data)
                           if self._degrader else None)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._timer = self.create_timer(1.0 / values['rate'], self._tick)
        size = (f"{values['width'] or 'auto'}x{values['height'] or 'auto'}" if values['width'] or values['height']
                else 'source size')
        what = (f'{self._degrader.describe()}; clean frames on {self._clean_pub.topic_name}' if self._degrader
                else 'clean frames (no degradation)')
        self.get_logger().info(f"replaying {self._source.describe()} on {self._pub.topic_name} at {values['rate']} Hz, "
                               f"{size}, loop {values['loop']}, max_frames {values['max_frames'] or 'unlimited'}: "
                               f'{what}')

    @property
    def source_description(self) -> str:
        return self._source.describe()

    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        for param in changed:
            spec = SPECS.get(param.name)
            if spec is not None and spec.read_only:
                return SetParametersResult(successful=False, reason=f'{param.name} is read-only; restart the node')
        self._values = {**self._values, **{p.name: p.value for p in changed}}
        return SetParametersResult(successful=True)

    def _next_frame(self) -> Frame | None:
        """Return the next frame (restarting the source when looping), or None at the end."""
        frame = next(self._frames, None)
        if frame is None and self._values['loop']:
            self._pass += 1
            self._frames = iter(self._source)
            frame = next(self._frames, None)
        if frame is None:
            return None
        # Later passes get their own noise (a real camera never repeats it); the first pass matches evaluation.
        return frame if self._pass == 0 else Frame(f'{frame.name}@pass{self._pass}', frame.rgb)

    def _finish(self, why: str) -> None:
        self._timer.cancel()
        self.finished.set()
        self.get_logger().info(f'{why}: published {self.published} frames, stopping')

    def _tick(self) -> None:
        values = self._values
        if values['max_frames'] and self.published >= values['max_frames']:
            self._finish(f"max_frames={values['max_frames']} reached")
            return
        try:
            frame = self._next_frame()
        except (SourceError, ValueError, OSError) as exc:  # a corrupt file in a folder, a broken bag message
            self.get_logger().error(f'cannot read the next frame of {self._source.describe()}: {exc}',
                                    throttle_duration_sec=5.0)
            return
        if frame is None:
            self._finish(f'end of {self._source.describe()} (loop false)')
            return
        clean = resize(frame.rgb, values['width'], values['height'])
        header = Header(frame_id=values['frame_id'], stamp=self.get_clock().now().to_msg())
        if self._degrader is not None:
            self._pub.publish(to_image(header, self._degrader(clean, frame.name), values['encoding']))
            self._clean_pub.publish(to_image(header, clean, values['encoding']))
        else:
            self._pub.publish(to_image(header, clean, values['encoding']))
        self.published += 1
        if self._listener is not None:
            self._listener(header, frame.name)


def _spin_until_finished(node: CameraSource) -> None:
    while rclpy.ok() and not node.finished.is_set():
        rclpy.spin_once(node, timeout_sec=0.5)


def main(args: list[str] | None = None) -> int:
    """Run until the source ends (loop false or max_frames) or Ctrl-C (see ``base_node.run_node``)."""
    return run_node(CameraSource, NODE_NAME, args, spin=_spin_until_finished)


if __name__ == '__main__':
    sys.exit(main())
