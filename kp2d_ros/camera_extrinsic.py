"""The camera's pose on the robot (its extrinsic), read once from TF.

The robot's URDF (robot_state_publisher) or a static_transform_publisher puts the camera's
optical frame on /tf_static below the base. The extrinsic is fixed, so it is looked up once per
camera frame and kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.time import Time
from tf2_ros import Buffer, TransformException, TransformListener

from kp2d_core.geometry.poses import make_pose, quaternion_to_rotation


def transform_to_pose(transform: Any) -> np.ndarray:
    """(4, 4) rigid transform of a geometry_msgs/Transform."""
    t, q = transform.translation, transform.rotation
    return make_pose(quaternion_to_rotation(q.x, q.y, q.z, q.w), np.array([t.x, t.y, t.z]))


class CameraExtrinsic:
    """Looks up ``T_base_cam`` (the camera frame's pose in the base frame) on /tf."""

    def __init__(self, node: Any) -> None:
        self.buffer = Buffer()
        self.listener = TransformListener(self.buffer, node)
        self.known: dict[tuple[str, str], np.ndarray] = {}

    def lookup(self, base_frame: str, camera_frame: str) -> np.ndarray | str:
        """(4, 4) ``T_base_cam``, or why it is not known (yet)."""
        key = (base_frame, camera_frame)
        if key in self.known:
            return self.known[key]
        if not camera_frame:
            return 'the images have no frame_id'
        try:
            stamped = self.buffer.lookup_transform(base_frame, camera_frame, Time())
            pose = transform_to_pose(stamped.transform)
        except (TransformException, ValueError) as exc:
            return f'no transform {base_frame} <- {camera_frame} on /tf: {exc}'
        self.known[key] = pose
        return pose

    def destroy(self) -> None:
        self.listener.unregister()
