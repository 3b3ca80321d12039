"""Helpers to run the kp2d node in another process over DDS (tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Callable
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

PARAMS_FILE = Path(__file__).resolve().parents[1] / 'config' / 'kp2d.yaml'
PROFILE = Path(__file__).resolve().parent / 'fastdds_shm.xml'
RESEND_S = 5.0
ROS_LIBRARIES = ('rclpy', 'cv_bridge', 'sensor_msgs_py', 'message_filters', 'tf2_ros')
ROS_TOOLS = ('launch', 'launch_ros', 'ros2cli')
SKIP_REASON = (
    'needs the ROS 2 libraries (cv_bridge, sensor_msgs_py, message_filters, tf2_ros, launch, '
    'ros2cli): tools/build_ros_deps.py builds them from the sources in $KP2D_ROS_SRC '
    '(see ros_deps.repos), or source a ROS 2 Jazzy install'
)


def missing_ros_libraries(names: tuple[str, ...] = ROS_LIBRARIES + ROS_TOOLS) -> list[str]:
    """The ROS libraries of ``names`` that this interpreter cannot find."""
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


def require_ros_libraries(names: tuple[str, ...] = ROS_LIBRARIES + ROS_TOOLS) -> None:
    """Skip the calling test module, with one reason naming KP2D_ROS_SRC, when any of ``names``
    is missing."""
    import pytest

    if missing_ros_libraries(names):
        pytest.skip(SKIP_REASON, allow_module_level=True)


def ros_environment(domain_id: int) -> dict[str, str]:
    """Variables that keep DDS on this machine, in its own domain, with a large SHM segment."""
    return {
        'ROS_DOMAIN_ID': str(domain_id),
        'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
        'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE),  # Fast DDS 3 (Kilted and newer)
        'FASTRTPS_DEFAULT_PROFILES_FILE': str(PROFILE),  # Fast DDS 2.x (Jazzy) reads only this
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
    }


def unique_domain_id() -> int:
    """A domain id in [1, 200] that differs between concurrent test runs (by process id)."""
    return 1 + os.getpid() % 200


def start_node(
    params: dict[str, Any],
    remaps: dict[str, str],
    log: Path,
    params_file: Path | None = PARAMS_FILE,
    lifecycle: bool = False,
) -> subprocess.Popen:
    """Start the node (``kp2d_ros.node`` main or lifecycle main) in its own session."""
    entry = 'lifecycle_main' if lifecycle else 'main'
    code = f'import sys; from kp2d_ros.node import {entry}; {entry}(sys.argv)'
    args = [sys.executable, '-c', code, '--ros-args']
    if params_file is not None:
        args += ['--params-file', str(params_file)]
    for name, value in params.items():
        args += ['-p', f'{name}:={value}']
    for src, dst in remaps.items():
        args += ['-r', f'{src}:={dst}']
    handle = open(log, 'w')  # noqa: SIM115 - the child keeps it open while it runs
    return subprocess.Popen(
        args,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ.copy(),
    )


def stop_node(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGINT the node's process group and wait; SIGKILL if it does not exit."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def image_msg(image: np.ndarray, stamp_ns: int, frame_id: str = 'camera_optical_frame') -> Any:
    """sensor_msgs/Image (bgr8 or mono8) from a uint8 array, made by cv_bridge."""
    from cv_bridge import CvBridge

    msg = CvBridge().cv2_to_imgmsg(image, 'mono8' if image.ndim == 2 else 'bgr8')
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return msg


def camera_info_msg(
    K: np.ndarray,
    hw: tuple[int, int],
    stamp_ns: int,
    d: tuple[float, ...] = (),
    model: str = '',
) -> Any:
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(height=hw[0], width=hw[1], k=[float(v) for v in K.ravel()])
    msg.d = [float(v) for v in d]
    msg.distortion_model = model
    msg.header.frame_id = 'camera_optical_frame'
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return msg


def homography_type() -> Any:
    """The type of ~/homography: kp2d_msgs/HomographyStamped."""
    from kp2d_msgs.msg import HomographyStamped

    return HomographyStamped


def homography_of(msg: Any) -> tuple[np.ndarray, int, int, int, int]:
    """(H (3, 3), frame stamp ns, keyframe stamp ns, inliers, matches) of a
    kp2d_msgs/HomographyStamped."""
    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    key = msg.keyframe_stamp.sec * 1_000_000_000 + msg.keyframe_stamp.nanosec
    H = np.asarray(msg.homography, np.float64).reshape(3, 3)
    return H, stamp, key, int(msg.inliers), int(msg.matches)


def tracks_type() -> Any:
    """kp2d_msgs/FeatureTracks where kp2d_msgs is built, else None (no ~/tracks topic)."""
    try:
        from kp2d_msgs.msg import FeatureTracks
    except ImportError:
        return None
    return FeatureTracks


def diagnostic_values(msg: Any) -> dict[str, str]:
    """key -> value of the kp2d status in a DiagnosticArray."""
    return {v.key: v.value for v in msg.status[0].values}


def spin_until(node: Any, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin ``node`` until ``condition()`` holds or ``timeout`` seconds pass."""
    import rclpy

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return condition()


class Probe:
    """A client node: publishes images/camera info, records everything the kp2d node says."""

    def __init__(
        self,
        namespace: str = '/test',
        node: str = '/kp2d',
        raw: bool = False,
        reliable_images: bool = False,
    ) -> None:
        """``raw``: receive the node's outputs serialized (a consumer that costs no parsing);
        ``reliable_images``: publish images with reliable QoS (as a bag player does)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud, PointCloud2

        self.node = Node('kp2d_probe')
        self.prefix = node
        image_qos = qos_profile_sensor_data
        if reliable_images:
            image_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, f'{namespace}/image', image_qos)
        self.pub_info = self.node.create_publisher(
            CameraInfo, f'{namespace}/camera_info', qos_profile_sensor_data
        )
        topics = [
            ('keypoints', PointCloud2),
            ('homography', homography_type()),
            ('odometry', Odometry),
            ('feature_cloud', PointCloud),
        ]
        tracks = tracks_type()
        if tracks is not None:
            topics.append(('tracks', tracks))
        self.received: dict[str, list[Any]] = {k: [] for k, _ in topics}
        self.received['diag'] = []
        for key, msg_type in topics:
            self.node.create_subscription(
                msg_type,
                f'{node}/{key}',
                lambda m, k=key: self.received[k].append(m),
                50,
                raw=raw,
            )
        self.node.create_subscription(
            DiagnosticArray, '/diagnostics', lambda m: self.received['diag'].append(m), 50
        )

    def wait_for_node(self, timeout: float = 60.0, camera_info: Any = None) -> bool:
        """True once the kp2d node subscribes to our image topic and publishes keypoints.

        With a ``camera_info`` message, also once the node has accepted one: it is published
        again until the node's diagnostics count it. The two ends of a topic match at
        different moments, and a best-effort CameraInfo sent before the node's reader knew
        our writer is lost: the frame would go without intrinsics.
        """
        deadline = time.monotonic() + timeout
        ready = spin_until(
            self.node,
            lambda: (
                self.pub_image.get_subscription_count() > 0
                and self.node.count_publishers(f'{self.prefix}/keypoints') > 0
            ),
            timeout,
        )
        if not ready or camera_info is None:
            return ready

        def accepted() -> bool:
            return any(
                int(diagnostic_values(m).get('camera_info_accepted', 0)) > 0
                for m in self.received['diag']
            )

        while time.monotonic() < deadline:
            self.pub_info.publish(camera_info)
            if spin_until(self.node, accepted, min(0.25, deadline - time.monotonic())):
                return True
        return accepted()

    def send(self, image_msg: Any, info_msg: Any = None, timeout: float = 60.0) -> bool:
        """Publish one frame and wait for the keypoints with its stamp.

        Images are best effort: the frame is published again every ``RESEND_S`` seconds until
        it is answered (a second copy of a processed frame is dropped as a duplicate stamp).
        """
        if info_msg is not None:
            self.pub_info.publish(info_msg)
            spin_until(self.node, lambda: False, 0.1)  # let it arrive before the image
        stamp = image_msg.header.stamp

        def arrived() -> bool:
            return any(m.header.stamp == stamp for m in self.received['keypoints'])

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pub_image.publish(image_msg)
            if spin_until(self.node, arrived, min(RESEND_S, deadline - time.monotonic())):
                return True
        return arrived()


def shifted_frames(
    n: int, hw: tuple[int, int], start: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A camera sliding over the bundled photo by whole 8-px cells, with exact homographies.

    Shifts by the network stride make even a random network equivariant, so the node's
    homography must match the truth to a fraction of a pixel: node tests check the plumbing
    and the geometry with them, not the quality of the weights.
    """
    from kp2d_core.images import read_image
    from kp2d_core.inference.probe import sample_photo_path

    photo = read_image(sample_photo_path())
    frames, H_0to = [], []
    for k in range(start, start + n):
        dx, dy = 8 * k, 8 * min(k, 15)  # diagonal, then along x (the photo is 600x400)
        frame = photo[40 + dy : 40 + dy + hw[0], 20 + dx : 20 + dx + hw[1]]
        if frame.shape[:2] != tuple(hw):
            raise ValueError(f'frame {k} of {hw} leaves the {photo.shape[:2]} photo')
        frames.append(np.ascontiguousarray(frame))
        H_0to.append(np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]]))
    return frames, H_0to
