"""Start the kp2d node.

    ros2 launch kp2d_ros kp2d.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info [namespace:=front] [image_transport:=compressed]

Every argument has a description (``ros2 launch kp2d_ros kp2d.launch.py --show-args``).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

ARGUMENTS = (
    ('image_topic', '/camera/image_raw', 'camera image topic (for compressed: its base topic)'),
    ('camera_info_topic', '/camera/camera_info', 'CameraInfo topic (optional input)'),
    ('namespace', '', 'namespace of the node (parameters apply under any namespace)'),
    ('node_name', 'kp2d', 'name of the node'),
    ('image_transport', 'raw', "'raw' (sensor_msgs/Image) or 'compressed' (CompressedImage)"),
    ('image_reliability', 'best_effort', "'best_effort' for cameras, 'reliable' for bags"),
    ('use_sim_time', 'false', 'use /clock (ros2 bag play --clock, simulators)'),
    ('lifecycle', 'false', 'start the managed (lifecycle) node, to be configured and activated'),
    ('log_level', 'info', 'logging level of the node'),
)


def generate_launch_description() -> LaunchDescription:
    installed = Path(get_package_share_directory('kp2d_ros')) / 'config' / 'kp2d.yaml'
    params = ('params_file', str(installed), 'parameters file (keys under /** or the node name)')
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in (params, *ARGUMENTS)
    ]
    common = {
        'name': LaunchConfiguration('node_name'),
        'namespace': LaunchConfiguration('namespace'),
        'parameters': [
            LaunchConfiguration('params_file'),
            {
                'use_sim_time': ParameterValue(
                    LaunchConfiguration('use_sim_time'), value_type=bool
                ),
                'image_transport': LaunchConfiguration('image_transport'),
                'image_reliability': LaunchConfiguration('image_reliability'),
            },
        ],
        'remappings': [
            ('image', LaunchConfiguration('image_topic')),
            ('image/compressed', [LaunchConfiguration('image_topic'), '/compressed']),
            ('camera_info', LaunchConfiguration('camera_info_topic')),
        ],
        'arguments': ['--ros-args', '--log-level', LaunchConfiguration('log_level')],
        'output': 'screen',
        'emulate_tty': True,
        'sigterm_timeout': '15',
    }
    lifecycle = LaunchConfiguration('lifecycle')
    plain = Node(
        package='kp2d_ros', executable='kp2d_node', condition=UnlessCondition(lifecycle), **common
    )
    managed = LifecycleNode(
        package='kp2d_ros',
        executable='kp2d_lifecycle_node',
        condition=IfCondition(lifecycle),
        **common,
    )
    return LaunchDescription([*declared, plain, managed])
