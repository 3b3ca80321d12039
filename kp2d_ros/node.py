"""ROS 2 node: camera images in; keypoints, homographies, odometry and a debug image out.

All algorithms live in kp2d_core; this file wires parameters, QoS, topics and bookkeeping.
Bad input (encodings, sizes, NaN, stamps going backwards) is logged (throttled), counted on
/diagnostics and dropped; the node keeps running.
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from kp2d_core.checkpoint import (
    CheckpointError,
    default_weights_path,
    load_model,
    resolve_device,
)
from kp2d_core.frontend import KeypointExtractor
from kp2d_core.pipeline import FramePipeline
from kp2d_core.tracking import TrackResult
from kp2d_core.viz import draw_flow, draw_keypoints
from kp2d_ros.bookkeeping import CameraInfoCache, FrameStats
from kp2d_ros.conversions import ImageError, array_to_image_fields, image_msg_to_array
from kp2d_ros.messages import (
    features_to_cloud,
    fill_odometry,
    homography_array,
    stamp_seconds,
)
from kp2d_ros.params import PARAMETERS, options_from_values

THROTTLE_S = 5.0
# Sensor-data QoS with depth 1: inference always starts on the newest frame.
IMAGE_QOS = QoSProfile(
    depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
)


class KP2DNode(Node):
    """See the module docstring and the README for topics and parameters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('kp2d', **kwargs)
        for param in PARAMETERS:
            descriptor = ParameterDescriptor(
                description=param.description, read_only=param.read_only
            )
            self.declare_parameter(param.name, param.default, descriptor)
        self.options = options_from_values(self._values())
        self.add_on_set_parameters_callback(self._validate)
        self.add_post_set_parameters_callback(self._apply)
        extractor = KeypointExtractor(self._load_model(), self.options.pipeline.extractor)
        self.pipeline = FramePipeline(extractor, self.options.pipeline.tracker)
        self.cameras = CameraInfoCache()
        self.stats = FrameStats()
        self.last_stamp: float | None = None
        self.tf_broadcaster = None
        self._create_topics()
        self.create_timer(self.options.diagnostics_period_s, self._report)
        self.get_logger().info(f'kp2d ready on {self.pipeline.extractor.device}')

    # ---------------------------------------------------------------- set-up
    def _values(self) -> dict[str, Any]:
        return {p.name: self.get_parameter(p.name).value for p in PARAMETERS}

    def _load_model(self) -> Any:
        path = self.get_parameter('model.weights').value or default_weights_path()
        device = resolve_device(self.get_parameter('model.device').value)
        self.get_logger().info(f'loading {path} on {device}')
        return load_model(path, device)

    def _create_topics(self) -> None:
        overrides = QoSOverridingOptions.with_default_policies()
        self.create_subscription(
            Image,
            'image',
            self._on_image,
            IMAGE_QOS,
            qos_overriding_options=overrides,
        )
        self.create_subscription(
            CameraInfo, 'camera_info', self._on_camera_info, qos_profile_sensor_data
        )
        self.pub_keypoints = self.create_publisher(PointCloud2, '~/keypoints', 10)
        self.pub_homography = self.create_publisher(Float64MultiArray, '~/homography', 10)
        self.pub_odometry = self.create_publisher(Odometry, '~/odometry', 10)
        self.pub_debug = self.create_publisher(Image, '~/debug_image', 1)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        if self.options.publish['tf']:
            self._enable_tf()

    def _enable_tf(self) -> None:
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            self.get_logger().warning('publish.tf is set but tf2_ros is not installed: no TF')
            return
        self.tf_broadcaster = TransformBroadcaster(self)

    def _validate(self, params: list[Any]) -> SetParametersResult:
        values = self._values()
        values.update({p.name: p.value for p in params})
        try:
            options_from_values(values)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Any]) -> None:
        self.options = options_from_values(self._values())
        self.pipeline.configure(self.options.pipeline)
        if self.options.publish['tf'] and self.tf_broadcaster is None:
            self._enable_tf()

    # ---------------------------------------------------------------- callbacks
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.cameras.add(stamp_seconds(msg.header.stamp), msg.k)
        except ValueError as exc:
            self._warn(f'ignoring CameraInfo: {exc}')

    def _on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        stamp = stamp_seconds(msg.header.stamp)
        if self.last_stamp is not None and stamp <= self.last_stamp:
            self._drop(
                'stamp_not_increasing',
                f'stamp {stamp:.6f} <= previous {self.last_stamp:.6f}; frame dropped',
            )
            return
        try:
            image = image_msg_to_array(msg)
            features = self.pipeline.extract(image)
        except (ImageError, ValueError) as exc:
            self._drop(
                type(exc).__name__, f'bad image ({msg.encoding} {msg.width}x{msg.height}): {exc}'
            )
            return
        self.last_stamp = stamp
        try:
            K = self.cameras.lookup(stamp, self.options.camera_info_max_age_s)
            result = self.pipeline.track(features, stamp, K).track
            self._publish(msg, image, features, result, stamp)
        except Exception as exc:  # noqa: BLE001 - a bug must not take the robot's node down
            self.stats.drop('internal_error')
            self.get_logger().error(
                f'frame failed: {type(exc).__name__}: {exc}', throttle_duration_sec=THROTTLE_S
            )
            return
        latency = self.get_clock().now().nanoseconds * 1e-9 - stamp
        self.stats.done(time.perf_counter() - start, latency)

    # ---------------------------------------------------------------- output
    def _publish(
        self, msg: Image, image: np.ndarray, features: Any, result: TrackResult, stamp: float
    ) -> None:
        publish = self.options.publish
        if publish['keypoints']:
            kpts, scores, desc = features.numpy()
            self.pub_keypoints.publish(
                features_to_cloud(PointCloud2, PointField, msg.header, kpts, scores, desc)
            )
        if publish['homography'] and result.H_key_to_cur is not None:
            self.pub_homography.publish(
                homography_array(
                    Float64MultiArray,
                    MultiArrayDimension,
                    result.H_key_to_cur,
                    result.num_inliers,
                    result.num_matches,
                    stamp,
                    result.key_stamp,
                )
            )
        elif result.reason not in (None, 'first_frame'):
            self._warn(f'no homography: {result.reason} ({result.num_matches} matches)')
        if result.T_world_cur is not None:
            self._publish_pose(msg, result.T_world_cur)
        if publish['debug_image'] and self.pub_debug.get_subscription_count() > 0:
            self.pub_debug.publish(self._debug_image(msg, image, features, result))

    def _publish_pose(self, msg: Image, T_world_cam: np.ndarray) -> None:
        frame = self.options.odom_frame
        odom = fill_odometry(Odometry(), T_world_cam, frame, msg.header.frame_id, msg.header.stamp)
        if self.options.publish['odometry']:
            self.pub_odometry.publish(odom)
        if self.options.publish['tf'] and self.tf_broadcaster is not None:
            from geometry_msgs.msg import TransformStamped

            tf = TransformStamped(header=odom.header, child_frame_id=odom.child_frame_id)
            position, orientation = odom.pose.pose.position, odom.pose.pose.orientation
            tf.transform.translation.x, tf.transform.translation.y = position.x, position.y
            tf.transform.translation.z = position.z
            tf.transform.rotation = orientation
            self.tf_broadcaster.sendTransform(tf)

    def _debug_image(
        self, msg: Image, image: np.ndarray, features: Any, result: TrackResult
    ) -> Image:
        canvas = draw_keypoints(image, features.keypoints.cpu().numpy())
        canvas = draw_flow(canvas, result.pts_key, result.pts_cur, result.inliers)
        return Image(header=msg.header, **array_to_image_fields(canvas))

    # ---------------------------------------------------------------- bookkeeping
    def _drop(self, reason: str, text: str) -> None:
        self.stats.drop(reason)
        self._warn(text)

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=THROTTLE_S)

    def _report(self) -> None:
        summary = self.stats.summary()
        status = DiagnosticStatus(
            name='kp2d: frames', hardware_id=str(self.pipeline.extractor.device)
        )
        status.level = DiagnosticStatus.OK if self.stats.processed else DiagnosticStatus.WARN
        status.message = f'{summary["processed"]} processed, {summary["dropped"]} dropped'
        status.values = [KeyValue(key=k, value=v) for k, v in summary.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(array)
        self.get_logger().info(', '.join(f'{k} {v}' for k, v in summary.items()))


def main(args: list[str] | None = None) -> None:
    """Entry point of ``ros2 run kp2d_ros kp2d_node``."""
    rclpy.init(args=args)
    node = None
    try:
        node = KP2DNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        # Start-up configuration errors (missing or corrupt weights, bad parameters).
        rclpy.logging.get_logger('kp2d').fatal(f'cannot start: {exc}')
        raise SystemExit(1) from exc
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
