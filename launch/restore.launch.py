"""Restore a camera stream: restore_node, optionally detect_node and rviz2.

    ros2 launch qdr_ros restore.launch.py model:=/path/efm_int8.onnx input_topic:=/camera/image_raw

Parameter arguments (model, backend, threads, ...) left empty keep the value from params_file
(default: the installed config/restore.yaml); a non-empty value overrides it. Topic arguments
are remappings of the node's relative topics (image, camera_info, image_restored); with a
namespace, give relative topic names so they land inside it.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
import yaml

SHARE = get_package_share_directory('qdr_ros')

# Restore-node parameters settable from the command line; '' = keep the params_file value.
PARAMETER_ARGUMENTS = ('model', 'backend', 'threads', 'device_id', 'engine_cache_dir', 'bypass', 'input_compressed',
                       'max_pixels', 'large_frames', 'process_without_subscribers')
STRING_PARAMETERS = {'model', 'backend', 'engine_cache_dir', 'large_frames'}


def _restore_node(context):
    """Build restore_node with only the non-empty parameter arguments as overrides."""
    overrides = {}
    for name in PARAMETER_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context)
        if value != '':
            overrides[name] = value if name in STRING_PARAMETERS else yaml.safe_load(value)
    input_topic = LaunchConfiguration('input_topic').perform(context)
    output_topic = LaunchConfiguration('output_topic').perform(context)
    return [Node(
        package='qdr_ros',
        executable='restore_node',
        name='restore_node',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=[
            ('image', input_topic),
            ('image/compressed', input_topic + '/compressed'),
            ('camera_info', LaunchConfiguration('camera_info_topic')),
            ('image_restored', output_topic),
            ('image_restored/camera_info', output_topic + '/camera_info'),
        ],
        output='screen',
    )]


def generate_launch_description():
    """Declare the arguments and start the nodes."""
    keep = ' (empty: keep the params_file value)'
    arguments = [
        DeclareLaunchArgument('model', default_value='',
                              description='model file (.onnx or TensorRT .engine), relative to share/qdr_ros' + keep),
        DeclareLaunchArgument('backend', default_value='', description='auto | onnxruntime | tensorrt' + keep),
        DeclareLaunchArgument('threads', default_value='',
                              description='ONNX Runtime CPU threads, 0 = physical cores' + keep),
        DeclareLaunchArgument('device_id', default_value='', description='CUDA device' + keep),
        DeclareLaunchArgument('engine_cache_dir', default_value='', description='TensorRT engine cache folder' + keep),
        DeclareLaunchArgument('bypass', default_value='', description='true: pass frames through unchanged' + keep),
        DeclareLaunchArgument('input_compressed', default_value='',
                              description='true: subscribe <input_topic>/compressed' + keep),
        DeclareLaunchArgument('max_pixels', default_value='', description='largest frame restored at full size' + keep),
        DeclareLaunchArgument('large_frames', default_value='',
                              description='reject | downscale, for frames above max_pixels' + keep),
        DeclareLaunchArgument('process_without_subscribers', default_value='',
                              description='true: restore even when nobody subscribes' + keep),
        DeclareLaunchArgument('input_topic', default_value='/camera/image_raw',
                              description='camera image topic (sensor_msgs/Image)'),
        DeclareLaunchArgument('camera_info_topic', default_value='/camera/camera_info',
                              description='camera_info of the input image'),
        DeclareLaunchArgument('output_topic', default_value='/camera/image_restored',
                              description='restored image topic; its camera_info is <output_topic>/camera_info'),
        DeclareLaunchArgument('params_file', default_value=os.path.join(SHARE, 'config', 'restore.yaml'),
                              description='node-named parameter YAML for restore_node'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace for all nodes'),
        DeclareLaunchArgument('use_detector', default_value='false',
                              description='also start detect_node on the restored image'),
        DeclareLaunchArgument('use_rviz', default_value='false',
                              description='also start rviz2 showing raw, restored and detection images'),
    ]
    detector = Node(
        package='qdr_ros',
        executable='detect_node',
        name='detect_node',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file')],
        remappings=[('image', LaunchConfiguration('output_topic'))],
        output='screen',
        condition=IfCondition(LaunchConfiguration('use_detector')),
    )
    rviz = Node(
        package='rviz2',
        executable='rviz2',
        name='rviz2',
        arguments=['-d', os.path.join(SHARE, 'config', 'qdr.rviz')],
        output='screen',
        condition=IfCondition(LaunchConfiguration('use_rviz')),
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=_restore_node), detector, rviz])
