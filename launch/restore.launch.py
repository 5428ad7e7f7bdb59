"""Restore a camera stream: restore_node, optionally detect_node and rviz2.

    ros2 launch qdr_ros restore.launch.py use_detector:=true
    ros2 launch qdr_ros restore.launch.py namespace:=robot1 camera:=front use_detector:=true

Every node runs in ``<namespace>/<camera>`` (default ``/camera``), and every topic is relative to it:
``image_raw`` and ``camera_info`` in, ``image_restored`` (+ ``/camera_info``), ``condition`` (+ ``/labels``)
and ``gate`` (with ``publish_gate:=true``) out, ``image_detections``, ``detections`` and ``detection_labels``
from detect_node. That is what ``config/qdr.rviz`` shows for the
defaults; ``namespace:=`` moves all of it (``/diagnostics`` stays global, where aggregators read it).
Topic arguments are remappings: a relative name stays inside the namespace, an absolute one leaves it.

Parameter arguments left empty keep the value of the parameter files (the installed
config/restore.yaml and config/detect.yaml); a non-empty value overrides it.
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
import yaml

SHARE = get_package_share_directory('qdr_ros')
BOOLEAN = ['true', 'false']
KEEP = ['']  # '' = keep the parameter file's value

# Restore-node parameters settable from the command line; '' = keep the params_file value.
PARAMETER_ARGUMENTS = ('model', 'backend', 'threads', 'device_id', 'engine_cache_dir', 'dla_core',
                       'force_engine_rebuild', 'bypass', 'input_compressed', 'max_pixels', 'large_frames',
                       'process_without_subscribers', 'publish_gate')
STRING_PARAMETERS = {'model', 'backend', 'engine_cache_dir', 'large_frames'}
# detect_node parameters: launch argument -> parameter name.
DETECTOR_ARGUMENTS = {'detector_model': 'model', 'detector_conf': 'conf', 'detector_iou': 'iou'}
FLOAT_PARAMETERS = {'conf', 'iou'}  # typed as doubles: iou:=1 must not reach the node as an integer


def _overrides(context, names, strings) -> dict:
    """Non-empty launch arguments as typed parameter overrides."""
    overrides = {}
    for argument, name in names.items():
        value = LaunchConfiguration(argument).perform(context)
        if value != '':
            overrides[name] = (value if name in strings else float(value) if name in FLOAT_PARAMETERS
                               else yaml.safe_load(value))
    return overrides


def _nodes(context):
    """Build the nodes once the arguments are known (typed overrides, respawn and conditions as values)."""
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    namespace = '/'.join(part.strip('/') for part in (arg('namespace'), arg('camera')) if part.strip('/'))
    common = {
        'namespace': '/' + namespace if namespace else '',
        'respawn': arg('respawn') == 'true',
        'respawn_delay': 2.0,
        'arguments': ['--ros-args', '--log-level', arg('log_level')],
        'output': 'screen',
    }
    sim_time = {'use_sim_time': arg('use_sim_time') == 'true'}
    output = arg('output_topic')
    restore_overrides = _overrides(context, {n: n for n in PARAMETER_ARGUMENTS}, STRING_PARAMETERS)
    if arg('use_rviz') == 'true':
        restore_overrides.setdefault('publish_gate', True)  # rviz shows the gate
    nodes = [Node(
        package='qdr_ros', executable='restore_node', name='restore_node',
        parameters=[arg('params_file'), restore_overrides, sim_time],
        remappings=[
            ('image', arg('input_topic')),
            ('image/compressed', arg('input_topic') + '/compressed'),
            ('camera_info', arg('camera_info_topic')),
            ('image_restored', output),
            ('image_restored/camera_info', output + '/camera_info'),
        ],
        **common,
    )]
    if arg('use_detector') == 'true':
        nodes.append(Node(
            package='qdr_ros', executable='detect_node', name='detect_node',
            parameters=[arg('detector_params_file'), _overrides(context, DETECTOR_ARGUMENTS, {'model'}), sim_time],
            remappings=[('image', output)],
            **common,
        ))
    if arg('use_rviz') == 'true' and _has_package('rviz2'):
        nodes.append(Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                          arguments=['-d', os.path.join(SHARE, 'config', 'qdr.rviz')], parameters=[sim_time]))
    elif arg('use_rviz') == 'true':
        get_logger('restore.launch').warning(
            'use_rviz:=true but rviz2 is not installed (sudo apt install ros-$ROS_DISTRO-rviz2); starting the '
            'other nodes without it')
    return nodes


def _has_package(name):
    """Whether ``name`` is in the ament index: a missing rviz2 would abort the launch after the other nodes started."""
    try:
        get_package_share_directory(name)
    except PackageNotFoundError:
        return False
    return True


def generate_launch_description():
    """Declare the arguments and start the nodes."""
    keep = ' (empty: keep the params_file value)'
    arguments = [
        DeclareLaunchArgument('model', default_value='',
                              description='model file (.onnx or TensorRT .engine), relative to share/qdr_ros' + keep),
        DeclareLaunchArgument('backend', default_value='', description='ONNX Runtime or TensorRT' + keep,
                              choices=KEEP + ['auto', 'onnxruntime', 'tensorrt']),
        DeclareLaunchArgument('threads', default_value='',
                              description='ONNX Runtime CPU threads, 0 = physical cores' + keep),
        DeclareLaunchArgument('device_id', default_value='', description='CUDA device' + keep),
        DeclareLaunchArgument('engine_cache_dir', default_value='', description='TensorRT engine cache folder' + keep),
        DeclareLaunchArgument('dla_core', default_value='', description='TensorRT DLA core, -1 = GPU only' + keep),
        DeclareLaunchArgument('force_engine_rebuild', default_value='', choices=KEEP + BOOLEAN,
                              description='true: rebuild the TensorRT engine even if a cached one fits' + keep),
        DeclareLaunchArgument('bypass', default_value='', choices=KEEP + BOOLEAN,
                              description='true: pass frames through unchanged' + keep),
        DeclareLaunchArgument('input_compressed', default_value='', choices=KEEP + BOOLEAN,
                              description='true: subscribe <input_topic>/compressed' + keep),
        DeclareLaunchArgument('max_pixels', default_value='', description='largest frame restored at full size' + keep),
        DeclareLaunchArgument('large_frames', default_value='', choices=KEEP + ['reject', 'downscale'],
                              description='what to do with frames above max_pixels' + keep),
        DeclareLaunchArgument('process_without_subscribers', default_value='', choices=KEEP + BOOLEAN,
                              description='true: restore even when nobody subscribes' + keep),
        DeclareLaunchArgument('publish_gate', default_value='', choices=KEEP + BOOLEAN,
                              description='true: the gate map (where the model corrects) as mono8 on "gate"' + keep),
        DeclareLaunchArgument('namespace', default_value='', description='robot namespace; every topic follows it'),
        DeclareLaunchArgument('camera', default_value='camera',
                              description='camera namespace inside namespace (the nodes and their topics)'),
        DeclareLaunchArgument('input_topic', default_value='image_raw',
                              description='camera image (sensor_msgs/Image); relative = inside the namespaces'),
        DeclareLaunchArgument('camera_info_topic', default_value='camera_info',
                              description='camera_info of the input image'),
        DeclareLaunchArgument('output_topic', default_value='image_restored',
                              description='restored image topic; its camera_info is <output_topic>/camera_info'),
        DeclareLaunchArgument('params_file', default_value=os.path.join(SHARE, 'config', 'restore.yaml'),
                              description='node-named parameter YAML for restore_node'),
        DeclareLaunchArgument('use_detector', default_value='false', choices=BOOLEAN,
                              description='also start detect_node on the restored image'),
        DeclareLaunchArgument('detector_params_file', default_value=os.path.join(SHARE, 'config', 'detect.yaml'),
                              description='node-named parameter YAML for detect_node'),
        DeclareLaunchArgument('detector_model', default_value='',
                              description='detector file: ultralytics .pt/.onnx or FastestDet .onnx'
                                          ' (empty: keep the detector_params_file value)'),
        DeclareLaunchArgument('detector_conf', default_value='',
                              description='minimum detection score (empty: keep the detector_params_file value)'),
        DeclareLaunchArgument('detector_iou', default_value='',
                              description='NMS IoU threshold; FastestDet wants 0.45 (empty: keep the '
                                          'detector_params_file value)'),
        DeclareLaunchArgument('use_rviz', default_value='false', choices=BOOLEAN,
                              description='also start rviz2 with config/qdr.rviz (default namespace and camera; '
                                          'turns publish_gate on unless it is set)'),
        DeclareLaunchArgument('use_sim_time', default_value='false', choices=BOOLEAN,
                              description='nodes follow /clock (bag replay with --clock)'),
        DeclareLaunchArgument('log_level', default_value='info', choices=['debug', 'info', 'warn', 'error', 'fatal'],
                              description='log level of the qdr nodes'),
        DeclareLaunchArgument('respawn', default_value='false', choices=BOOLEAN,
                              description='restart a qdr node that exits (after 2 s)'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
