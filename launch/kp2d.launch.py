"""Start the kp2d node: ros2 launch kp2d_ros kp2d.launch.py image_topic:=/camera/image_raw."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_params = Path(get_package_share_directory('kp2d_ros')) / 'config' / 'kp2d.yaml'
    arguments = [
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw'),
        DeclareLaunchArgument('camera_info_topic', default_value='/camera/camera_info'),
        DeclareLaunchArgument('params_file', default_value=str(default_params)),
        DeclareLaunchArgument('namespace', default_value=''),
    ]
    node = Node(
        package='kp2d_ros',
        executable='kp2d_node',
        name='kp2d',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file')],
        remappings=[
            ('image', LaunchConfiguration('image_topic')),
            ('camera_info', LaunchConfiguration('camera_info_topic')),
        ],
        output='screen',
    )
    return LaunchDescription([*arguments, node])
