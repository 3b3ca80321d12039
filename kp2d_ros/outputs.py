"""The node's publishers and what goes on them for one processed frame (see messages.py)."""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
import numpy as np
from sensor_msgs.msg import Image, JointState, PointCloud2, PointField

from kp2d_core.motion import twist
from kp2d_core.pipeline import FrameResult
from kp2d_core.viz import draw_flow, draw_keypoints
from kp2d_ros.conversions import array_to_image_fields
from kp2d_ros.messages import (
    features_to_cloud,
    fill_odometry,
    homography_joint_state,
    homography_msg,
    keypoints_msg,
    stamp_seconds,
)
from kp2d_ros.params import NodeOptions

try:  # the typed messages, where the kp2d_msgs package is built (colcon, tools/build_msgs.py)
    from builtin_interfaces.msg import Time

    from kp2d_msgs.msg import HomographyStamped, Keypoints
except ImportError:
    HomographyStamped = Keypoints = None


class Outputs:
    """Creates the output publishers of ``node`` and publishes one frame's results."""

    def __init__(self, node: Any, options: NodeOptions, lifecycle: bool) -> None:
        self.node, self.options = node, options
        create = node.create_lifecycle_publisher if lifecycle else node.create_publisher
        self.typed = HomographyStamped is not None
        self.keypoints = create(PointCloud2, '~/keypoints', 10)
        self.features = create(Keypoints, '~/features', 10) if self.typed else None
        homography_type = HomographyStamped if self.typed else JointState
        self.homography = create(homography_type, '~/homography', 10)
        self.odometry = create(Odometry, '~/odometry', 10)
        self.debug = create(Image, '~/debug_image', 1)
        self.tf = self._tf_broadcaster() if options.publish['tf'] else None
        self.previous_pose: tuple[float, np.ndarray] | None = None
        self.warned_frame = False

    def _tf_broadcaster(self) -> Any:
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            self.node.get_logger().warning('publish.tf is set but tf2_ros is not installed')
            return None
        return TransformBroadcaster(self.node)

    def describe(self) -> str:
        kind = 'kp2d_msgs/HomographyStamped' if self.typed else 'sensor_msgs/JointState'
        return f'~/homography as {kind}' + (', ~/features' if self.typed else '')

    def reset(self) -> None:
        """Forget the previous pose (after a tracker reset), so no twist spans the jump."""
        self.previous_pose = None

    def publish(self, header: Any, image: np.ndarray, frame: FrameResult) -> None:
        publish, track = self.options.publish, frame.track
        # The keypoint messages are large (about 1 KiB per keypoint): built only when listened to.
        cloud = publish['keypoints'] and self.keypoints.get_subscription_count() > 0
        typed = self.features is not None and self.features.get_subscription_count() > 0
        if cloud or typed:
            kpts, scores, desc = frame.features.numpy()
            if cloud:
                self.keypoints.publish(
                    features_to_cloud(PointCloud2, PointField, header, kpts, scores, desc)
                )
            if typed:
                self.features.publish(keypoints_msg(Keypoints, header, kpts, scores, desc))
        if publish['homography'] and track.H_key_to_cur is not None:
            if self.typed:
                self.homography.publish(homography_msg(HomographyStamped, Time, header, track))
            else:
                self.homography.publish(homography_joint_state(JointState, header, track))
        if track.T_world_cur is not None:
            self._publish_pose(header, frame)
        if publish['debug_image'] and self.debug.get_subscription_count() > 0:
            canvas = draw_keypoints(image, frame.features.keypoints.cpu().numpy())
            canvas = draw_flow(canvas, track.pts_key, track.pts_cur, track.inliers)
            self.debug.publish(Image(header=header, **array_to_image_fields(canvas)))

    def _publish_pose(self, header: Any, frame: FrameResult) -> None:
        T, stamp = frame.track.T_world_cur, stamp_seconds(header.stamp)
        velocity = None
        if self.previous_pose is not None and stamp > self.previous_pose[0]:
            velocity = twist(self.previous_pose[1], T, stamp - self.previous_pose[0])
        self.previous_pose = (stamp, T)
        odom = fill_odometry(
            Odometry(), T, self.options.frames, header.stamp, frame.track.covariance, velocity
        )
        if self.options.publish['odometry']:
            self.odometry.publish(odom)
        if self.tf is not None:
            self._publish_tf(header, odom)

    def _publish_tf(self, header: Any, odom: Any) -> None:
        if odom.child_frame_id == header.frame_id:  # the camera frame has a parent already
            if not self.warned_frame:
                self.node.get_logger().warning(
                    f'pose_frame equals the image frame {header.frame_id!r}: no TF is sent '
                    'so that the frame does not get a second parent'
                )
                self.warned_frame = True
            return
        tf = TransformStamped(header=odom.header, child_frame_id=odom.child_frame_id)
        position, rotation = odom.pose.pose.position, odom.pose.pose.orientation
        tf.transform.translation.x, tf.transform.translation.y = position.x, position.y
        tf.transform.translation.z = position.z
        tf.transform.rotation = rotation
        self.tf.sendTransform(tf)

    def destroy(self) -> None:
        for publisher in (self.keypoints, self.features, self.homography, self.odometry):
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        self.node.destroy_publisher(self.debug)
