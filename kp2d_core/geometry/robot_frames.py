"""The camera's trajectory as the robot's: odometry of a base frame (REP 103 / REP 105).

The visual odometry measures the camera: ``T_world_cam(t)``, the pose of the camera's optical
frame (x right, y down, z forward) in the first camera's optical frame. A robot publishes the
odometry of its base (``odom -> base_link``, x forward, y left, z up). With the camera's
extrinsic ``T_base_cam`` (fixed on the robot), the base moves by the same rigid motion seen
from another point:

    T_odom_base(t) = T_base_cam @ T_world_cam(t) @ inv(T_base_cam)

where ``odom`` is where the base was at the first frame (REP 105: the odom frame starts where
the robot starts). The pose covariance, (x, y, z, roll, pitch, yaw) in the camera's axes, is
turned into the base's axes by the extrinsic's rotation (the lever arm's share is left out).
"""

from __future__ import annotations

import numpy as np

from kp2d_core.geometry.poses import invert_pose, is_pose

OPTICAL_IN_REP103 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Rotation of an optical frame (x right, y down, z forward) in a REP 103 body frame of the same
origin (x forward, y left, z up): what ``<camera>_optical_frame`` is to ``<camera>_link``."""


def base_pose(T_world_cam: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """(4, 4) pose of the base in the odom frame from the camera's pose in the first camera's
    frame and the camera's extrinsic on the base (both (4, 4) rigid transforms).

    Raises:
        ValueError: either is not a finite rigid transform.
    """
    if not (is_pose(T_world_cam) and is_pose(T_base_cam)):
        raise ValueError('the camera pose and its extrinsic must be finite rigid transforms')
    return T_base_cam @ T_world_cam @ invert_pose(T_base_cam)


def base_covariance(covariance: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """(6, 6) covariance (x, y, z, roll, pitch, yaw) of a camera motion in the base's axes."""
    R = np.asarray(T_base_cam, np.float64)[:3, :3]
    rotate = np.zeros((6, 6))
    rotate[:3, :3] = rotate[3:, 3:] = R
    return rotate @ np.asarray(covariance, np.float64) @ rotate.T
