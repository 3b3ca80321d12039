"""Build the node's output messages from kp2d_core results (no rclpy node needed).

Topic layouts (public API):

* ``~/keypoints`` sensor_msgs/PointCloud2, height 1, width N, little-endian, dense, fields
  ``x``, ``y`` (float32 pixels in the input image), ``score`` (float32) and ``descriptor``
  (float32, count D = 256, unit L2 norm); point_step = 4 * (3 + D) bytes, best score first.
* ``~/homography`` std_msgs/Float64MultiArray, 13 values: [0:9] the 3x3 homography from the
  keyframe to the current frame (row-major, pixels), [9] inliers, [10] matches, [11] the
  current frame's stamp and [12] the keyframe's stamp, both in seconds.
* ``~/odometry`` nav_msgs/Odometry: pose of the camera (child frame = the image's frame_id)
  in ``odom_frame``; translation in units of the first keyframe's distance to the scene plane.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kp2d_core.motion import rotation_to_quaternion

HOMOGRAPHY_FIELDS = 13


def features_to_cloud(
    cloud_cls: Any,
    field_cls: Any,
    header: Any,
    kpts: np.ndarray,
    scores: np.ndarray,
    desc: np.ndarray,
) -> Any:
    """PointCloud2 with fields x, y, score, descriptor[D] (see the module docstring).

    Args:
        cloud_cls, field_cls: sensor_msgs.msg.PointCloud2 and PointField.
        header: std_msgs/Header to copy.
        kpts: (N, 2), scores: (N,), desc: (N, D) arrays.
    """
    n, dim = desc.shape
    f32 = field_cls.FLOAT32
    fields = [
        field_cls(name='x', offset=0, datatype=f32, count=1),
        field_cls(name='y', offset=4, datatype=f32, count=1),
        field_cls(name='score', offset=8, datatype=f32, count=1),
        field_cls(name='descriptor', offset=12, datatype=f32, count=dim),
    ]
    packed = np.concatenate([kpts, scores[:, None], desc], axis=1).astype('<f4')
    return cloud_cls(
        header=header,
        height=1,
        width=n,
        fields=fields,
        is_bigendian=False,
        point_step=4 * (3 + dim),
        row_step=4 * (3 + dim) * n,
        data=packed.tobytes(),
        is_dense=True,
    )


def cloud_to_arrays(cloud: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`features_to_cloud`: (kpts (N, 2), scores (N,), desc (N, D))."""
    dim = cloud.point_step // 4 - 3
    values = np.frombuffer(bytes(cloud.data), '<f4').reshape(cloud.width, 3 + dim)
    return values[:, :2].copy(), values[:, 2].copy(), values[:, 3:].copy()


def homography_array(
    array_cls: Any,
    dim_cls: Any,
    H: np.ndarray,
    inliers: int,
    matches: int,
    stamp: float,
    key_stamp: float,
) -> Any:
    """Float64MultiArray with the 13-value layout of the module docstring."""
    msg = array_cls()
    msg.layout.dim = [
        dim_cls(
            label='H_key_to_cur_inliers_matches_stamp_keystamp',
            size=HOMOGRAPHY_FIELDS,
            stride=HOMOGRAPHY_FIELDS,
        )
    ]
    values = list(np.asarray(H, np.float64).ravel()) + [inliers, matches, stamp, key_stamp]
    msg.data = [float(v) for v in values]
    return msg


def fill_odometry(
    odom: Any, T_world_cam: np.ndarray, frame_id: str, child_frame_id: str, stamp: Any
) -> Any:
    """Fill a nav_msgs/Odometry with a (4, 4) camera pose (covariance left unknown: 0)."""
    odom.header.stamp = stamp
    odom.header.frame_id = frame_id
    odom.child_frame_id = child_frame_id
    t = T_world_cam[:3, 3]
    odom.pose.pose.position.x, odom.pose.pose.position.y, odom.pose.pose.position.z = map(float, t)
    q = rotation_to_quaternion(T_world_cam[:3, :3])
    orient = odom.pose.pose.orientation
    orient.x, orient.y, orient.z, orient.w = q
    return odom


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time to float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)
