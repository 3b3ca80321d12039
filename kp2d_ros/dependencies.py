"""The ROS 2 libraries that PyPI does not carry, and one line that says how to get them.

rclpy and the message packages come with the ROS 2 wheels; cv_bridge, message_filters,
sensor_msgs_py and tf2_ros come from a ROS install (apt) or from ``make ros-deps`` (built from
the sources pinned in ``ros_deps.repos``). A tool that needs one of them checks first and
refuses in one line rather than ending in a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
import importlib.util

APT_PACKAGES = {
    'cv_bridge': 'ros-jazzy-cv-bridge',
    'message_filters': 'ros-jazzy-message-filters',
    'sensor_msgs_py': 'ros-jazzy-sensor-msgs-py',
    'tf2_ros': 'ros-jazzy-tf2-ros-py',
}
NODE_LIBRARIES = ('cv_bridge', 'message_filters', 'sensor_msgs_py', 'tf2_ros', 'kp2d_msgs')
REPLAY_LIBRARIES = ('cv_bridge', 'message_filters')


class MissingLibraryError(ImportError):
    """A ROS library a tool needs cannot be imported; the message says how to install it."""


def missing_libraries(names: Iterable[str]) -> list[str]:
    """The modules of ``names`` this interpreter cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def require_libraries(tool: str, names: Iterable[str]) -> None:
    """Raise :class:`MissingLibraryError` naming what ``tool`` lacks and where to get it."""
    missing = missing_libraries(names)
    if not missing:
        return
    packages = ' '.join(APT_PACKAGES[name] for name in missing if name in APT_PACKAGES)
    hints = []
    if packages:
        hints.append(
            f'on ROS 2 Jazzy `sudo apt install {packages}` and source '
            '/opt/ros/jazzy/setup.bash; without a ROS install, `make ros-deps` builds them into '
            '.venv from the sources of ros_deps.repos'
        )
    if 'kp2d_msgs' in missing:
        hints.append(
            'kp2d_msgs is built with the package (colcon build --base-paths src/kp2d '
            'src/kp2d/kp2d_msgs, or tools/build_msgs.py into .venv)'
        )
    raise MissingLibraryError(
        f'{tool} needs {", ".join(missing)}, which this Python cannot import: ' + '; '.join(hints)
    )
