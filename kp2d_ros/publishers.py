"""The node's publishers and what goes on them for one processed frame (see messages.py)."""

from __future__ import annotations

from typing import Any, NamedTuple

from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
import numpy as np
from sensor_msgs.msg import Image, PointCloud, PointCloud2
from tf2_ros import TransformBroadcaster

from kp2d_core.geometry.poses import twist
from kp2d_core.geometry.robot_frames import base_covariance, base_pose
from kp2d_core.viz import TrackTrails, draw_flow
from kp2d_core.vo.frame_pipeline import FrameResult
from kp2d_msgs.msg import FeatureTracks, HomographyStamped, Keypoints
from kp2d_ros.camera_extrinsic import CameraExtrinsic
from kp2d_ros.image_conversion import array_to_image_msg
from kp2d_ros.output_messages import (
    features_to_cloud,
    fill_odometry,
    homography_msg,
    keypoints_msg,
    tracks_msg,
    vins_feature_cloud,
)
from kp2d_ros.parameters import NodeOptions
from kp2d_ros.stamps import stamp_ns


class PublishedPose(NamedTuple):
    """What ~/odometry carries for one frame."""

    T: np.ndarray  # (4, 4) pose of frames[1] in frames[0]
    covariance: np.ndarray | None  # (6, 6), accumulated along the trajectory
    own: np.ndarray | None  # (6, 6), this frame's measurement against its keyframe
    frames: tuple[str, str]  # (parent, child)


class Outputs:
    """Creates the output publishers of ``node`` and publishes one frame's results."""

    def __init__(self, node: Any, options: NodeOptions, lifecycle: bool) -> None:
        self.node, self.options = node, options
        create = node.create_lifecycle_publisher if lifecycle else node.create_publisher
        self.keypoints = create(PointCloud2, '~/keypoints', 10)
        self.features = create(Keypoints, '~/features', 10)
        self.tracks = create(FeatureTracks, '~/tracks', 10)
        self.feature_cloud = create(PointCloud, '~/feature_cloud', 10)
        self.homography = create(HomographyStamped, '~/homography', 10)
        self.odometry = create(Odometry, '~/odometry', 10)
        self.debug = create(Image, '~/debug_image', 1)
        self.tf: TransformBroadcaster | None = None  # created when publish.tf is first on
        self.extrinsic: CameraExtrinsic | None = None  # created when frames.base is first set
        self.trails = TrackTrails()
        self.previous_pose: tuple[int, np.ndarray, np.ndarray | None] | None = None
        self.warned: set[str] = set()

    def describe(self) -> str:
        return '~/homography as kp2d_msgs/HomographyStamped, ~/features, ~/tracks'

    def reset(self) -> None:
        """Forget the previous pose and the trails (after a tracker reset)."""
        self.previous_pose = None
        self.trails.reset()

    def publish(self, header: Any, image: np.ndarray, frame: FrameResult) -> None:
        publish, track = self.options.publish, frame.track
        self._publish_features(header, frame)
        self._publish_tracks(header, frame)
        if publish['homography'] and track.H_key_to_cur is not None:
            self.homography.publish(homography_msg(HomographyStamped, Time, header, track))
        if track.T_world_cur is not None:
            self._publish_pose(header, frame)
        if publish['debug_image'] and self.debug.get_subscription_count() > 0:
            canvas = self.trails.draw(image, frame.tracks.ages, frame.tracks.ids)
            canvas = draw_flow(canvas, track.pts_key, track.pts_cur, track.inliers, 100)
            self.debug.publish(array_to_image_msg(canvas, header))

    def _publish_features(self, header: Any, frame: FrameResult) -> None:
        """The keypoint messages are large (~1 KiB per keypoint): built only when listened to."""
        cloud = self.options.publish['keypoints'] and self.keypoints.get_subscription_count() > 0
        typed = self.features.get_subscription_count() > 0
        if cloud or typed:
            kpts, scores, desc = frame.features.numpy()
            if cloud:
                self.keypoints.publish(features_to_cloud(header, kpts, scores, desc))
            if typed:
                self.features.publish(keypoints_msg(Keypoints, header, kpts, scores, desc))

    def _publish_tracks(self, header: Any, frame: FrameResult) -> None:
        tracks = frame.tracks
        self.trails.update(tracks.ids, tracks.xy)
        if self.options.publish['tracks']:
            self.tracks.publish(tracks_msg(FeatureTracks, header, tracks))
        if not self.options.publish['vins_features']:
            return
        if tracks.normalized is None:
            self._warn_once('vins', 'publish.vins_features needs CameraInfo: no ~/feature_cloud')
            return
        self.feature_cloud.publish(vins_feature_cloud(header, tracks))

    def _publish_pose(self, header: Any, frame: FrameResult) -> None:
        pose = self._robot_pose(header.frame_id, frame)
        if pose is None:
            return
        T, covariance, own, frames = pose
        stamp = stamp_ns(header.stamp)
        velocity = twist_covariance = None
        if self.previous_pose is not None and stamp > self.previous_pose[0]:
            dt = (stamp - self.previous_pose[0]) * 1e-9
            velocity = twist(self.previous_pose[1], T, dt)
            before = self.previous_pose[2]
            if own is not None and before is not None:  # the two frames' own measurements,
                twist_covariance = (own + before) / dt**2  # not the trajectory's accumulation
        self.previous_pose = (stamp, T, own)
        odom = fill_odometry(
            Odometry(), T, frames, header.stamp, covariance, velocity, twist_covariance
        )
        if self.options.publish['odometry']:
            self.odometry.publish(odom)
        if self.options.publish['tf']:
            self._publish_tf(header, odom)

    def _robot_pose(self, camera_frame: str, frame: FrameResult) -> PublishedPose | None:
        """The camera's pose, or frames.base's when set; None while the camera's extrinsic is
        unknown."""
        track = frame.track
        base = self.options.base_frame
        covariances = (track.covariance, track.relative_covariance)
        if not base:
            return PublishedPose(track.T_world_cur, *covariances, self.options.frames)
        if self.extrinsic is None:
            self.extrinsic = CameraExtrinsic(self.node)
        T_base_cam = self.extrinsic.lookup(base, camera_frame)
        if isinstance(T_base_cam, str):
            self._warn_once('extrinsic', f'no ~/odometry for frames.base yet: {T_base_cam}')
            return None
        try:
            T = base_pose(track.T_world_cur, T_base_cam)
        except ValueError as exc:
            self._warn_once('extrinsic', f'no ~/odometry for frames.base: {exc}')
            return None
        rotated = [None if c is None else base_covariance(c, T_base_cam) for c in covariances]
        return PublishedPose(T, *rotated, (self.options.frames[0], base))

    def _publish_tf(self, header: Any, odom: Any) -> None:
        if odom.child_frame_id == header.frame_id:  # the camera frame has a parent already
            self._warn_once(
                'frame',
                f'frames.camera equals the image frame {header.frame_id!r}: no TF is sent '
                'so that the frame does not get a second parent',
            )
            return
        if self.tf is None:
            self.tf = TransformBroadcaster(self.node)
        tf = TransformStamped(header=odom.header, child_frame_id=odom.child_frame_id)
        position, rotation = odom.pose.pose.position, odom.pose.pose.orientation
        tf.transform.translation.x, tf.transform.translation.y = position.x, position.y
        tf.transform.translation.z = position.z
        tf.transform.rotation = rotation
        self.tf.sendTransform(tf)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.node.get_logger().warning(text)

    def destroy(self) -> None:
        publishers = (
            self.keypoints,
            self.features,
            self.tracks,
            self.feature_cloud,
            self.homography,
            self.odometry,
            self.debug,
        )
        for publisher in publishers:
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        if self.tf is not None:
            self.node.destroy_publisher(self.tf.pub_tf)
            self.tf = None
        if self.extrinsic is not None:
            self.extrinsic.destroy()
            self.extrinsic = None
