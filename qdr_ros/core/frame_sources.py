"""Frame readers for camera_source and the demo: image folders, video files, rosbag2 recordings, sample photos.

Every source yields ``Frame`` records with HxWx3 uint8 RGB pixels and a stable name (file name,
``frame000042``, or ``<topic>@<bag timestamp>``); frames of a rosbag2 also carry their recorded stamp.
An item that cannot be read (a corrupt file in a folder, a broken bag message) is yielded as
``Unreadable`` and the iteration goes on: an exception raised inside a generator would end it there.
``Degrader`` applies the TRAINING degradations of ``qdr_train.data.degradations`` to a frame, seeded per
frame name, so a replayed folder is degraded exactly as the evaluation inputs are. It is a development
feature: qdr_train and torch are imported only when a Degrader is made, and the runtime install has
neither (``TrainingInstallMissing`` says how to get them).

No rclpy import here: rosbag2 files are read with the pure-Python ``rosbags`` package.
"""

from __future__ import annotations

from dataclasses import dataclass
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from qdr_ros.core.image_conversions import decode_compressed, encoding_spec, image_view

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg')
BAG_SUFFIXES = ('.mcap', '.db3')
IMAGE_MSGTYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
SAMPLES = 'samples'  # ``source`` value for the real photos bundled in installed packages


class SourceError(ValueError):
    """A source that cannot be opened or read; the message names the path and what to fix."""


class TrainingInstallMissing(SourceError):
    """Degrading frames needs qdr_train and torch, which only the training install has."""


@dataclass(frozen=True)
class Frame:
    """One RGB frame, the name its degradation seed derives from, and its recorded stamp (rosbag2 only)."""

    name: str
    rgb: np.ndarray
    stamp_ns: int | None = None


@dataclass(frozen=True)
class Unreadable:
    """A source item that could not be read, yielded in its place so that the frames after it still come."""

    name: str
    reason: str


READ_ERRORS = (ValueError, OSError, cv2.error)  # what a corrupt file or message raises (SourceError included)


def to_rgb8(view: np.ndarray, encoding: str) -> np.ndarray:
    """Any supported ``sensor_msgs/Image`` layout -> contiguous HxWx3 uint8 RGB."""
    spec = encoding_spec(encoding)
    planes = view if view.ndim == 3 else view[..., None]
    rgb = planes[..., list(spec.rgb_index)]
    if spec.max_value != 255:
        rgb = np.rint(rgb.astype(np.float32) * (255.0 / spec.max_value))
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f'cannot decode image {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize(rgb: np.ndarray, width: int = 0, height: int = 0) -> np.ndarray:
    """Resize to width x height; with one of them 0 the aspect ratio is kept; both 0 = unchanged."""
    h, w = rgb.shape[:2]
    if width <= 0 and height <= 0:
        return rgb
    if width <= 0:
        width = max(1, round(w * height / h))
    elif height <= 0:
        height = max(1, round(h * width / w))
    if (width, height) == (w, h):
        return rgb
    interpolation = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def sample_photos() -> list[Frame]:
    """Real photos shipped in installed packages: ultralytics' bus/zidane, scikit-image's astronaut/coffee/chelsea."""
    frames: list[Frame] = []
    spec = importlib.util.find_spec('ultralytics')
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        for name in ('bus.jpg', 'zidane.jpg'):
            path = Path(location) / 'assets' / name
            if path.is_file():
                frames.append(Frame(name, read_image(path)))
    if importlib.util.find_spec('skimage') is not None:
        from skimage import data

        for name in ('astronaut', 'coffee', 'chelsea'):
            frames.append(Frame(f'{name}.png', np.ascontiguousarray(getattr(data, name)()[..., :3])))
    if not frames:
        raise SourceError('no sample photos found: install ultralytics-opencv-headless or scikit-image '
                          '(requirements/train.txt), or give a folder, video or rosbag2 source')
    return frames


class FrameSource:
    """Base: iterate over frames once; ``describe()`` says what is being read."""

    def __iter__(self) -> Iterator[Frame | Unreadable]:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class ListSource(FrameSource):
    """Frames already in memory (sample photos, tests)."""

    def __init__(self, frames: Sequence[Frame], label: str = 'frames in memory') -> None:
        if not frames:
            raise SourceError(f'{label}: no frames')
        self.frames, self.label = list(frames), label

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    def describe(self) -> str:
        return f'{self.label} ({len(self.frames)} frames)'


class FolderSource(FrameSource):
    """The image files of a folder and its subfolders (e.g. images/train, images/val), sorted by path."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise SourceError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in folder {self.folder}')

    def __iter__(self) -> Iterator[Frame | Unreadable]:
        for path in self.files:
            name = path.relative_to(self.folder).as_posix()
            try:
                yield Frame(name, read_image(path))
            except READ_ERRORS as exc:
                yield Unreadable(name, f'{type(exc).__name__}: {exc}')

    def describe(self) -> str:
        return f'image folder {self.folder} ({len(self.files)} images)'


class VideoSource(FrameSource):
    """A video file read with OpenCV; frames are named by their index."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        capture = cv2.VideoCapture(str(self.path))
        ok = capture.isOpened()
        self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
        capture.release()
        if not ok:
            raise SourceError(f'OpenCV cannot open video {self.path} (unknown codec or not a video)')

    def __iter__(self) -> Iterator[Frame]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield Frame(f'{self.path.stem}_frame{index:06d}', cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            capture.release()

    def describe(self) -> str:
        return f'video {self.path} ({self.frame_count} frames)'


class BagSource(FrameSource):
    """sensor_msgs/Image or CompressedImage messages of one topic of a rosbag2 (sqlite3 or mcap)."""

    def __init__(self, path: str | Path, topic: str = '') -> None:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        self._reader_args: tuple[Any, ...] = (AnyReader, get_typestore(Stores.ROS2_HUMBLE))
        with self._open() as reader:
            images = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_MSGTYPES}
            self.message_count = 0
            if not images:
                raise SourceError(f'rosbag2 {self.path} has no sensor_msgs/Image or CompressedImage topic '
                                  f'(topics: {", ".join(sorted({c.topic for c in reader.connections})) or "none"})')
            if topic and topic not in images:
                raise SourceError(f'rosbag2 {self.path} has no image topic {topic!r}; '
                                  f'image topics: {", ".join(sorted(images))}')
            self.topic = topic or sorted(images)[0]
            self.msgtype = images[self.topic]
            self.message_count = sum(c.msgcount for c in reader.connections if c.topic == self.topic)

    def _open(self) -> Any:
        reader_type, typestore = self._reader_args
        try:
            return reader_type([self.path], default_typestore=typestore)
        except Exception as exc:  # rosbags raises its own untyped reader errors
            raise SourceError(f'cannot read rosbag2 {self.path}: {exc}') from exc

    def __iter__(self) -> Iterator[Frame | Unreadable]:
        with self._open() as reader:
            connections = [c for c in reader.connections if c.topic == self.topic]
            for connection, timestamp, raw in reader.messages(connections=connections):
                name = f'{self.topic.strip("/").replace("/", "_")}@{timestamp}'
                try:
                    rgb, stamp = self._decode(reader.deserialize(raw, connection.msgtype), connection.msgtype)
                except Exception as exc:  # rosbags' deserializer raises its own untyped errors
                    yield Unreadable(name, f'{type(exc).__name__}: {exc}')
                    continue
                yield Frame(name, rgb, stamp or timestamp)

    @staticmethod
    def _decode(msg: Any, msgtype: str) -> tuple[np.ndarray, int]:
        """One message's RGB pixels and header stamp (ns)."""
        if msgtype.endswith('CompressedImage'):
            bgr, _ = decode_compressed(msg.data, msg.format)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        else:
            view = image_view(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
            rgb = to_rgb8(view, msg.encoding)
        return rgb, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

    def describe(self) -> str:
        return f'rosbag2 {self.path} topic {self.topic} ({self.msgtype}, {self.message_count} messages)'


def is_bag(path: Path) -> bool:
    """Tell whether ``path`` is a rosbag2: a folder with metadata.yaml, or a single .mcap/.db3 file."""
    return (path.is_dir() and (path / 'metadata.yaml').is_file()) or path.suffix.lower() in BAG_SUFFIXES


def open_source(source: str | Path, topic: str = '') -> FrameSource:
    """Open ``source``: ``samples``, a rosbag2, an image folder, a video or a single image file."""
    if str(source) == SAMPLES:
        return ListSource(sample_photos(), 'sample photos from installed packages')
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f'source {path} does not exist; give an image folder, a video file, a rosbag2 '
                          f'or "{SAMPLES}"')
    if is_bag(path):
        return BagSource(path, topic)
    if path.is_dir():
        return FolderSource(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ListSource([Frame(path.name, read_image(path))], f'image {path}')
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoSource(path)
    raise SourceError(f'source {path}: unknown kind (image folder, video {"/".join(VIDEO_SUFFIXES)}, rosbag2 '
                      f'folder or {"/".join(BAG_SUFFIXES)} file)')


class Degrader:
    """The training degradation of ``task`` applied to single frames, seeded by the frame's name.

    ``severity`` None = the documented evaluation level (``cfg['levels']``), else a severity in [0, 1]
    across the training ranges (nuisance parameters drawn from the seed). The seed of a frame is
    ``image_seed(task, seed, name)``, as in ``qdr_train.evaluation.evaluator.degraded_input``, so the same
    name and seed give the same pixels as the evaluation inputs.
    """

    def __init__(self, task: str, severity: float | None = None, seed: int = 0) -> None:
        try:
            from qdr_train.config import load_config

            importlib.import_module('torch')  # needed per frame; fail here, at start-up, not on the first frame
        except ImportError as exc:
            raise TrainingInstallMissing(
                f'task {task!r} degrades frames with the training code, and {exc}: task needs the training '
                'install: pip install -r requirements/train.txt (a development feature; leave task empty to '
                'publish the frames as they are)') from exc
        self.cfg = load_config(task)
        if severity is not None and not 0.0 <= severity <= 1.0:
            raise ValueError(f'severity must be in [0, 1], got {severity}')
        self.task, self.severity, self.seed = task, severity, seed

    def describe(self) -> str:
        level = (f"documented level {self.cfg['levels'][self.task]}" if self.severity is None
                 else f'severity {self.severity:g}')
        return f'{self.task} degradation at {level}, seed {self.seed}'

    def __call__(self, rgb: np.ndarray, name: str) -> np.ndarray:
        """Return the degraded HxWx3 uint8 RGB frame."""
        import torch

        from qdr_ros.core.image_conversions import tensor_to_rgb_uint8
        from qdr_train.data.datasets import to_tensor
        from qdr_train.data.degradations import degrade, image_seed, level_params, sample_params

        x = to_tensor(np.ascontiguousarray(rgb))
        gen = torch.Generator().manual_seed(image_seed(self.task, self.seed, name))
        if self.severity is None:
            params = level_params(self.task, self.cfg['levels'], 1)
        else:
            params = sample_params(self.task, self.cfg['degradation'], 1, gen, self.severity)
        with torch.no_grad():
            return tensor_to_rgb_uint8(degrade(x, self.task, params, gen))
