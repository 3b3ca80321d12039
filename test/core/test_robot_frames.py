"""The camera's trajectory turned into the robot base's odometry (REP 103 / REP 105)."""

from __future__ import annotations

import numpy as np
import pytest

from kp2d_core.geometry.poses import make_pose
from kp2d_core.geometry.robot_frames import OPTICAL_IN_REP103, base_covariance, base_pose

# a forward-looking camera 0.2 m ahead of the base and 0.5 m up
T_BASE_CAM = make_pose(OPTICAL_IN_REP103, np.array([0.2, 0.0, 0.5]))


def _yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_optical_axes_in_a_rep103_body_frame():
    forward, right, down = OPTICAL_IN_REP103 @ np.eye(3)[[2, 0, 1]].T
    assert np.allclose(forward, [1, 0, 0])  # optical z is the body's x
    assert np.allclose(right, [0, -1, 0])  # optical x points to the body's -y
    assert np.allclose(down, [0, 0, -1])
    assert np.isclose(np.linalg.det(OPTICAL_IN_REP103), 1.0)


def test_driving_forward_moves_the_base_along_x():
    camera_moved = make_pose(np.eye(3), np.array([0.0, 0.0, 1.5]))  # 1.5 m along optical z
    T = base_pose(camera_moved, T_BASE_CAM)
    assert np.allclose(T, make_pose(np.eye(3), np.array([1.5, 0.0, 0.0])))


def test_turning_in_place_about_the_base_keeps_the_base_still():
    """The base yaws by 0.3 rad on the spot: the camera, 0.2 m ahead, swings sideways; the
    base's pose is a pure yaw with no translation."""
    turn = make_pose(_yaw(0.3), np.zeros(3))
    T_world_cam = np.linalg.inv(T_BASE_CAM) @ turn @ T_BASE_CAM  # what the camera measures
    assert np.linalg.norm(T_world_cam[:3, 3]) > 0.05  # the camera itself moved
    assert np.allclose(base_pose(T_world_cam, T_BASE_CAM), turn)


def test_the_covariance_follows_the_axes():
    variance = np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # camera x, y, z, roll, pitch, yaw
    rotated = base_covariance(variance, T_BASE_CAM)
    assert np.allclose(np.diag(rotated), [3.0, 1.0, 2.0, 6.0, 4.0, 5.0])
    assert np.allclose(rotated, rotated.T)


def test_a_broken_extrinsic_is_refused():
    broken = T_BASE_CAM.copy()
    broken[0, 0] = np.nan
    with pytest.raises(ValueError, match='rigid'):
        base_pose(np.eye(4), broken)
    with pytest.raises(ValueError, match='rigid'):
        base_pose(np.eye(4), np.diag([2.0, 1.0, 1.0, 1.0]))
