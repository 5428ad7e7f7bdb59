"""Session-wide setup shared by every test: the ROS/ultralytics environment knobs and a 3-output model."""

from __future__ import annotations

import os

# Humble's generated messages check the type of every field they are given; Jazzy's and Kilted's only with
# this set, read when a message module is first imported (rclpy imports some): the suite, and every node it
# starts, holds the code to Humble's rule.
if 'ROS_PYTHON_CHECK_FIELDS' not in os.environ:
    os.environ['ROS_PYTHON_CHECK_FIELDS'] = '1'
# Hypothesis keeps its example database and constants cache in ./.hypothesis unless told otherwise: not in the repo.
if 'HYPOTHESIS_STORAGE_DIRECTORY' not in os.environ:
    os.environ['HYPOTHESIS_STORAGE_DIRECTORY'] = os.path.join(os.path.expanduser('~'), '.cache', 'qdr', 'hypothesis')

from collections.abc import Iterator
import json
from pathlib import Path
import signal

import numpy as np
import pytest
import rclpy
from rclpy.context import Context

from qdr_ros.core import ros_env
from support.auto_model import AUTO_LABELS, AUTO_WEIGHTS

REPO_ROOT = Path(__file__).resolve().parents[1]
# UDP only, with socket buffers asked of 4 MB: a raw 640x480 frame (0.9 MB) arrives as 64 KB fragments, and
# a machine's default buffer (net.core.rmem_default, 208 KB on one dev machine) drops a burst of them, so a
# best-effort frame never completes. The kernel caps the request at net.core.rmem_max; it does not fail.
TEST_TRANSPORTS = 'UDPv4?sockets_size=4MB'


# The tests stop nodes and `ros2 launch` with SIGINT, as Ctrl-C does. A suite started as a background job
# of a shell without job control (`make test &`, some CI runners) inherits SIGINT ignored, its children
# too, and `ros2 launch` then never shuts its nodes down: undo that once, for this process and its children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope='session', autouse=True)
def subprocess_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Temp files of the processes the tests start (ros2 launch's parameter files, torchrun's state).

    They go under pytest's own temp folder, which pytest prunes, instead of piling up in /tmp.
    """
    folder = tmp_path_factory.getbasetemp() / 'subprocess-tmp'
    folder.mkdir(exist_ok=True)
    os.environ['TMPDIR'] = str(folder)
    return folder


@pytest.fixture(scope='session', autouse=True)
def ros_environment() -> dict[str, str]:
    """Apply ``qdr_ros.core.ros_env`` once, so every test and subprocess shares one fresh ROS domain.

    The suite talks over UDP only (unless ``FASTDDS_BUILTIN_TRANSPORTS`` is already set): it starts and
    kills about a hundred participants, and under LARGE_DATA (shared memory and TCP, state that
    outlives a process) fresh-clone and CI runs stalled in discovery (a node up, its peer never
    seeing it within 30-120 s). The tests check behaviour, not transport speed; ``make bench`` measures the
    default transports and ``test_ros_env`` checks that a participant starts with them.
    ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is not set: with it the 640x480 frames of the auto
    model's tests stopped arriving (60 s without a reply; cause not traced).
    """
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', TEST_TRANSPORTS)
    return ros_env.apply()


@pytest.fixture
def context() -> Iterator[Context]:
    """Give each test its own rclpy context, shut down even when it fails (node tests share one per module)."""
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """Return the repository root (the directory holding package.xml)."""
    return REPO_ROOT


@pytest.fixture(scope='session')
def auto_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a 3-output "auto" restoration model (restored, condition, gate) with onnx.helper.

    restored = 0.8 x + 0.1; condition = softmax(mean over H, W of x @ AUTO_WEIGHTS) with the labels
    ``AUTO_LABELS`` in the ONNX metadata; gate = the per-pixel mean over the channels.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nchw = ['n', 3, 'h', 'w']
    nodes = [helper.make_node('Mul', ['image', 'scale'], ['scaled']),
             helper.make_node('Add', ['scaled', 'offset'], ['restored']),
             helper.make_node('ReduceMean', ['image'], ['pooled'], axes=[2, 3], keepdims=0),
             helper.make_node('MatMul', ['pooled', 'weights'], ['logits']),
             helper.make_node('Softmax', ['logits'], ['condition'], axis=1),
             helper.make_node('ReduceMean', ['image'], ['gate'], axes=[1], keepdims=1)]
    weights = [numpy_helper.from_array(np.array(0.8, np.float32), 'scale'),
               numpy_helper.from_array(np.array(0.1, np.float32), 'offset'),
               numpy_helper.from_array(AUTO_WEIGHTS, 'weights')]
    graph = helper.make_graph(nodes, 'auto', [helper.make_tensor_value_info('image', TensorProto.FLOAT, nchw)],
                              [helper.make_tensor_value_info('restored', TensorProto.FLOAT, nchw),
                               helper.make_tensor_value_info('condition', TensorProto.FLOAT,
                                                             ['n', len(AUTO_LABELS)]),
                               helper.make_tensor_value_info('gate', TensorProto.FLOAT, ['n', 1, 'h', 'w'])],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    for key, value in {'task': 'auto', 'stride': '8', 'condition_labels': json.dumps(list(AUTO_LABELS))}.items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path_factory.mktemp('auto') / 'auto_fp32.onnx'
    onnx.save(model, str(path))
    return path
