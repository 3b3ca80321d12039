"""Start the kp2d node.

    ros2 launch kp2d_ros kp2d.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info [namespace:=front] [image_transport:=compressed]

Every argument has a description (``ros2 launch kp2d_ros kp2d.launch.py --show-args``);
arguments with a fixed set of values declare it, so a wrong value stops the launch; the
switches (``use_sim_time``, ``lifecycle``, ``rviz``) take true or false in any case. The
node settings ``image_transport``, ``image_reliability`` and ``use_sim_time`` are passed to
the node only when given on the command line: left empty, the params file decides. A node
that fails at start-up (its FATAL line names the reason) ends the launch with one ERROR line
that says so.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription

FROM_PARAMS = 'empty: the params file (or the node default) decides'
# (name, default, description, choices or None)
ARGUMENTS = (
    (
        'image_topic',
        '/camera/image_raw',
        'camera image topic (for compressed: its base topic)',
        None,
    ),
    ('camera_info_topic', '/camera/camera_info', 'CameraInfo topic (optional input)', None),
    ('namespace', '', 'namespace of the node (parameters apply under any namespace)', None),
    ('node_name', 'kp2d', 'name of the node', None),
    (
        'image_transport',
        '',
        f'sensor_msgs/Image (raw) or CompressedImage (compressed) input; {FROM_PARAMS}',
        ['', 'raw', 'compressed'],
    ),
    (
        'image_reliability',
        '',
        f'image QoS, best_effort for cameras, reliable for bags; {FROM_PARAMS}',
        ['', 'best_effort', 'reliable'],
    ),
    (
        'use_sim_time',
        '',
        f'true or false (any case): use /clock (ros2 bag play --clock, simulators); {FROM_PARAMS}',
        None,
    ),
    (
        'lifecycle',
        'false',
        'true or false (any case): start the managed (lifecycle) node, to be configured and '
        'activated',
        None,
    ),
    (
        'rviz',
        'false',
        'true or false (any case): also start rviz2 with config/kp2d.rviz (debug image, '
        'odometry, TF)',
        None,
    ),
    (
        'log_level',
        'info',
        'logging level of the node',
        ['debug', 'info', 'warn', 'error', 'fatal'],
    ),
)
OPTIONAL_SETTINGS = ('image_transport', 'image_reliability', 'use_sim_time')
SWITCHES = ('use_sim_time', 'lifecycle', 'rviz')  # true or false, in any case


def _switch(context, name: str) -> str:
    """'true', 'false' or '' for a switch argument, whatever case it was typed in."""
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ('', 'true', 'false'):
        raise ValueError(f"argument '{name}' must be true or false (any case), got {value!r}")
    return value


def _nodes(context, params_file: LaunchConfiguration):
    """The node, with the optional settings that were given on the command line, and what
    ends the launch when it fails at start-up."""
    given = {}
    for name in OPTIONAL_SETTINGS:
        value = (
            _switch(context, name)
            if name in SWITCHES
            else LaunchConfiguration(name).perform(context)
        )
        if value:
            given[name] = value == 'true' if name == 'use_sim_time' else value
    common = {
        'name': LaunchConfiguration('node_name'),
        'namespace': LaunchConfiguration('namespace'),
        'parameters': [params_file, given] if given else [params_file],
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
    if _switch(context, 'lifecycle') == 'true':
        node = LifecycleNode(package='kp2d_ros', executable='kp2d_lifecycle_node', **common)
    else:
        node = Node(package='kp2d_ros', executable='kp2d_node', **common)
    failed = RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_exit))
    actions = [node, failed]
    if _switch(context, 'rviz') == 'true':
        config = Path(get_package_share_directory('kp2d_ros')) / 'config' / 'kp2d.rviz'
        actions.append(
            Node(package='rviz2', executable='rviz2', arguments=['-d', str(config)], output='log')
        )
    return actions


def _on_exit(event, context):
    """A node that ends with an error code failed (its FATAL line says why): say so, stop."""
    if event.returncode in (0, None, -2):  # done, or ended by Ctrl-C
        return None
    reason = f'kp2d node failed (exit code {event.returncode}); its FATAL line above says why'
    return [LogInfo(msg=f'ERROR: {reason}'), EmitEvent(event=Shutdown(reason=reason))]


def generate_launch_description() -> LaunchDescription:
    installed = Path(get_package_share_directory('kp2d_ros')) / 'config' / 'kp2d.yaml'
    declared = [
        DeclareLaunchArgument(
            'params_file',
            default_value=str(installed),
            description='parameters file (keys under /** or the node name)',
        )
    ]
    for name, default, description, choices in ARGUMENTS:
        declared.append(
            DeclareLaunchArgument(
                name, default_value=default, description=description, choices=choices
            )
        )
    params_file = LaunchConfiguration('params_file')
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes, args=[params_file])])
