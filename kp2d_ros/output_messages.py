"""Build the node's output messages from kp2d_core results (no rclpy node needed).

Topic layouts (public API, see the README):

* ``~/keypoints`` sensor_msgs/PointCloud2 (``sensor_msgs_py.point_cloud2``), height 1, width
  N, fields ``x``, ``y`` (float32 pixels in the input image), ``score`` (float32) and
  ``descriptor`` (float32, count D = 256, unit L2 norm), best score first.
* ``~/features`` kp2d_msgs/Keypoints, ``~/homography`` kp2d_msgs/HomographyStamped and
  ``~/tracks`` kp2d_msgs/FeatureTracks (kp2d_msgs is required: one type per topic).
* ``~/feature_cloud`` sensor_msgs/PointCloud laid out as VINS-Fusion's feature tracker
  publishes it: points (x, y, 1) undistorted normalised, channels ``id``, ``u``, ``v``
  (raw pixels), ``velocity_x``, ``velocity_y`` (normalised coordinates per second).
* ``~/odometry`` nav_msgs/Odometry: pose of the camera in ``frames.odom`` with a covariance
  from the fit, and the twist between consecutive poses.

Stamps stay integer nanoseconds from the image header to every message.
"""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import Point32
import numpy as np
from sensor_msgs.msg import ChannelFloat32, PointCloud, PointField
from sensor_msgs_py import point_cloud2

from kp2d_core.geometry.poses import rotation_to_quaternion
from kp2d_core.vo.feature_tracks import Tracks
from kp2d_core.vo.keyframe_tracker import TrackResult
from kp2d_ros.stamps import time_msg

VINS_CHANNELS = ('id', 'u', 'v', 'velocity_x', 'velocity_y')


def cloud_fields(dim: int) -> list[PointField]:
    f32 = PointField.FLOAT32
    return [
        PointField(name='x', offset=0, datatype=f32, count=1),
        PointField(name='y', offset=4, datatype=f32, count=1),
        PointField(name='score', offset=8, datatype=f32, count=1),
        PointField(name='descriptor', offset=12, datatype=f32, count=dim),
    ]


def features_to_cloud(header: Any, kpts: np.ndarray, scores: np.ndarray, desc: np.ndarray) -> Any:
    """PointCloud2 with fields x, y, score, descriptor[D] (see the module docstring).

    Args:
        header: std_msgs/Header to copy.
        kpts: (N, 2), scores: (N,), desc: (N, D) arrays.
    """
    packed = np.concatenate([kpts, scores[:, None], desc], axis=1).astype(np.float32)
    cloud = point_cloud2.create_cloud(header, cloud_fields(desc.shape[1]), packed)
    cloud.is_dense = True  # every value is finite
    return cloud


def cloud_to_arrays(cloud: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`features_to_cloud`: (kpts (N, 2), scores (N,), desc (N, D))."""
    values = point_cloud2.read_points_numpy(cloud).reshape(cloud.width * cloud.height, -1)
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


def homography_msg(cls: Any, time_cls: Any, header: Any, track: TrackResult) -> Any:
    """kp2d_msgs/HomographyStamped for a tracking result (see the module docstring)."""
    residual = track.residual_px if np.isfinite(track.residual_px) else -1.0
    return cls(
        header=header,
        keyframe_stamp=time_msg(time_cls, track.key_stamp_ns),
        homography=np.asarray(track.H_key_to_cur, np.float64).ravel().tolist(),
        inliers=int(track.num_inliers),
        matches=int(track.num_matches),
        residual_px=float(residual),
        rectified=bool(track.rectified),
    )


def tracks_msg(cls: Any, header: Any, tracks: Tracks) -> Any:
    """kp2d_msgs/FeatureTracks of one frame's tracks (NaN normalised values without a camera)."""
    count = len(tracks)
    nan = np.full((count, 2), np.nan)
    normalized = tracks.normalized if tracks.normalized is not None else nan
    velocity_n = tracks.velocity_normalized if tracks.velocity_normalized is not None else nan
    return cls(
        header=header,
        ids=np.ascontiguousarray(tracks.ids, np.uint64),
        ages=np.ascontiguousarray(np.minimum(tracks.ages, 2**32 - 1), np.uint32),
        xy=_flat(tracks.xy),
        normalized=_flat(normalized),
        velocity=_flat(tracks.velocity),
        velocity_normalized=_flat(velocity_n),
        scores=np.ascontiguousarray(tracks.scores, np.float32),
        has_intrinsics=tracks.normalized is not None,
    )


def _flat(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, np.float32).ravel()


def vins_feature_cloud(header: Any, tracks: Tracks) -> Any:
    """sensor_msgs/PointCloud in VINS-Fusion's feature layout (needs normalised tracks).

    Track ids go in a float32 channel, as VINS-Fusion expects: exact up to 2^24.
    """
    if tracks.normalized is None or tracks.velocity_normalized is None:
        raise ValueError('the VINS feature layout needs intrinsics (CameraInfo)')
    cloud = PointCloud(header=header)
    xy = tracks.normalized
    cloud.points = [_point(x, y) for x, y in xy.tolist()]
    columns = (
        tracks.ids.astype(np.float64),
        tracks.xy[:, 0],
        tracks.xy[:, 1],
        tracks.velocity_normalized[:, 0],
        tracks.velocity_normalized[:, 1],
    )
    cloud.channels = [
        ChannelFloat32(name=name, values=np.asarray(column, np.float32).tolist())
        for name, column in zip(VINS_CHANNELS, columns)
    ]
    return cloud


def _point(x: float, y: float) -> Any:
    return Point32(x=x, y=y, z=1.0)


def fill_odometry(
    odom: Any,
    T_world_cam: np.ndarray,
    frames: tuple[str, str],
    stamp: Any,
    covariance: np.ndarray | None = None,
    velocity: tuple[np.ndarray, np.ndarray] | None = None,
    twist_covariance: np.ndarray | None = None,
) -> Any:
    """Fill a nav_msgs/Odometry: pose (4, 4) of ``frames[1]`` in ``frames[0]``, its (6, 6)
    covariance, and the twist (linear, angular) in the child frame with its (6, 6) covariance
    when known.

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
    if twist_covariance is not None:
        odom.twist.covariance = [float(v) for v in np.asarray(twist_covariance).ravel()]
    return odom
