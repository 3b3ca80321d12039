"""Build the node's output messages from kp2d_core results (no rclpy node needed).

Topic layouts (public API, see the README):

* ``~/keypoints`` sensor_msgs/PointCloud2, height 1, width N, little-endian, dense, fields
  ``x``, ``y`` (float32 pixels in the input image), ``score`` (float32) and ``descriptor``
  (float32, count D = 256, unit L2 norm); point_step = 4 * (3 + D) bytes, best score first.
* ``~/features`` kp2d_msgs/Keypoints and ``~/homography`` kp2d_msgs/HomographyStamped when
  kp2d_msgs is installed. Without it, ``~/homography`` is a sensor_msgs/JointState whose
  ``name``/``position`` pairs carry the same values (HOMOGRAPHY_NAMES) with the frame's header.
* ``~/odometry`` nav_msgs/Odometry: pose of the camera in ``odom_frame`` with a covariance
  from the fit, and the twist between consecutive poses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kp2d_core.motion import rotation_to_quaternion
from kp2d_core.tracking import TrackResult

HOMOGRAPHY_NAMES = [f'h{r}{c}' for r in range(3) for c in range(3)] + [
    'inliers',
    'matches',
    'keyframe_stamp',
    'residual_px',
]


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


def keypoints_msg(
    cls: Any, header: Any, kpts: np.ndarray, scores: np.ndarray, desc: np.ndarray
) -> Any:
    """kp2d_msgs/Keypoints: header, count, descriptor_size, xy, scores, descriptors."""
    return cls(
        header=header,
        count=len(kpts),
        descriptor_size=int(desc.shape[1]),
        xy=np.ascontiguousarray(kpts, np.float32).ravel(),
        scores=np.ascontiguousarray(scores, np.float32),
        descriptors=np.ascontiguousarray(desc, np.float32).ravel(),
    )


def homography_values(track: TrackResult) -> list[float]:
    """The values of HOMOGRAPHY_NAMES for a tracking result with a homography."""
    values = np.asarray(track.H_key_to_cur, np.float64).ravel().tolist()
    residual = track.residual_px if np.isfinite(track.residual_px) else -1.0
    return values + [track.num_inliers, track.num_matches, track.key_stamp, residual]


def homography_msg(cls: Any, time_cls: Any, header: Any, track: TrackResult) -> Any:
    """kp2d_msgs/HomographyStamped for a tracking result (see the module docstring)."""
    values = homography_values(track)
    return cls(
        header=header,
        keyframe_stamp=time_msg(time_cls, track.key_stamp),
        homography=values[:9],
        inliers=int(track.num_inliers),
        matches=int(track.num_matches),
        residual_px=float(values[12]),
    )


def homography_joint_state(cls: Any, header: Any, track: TrackResult) -> Any:
    """The header-carrying standard-message form: sensor_msgs/JointState name/position."""
    return cls(header=header, name=list(HOMOGRAPHY_NAMES), position=homography_values(track))


def fill_odometry(
    odom: Any,
    T_world_cam: np.ndarray,
    frames: tuple[str, str],
    stamp: Any,
    covariance: np.ndarray | None = None,
    velocity: tuple[np.ndarray, np.ndarray] | None = None,
) -> Any:
    """Fill a nav_msgs/Odometry: pose (4, 4) of ``frames[1]`` in ``frames[0]``, its (6, 6)
    covariance, and the twist (linear, angular) in the child frame when known.

    An unknown twist gets -1 on its covariance diagonal (REP 103 / robot_localization: ignore).
    """
    odom.header.stamp = stamp
    odom.header.frame_id, odom.child_frame_id = frames
    position = odom.pose.pose.position
    position.x, position.y, position.z = (float(v) for v in T_world_cam[:3, 3])
    orient = odom.pose.pose.orientation
    orient.x, orient.y, orient.z, orient.w = rotation_to_quaternion(T_world_cam[:3, :3])
    if covariance is not None:
        odom.pose.covariance = [float(v) for v in np.asarray(covariance).ravel()]
    if velocity is None:
        odom.twist.covariance = [-1.0 if i % 7 == 0 else 0.0 for i in range(36)]
        return odom
    linear, angular = velocity
    twist = odom.twist.twist
    twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in linear)
    twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in angular)
    if covariance is not None:  # the difference of two poses: about twice their variance
        odom.twist.covariance = [2.0 * float(v) for v in np.asarray(covariance).ravel()]
    return odom


def time_msg(cls: Any, seconds: float) -> Any:
    """builtin_interfaces/Time from float seconds."""
    sec = int(np.floor(seconds))
    return cls(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time to float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)
