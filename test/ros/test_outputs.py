"""What the node publishes for a frame: TF never re-parents the camera; odometry fields."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kp2d_testing.ros import require_ros_libraries, ros_environment, unique_domain_id

require_ros_libraries()

import rclpy  # noqa: E402
from rclpy.time import Time  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from kp2d_core.geometry.image_points import ImagePoints  # noqa: E402
from kp2d_core.inference.features import Features  # noqa: E402
from kp2d_core.vo.feature_tracks import FeatureTracker  # noqa: E402
from kp2d_core.vo.frame_pipeline import FrameResult  # noqa: E402
from kp2d_core.vo.keyframe_tracker import TrackResult  # noqa: E402
from kp2d_ros.parameters import DEFAULTS, options_from_values  # noqa: E402


@pytest.fixture
def node(monkeypatch):
    for key, value in ros_environment(unique_domain_id() + 4).items():
        monkeypatch.setenv(key, value)
    rclpy.init()
    node = rclpy.create_node('outputs_test')
    yield node
    node.destroy_node()
    rclpy.shutdown()


def _frame(stamp: float, accumulated: float = 1e-4) -> FrameResult:
    """A frame moving along x at 1 unit per second; its own pose variance 1e-4, the
    trajectory's ``accumulated``."""
    empty = np.zeros((0, 2))
    T = np.eye(4)
    T[0, 3] = stamp  # moving along x at 1 unit per second
    track = TrackResult(
        np.eye(3),
        None,
        10,
        10,
        0,
        False,
        T,
        'homography',
        empty,
        empty,
        np.zeros(0, bool),
        0.5,
        np.diag(np.full(6, accumulated)),
        relative_covariance=np.diag(np.full(6, 1e-4)),
    )
    features = Features(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 256), (240, 320))
    points = ImagePoints.of(np.zeros((0, 2)), None)
    tracks = FeatureTracker().update(features, points, int(stamp * 1e9))
    return FrameResult(int(stamp * 1e9), features, points, track, tracks)


def _capturing_outputs(node, values: dict) -> tuple:
    """The node's Outputs with these parameter values, the odometry it publishes collected
    in a list, and a header of the camera's frame (stamp 1 s)."""
    from kp2d_ros.publishers import Outputs

    outputs = Outputs(node, options_from_values(values), lifecycle=False)
    odometry = []
    outputs.odometry = SimpleNamespace(publish=odometry.append)
    header = Header(frame_id='camera_optical_frame')
    header.stamp.sec = 1
    return outputs, odometry, header


def test_tf_never_gives_the_camera_frame_a_second_parent(node):
    outputs, odometry, header = _capturing_outputs(node, DEFAULTS)
    sent = []
    outputs._publish_pose(header, _frame(1.0))
    assert outputs.tf is None  # publish.tf off: no broadcaster
    outputs.options = options_from_values({**DEFAULTS, 'publish.tf': True})  # set at runtime
    outputs._publish_pose(header, _frame(1.5))
    assert outputs.tf is not None  # created when the parameter turned on
    outputs.tf.sendTransform = sent.append
    for stamp in (1.0, 2.0):
        header.stamp.sec = int(stamp)
        outputs._publish_pose(header, _frame(stamp))
    assert [t.child_frame_id for t in sent] == ['kp2d_camera_optical_frame'] * 2
    assert sent[0].header.frame_id == 'kp2d_odom'
    assert odometry[-1].twist.twist.linear.x == pytest.approx(1.0)  # from consecutive poses
    assert odometry[0].twist.covariance[0] == -1.0  # no previous pose: twist unknown
    outputs.options = options_from_values(
        {**DEFAULTS, 'publish.tf': True, 'frames.camera': 'camera_optical_frame'}
    )
    outputs._publish_pose(header, _frame(3.0))
    assert len(sent) == 2  # the camera frame has a parent already: no TF for it
    outputs.destroy()


def test_the_twist_covariance_comes_from_the_frames_own_motion(node):
    """Not from the accumulated pose covariance (which grows without bound): two frames 0.1 s
    apart, each measured to 1e-4 against its keyframe, give (1e-4 + 1e-4) / 0.1^2, however
    uncertain the trajectory has become."""
    outputs, odometry, header = _capturing_outputs(node, DEFAULTS)
    for step, accumulated in enumerate((1e-4, 10.0, 1e6)):
        header.stamp.sec, header.stamp.nanosec = 5, step * 100_000_000
        outputs._publish_pose(header, _frame(5 + 0.1 * step, accumulated))
    for odom in odometry[1:]:
        assert odom.twist.covariance[0] == pytest.approx(2e-4 / 0.01)
    assert odometry[-1].pose.covariance[0] == pytest.approx(1e6)  # the pose's keeps growing
    outputs.destroy()


def _static_camera_mount(node) -> object:
    """base_link -> camera_optical_frame on /tf_static: a forward-looking camera 0.2 m ahead
    of the base and 0.5 m up (optical axes, REP 103)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_ros import StaticTransformBroadcaster

    from kp2d_core.geometry.poses import rotation_to_quaternion
    from kp2d_core.geometry.robot_frames import OPTICAL_IN_REP103

    mount = TransformStamped(child_frame_id='camera_optical_frame')
    mount.header.frame_id = 'base_link'
    mount.transform.translation.x, mount.transform.translation.z = 0.2, 0.5
    q = rotation_to_quaternion(OPTICAL_IN_REP103)
    r = mount.transform.rotation
    r.x, r.y, r.z, r.w = q
    broadcaster = StaticTransformBroadcaster(node)
    broadcaster.sendTransform(mount)
    return broadcaster


def _forward(stamp: float) -> FrameResult:
    """The camera moving along its optical axis at 1 unit per second, its own pose variance
    1e-4 on x and 9e-4 on z (the optical axis)."""
    frame = _frame(stamp)
    T = np.eye(4)
    T[2, 3] = stamp
    variance = np.diag([1e-4, 1e-4, 9e-4, 1e-4, 1e-4, 1e-4])
    track = dataclasses.replace(frame.track, T_world_cur=T, covariance=variance)
    return dataclasses.replace(frame, track=track)


def test_base_odometry_follows_the_camera_extrinsic_on_tf(node):
    """With frames.base set, the odometry is the base's (REP 105 odom -> base_link): the camera
    driving along its optical axis moves the base along x, and the covariance follows."""
    values = {**DEFAULTS, 'frames.base': 'base_link', 'frames.odom': 'odom', 'publish.tf': True}
    outputs, odometry, header = _capturing_outputs(node, values)
    sent = []
    outputs._publish_pose(header, _forward(1.0))
    assert odometry == []  # the extrinsic is not on /tf yet: nothing rather than a wrong frame
    assert 'extrinsic' in outputs.warned
    mount = _static_camera_mount(node)
    for _ in range(100):
        rclpy.spin_once(node, timeout_sec=0.05)
        if outputs.extrinsic.buffer.can_transform('base_link', 'camera_optical_frame', Time()):
            break
    for stamp in (2.0, 3.0):
        header.stamp.sec = int(stamp)
        outputs._publish_pose(header, _forward(stamp))
        outputs.tf.sendTransform = sent.append  # the broadcaster exists from the first pose
    assert [(o.header.frame_id, o.child_frame_id) for o in odometry] == [('odom', 'base_link')] * 2
    pose = odometry[-1].pose.pose
    assert (pose.position.x, pose.position.y, pose.position.z) == pytest.approx((3.0, 0, 0))
    assert pose.orientation.w == pytest.approx(1.0)
    assert odometry[-1].pose.covariance[0] == pytest.approx(9e-4)  # base x: optical z
    assert odometry[-1].twist.twist.linear.x == pytest.approx(1.0)
    assert [t.child_frame_id for t in sent] == ['base_link']  # the second pose's
    with pytest.raises(ValueError, match='frames.base'):
        options_from_values({**DEFAULTS, 'frames.base': 'odom', 'frames.odom': 'odom'})
    outputs.destroy()
    del mount
