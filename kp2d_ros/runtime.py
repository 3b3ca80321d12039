"""What the kp2d node does, shared by the plain node and the lifecycle (managed) node.

Images arrive on the executor's thread and go into a newest-frame slot; a worker thread
decodes (cv_bridge), pairs the frame with its CameraInfo (message_filters), runs the frame
pipeline and publishes. Every frame is accounted for on /diagnostics: processed, or dropped
with a reason ('superseded', 'invalid_stamp', 'stamp_in_future', 'duplicate_stamp',
'ImageError', 'ValueError', 'out_of_memory', 'internal_error').
"""

from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import message_filters
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from kp2d_core.inference.extractor import KeypointExtractor
from kp2d_core.vo.frame_pipeline import FramePipeline
from kp2d_ros.camera_info import CameraInfoPairing, camera_for_image
from kp2d_ros.frame_health import FrameStats, health
from kp2d_ros.frame_worker import LatestSlotWorker
from kp2d_ros.image_conversion import (
    ImageError,
    compressed_msg_to_array,
    image_msg_to_array,
    quote,
)
from kp2d_ros.parameter_declaration import declare_parameters, warn_unknown_overrides
from kp2d_ros.parameters import PARAMETERS, NodeOptions, model_weights, options_from_values
from kp2d_ros.process_memory import peak_rss_mib, rss_mib, trim
from kp2d_ros.publishers import Outputs
from kp2d_ros.refusal_log import RefusalLog
from kp2d_ros.stamps import NANOSECONDS, StampPolicy, stamp_ns

RELIABILITY = {
    'best_effort': ReliabilityPolicy.BEST_EFFORT,
    'reliable': ReliabilityPolicy.RELIABLE,
}


class Kp2dRuntime:
    """Parameters, pipeline, subscriptions, worker and publishers of one kp2d node."""

    def __init__(self, node: Any, lifecycle: bool = False) -> None:
        self.node, self.lifecycle = node, lifecycle
        self.log = node.get_logger()
        self.pipeline: FramePipeline | None = None
        self.outputs: Outputs | None = None
        self.worker: LatestSlotWorker | None = None
        self.subscriptions: list[Any] = []
        self.timer = None
        self.cameras = CameraInfoPairing()
        self.stamps = StampPolicy()
        self.stats = FrameStats()
        self.refusals = RefusalLog(self.log)
        self.idle_reported = False
        declare_parameters(node)  # raises ValueError with one line for a bad value
        warn_unknown_overrides(node)
        self.options: NodeOptions = options_from_values(self._values())
        self.stamps.max_future_s = self.options.max_future_stamp_s
        self.diagnostics = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._apply)

    # ---------------------------------------------------------------- parameters
    def _values(self) -> dict[str, Any]:
        return {p.name: self.node.get_parameter(p.name).value for p in PARAMETERS}

    def _validate(self, params: list[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        values = self._values()
        values.update({p.name: p.value for p in params if p.name in values})
        try:
            options_from_values(values)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Any]) -> None:
        self.options = options_from_values(self._values())
        self.stamps.max_future_s = self.options.max_future_stamp_s
        if self.pipeline is not None:
            self.pipeline.configure(self.options.pipeline)
        if self.outputs is not None:
            self.outputs.options = self.options

    # ---------------------------------------------------------------- life cycle
    def configure(self) -> None:
        """Load the model (the slow part), create the publishers and the worker."""
        weights = model_weights(self._values())
        self.log.info(f'loading {weights} on {self.options.device}')
        self.pipeline = FramePipeline.from_config(
            self.options.pipeline, weights, self.options.device
        )
        self.outputs = Outputs(self.node, self.options, self.lifecycle)
        self.stats = FrameStats(float(self.options_value('diagnostics.window_s')))
        self.worker = LatestSlotWorker(self._process)
        self.timer = self.node.create_timer(self.options.diagnostics_period_s, self._report)
        self.log.info(f'kp2d ready: {running(self.pipeline.extractor)}; {self.outputs.describe()}')
        if self.pipeline.recovery is not None:
            self.log.info(f'where Lucas-Kanade fails: {running(self.pipeline.recovery)}')

    def options_value(self, name: str) -> Any:
        return self.node.get_parameter(name).value

    def activate(self) -> None:
        """Subscribe to the camera: images (raw bytes, see below) and CameraInfo."""
        qos = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            reliability=RELIABILITY[self.options.image_reliability],
        )
        # Raw (serialized) delivery: the executor only stores bytes; the worker deserializes
        # the frames it actually processes, so frames it skips cost almost nothing.
        if self.options.image_transport == 'compressed':
            self.image_type, topic = CompressedImage, 'image/compressed'
        else:
            self.image_type, topic = Image, 'image'
        image = self.node.create_subscription(
            self.image_type, topic, self._on_image, qos, raw=True
        )
        info = message_filters.Subscriber(
            self.node, CameraInfo, 'camera_info', qos_profile=qos_profile_sensor_data
        )
        info.registerCallback(self._on_camera_info)
        self.subscriptions = [image, info.sub]

    def deactivate(self) -> None:
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.subscriptions = []

    def cleanup(self) -> None:
        """Stop the worker and release the publishers, the timer and the model."""
        self.deactivate()
        if self.worker is not None:
            self.worker.stop()
        if self.timer is not None:
            self.node.destroy_timer(self.timer)
        if self.outputs is not None:
            self.outputs.destroy()
        self.worker = self.timer = self.outputs = self.pipeline = None

    # ---------------------------------------------------------------- executor thread
    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.cameras.add(msg)
        except ValueError as exc:
            self.stats.note('camera_info_rejected')
            self.refusals.refuse('CameraInfo refused', str(exc))
            return
        self.stats.note('camera_info_accepted')

    def _on_image(self, msg: Any) -> None:
        self.stats.arrived(time.monotonic())
        if self.worker is not None and self.worker.submit((msg, time.perf_counter())):
            self.stats.drop('superseded')

    # ---------------------------------------------------------------- worker thread
    def _process(self, item: tuple[bytes, float]) -> None:
        data, received = item
        try:
            msg = deserialize_message(data, self.image_type)
        except Exception as exc:  # noqa: BLE001 - a malformed payload is a bad frame
            return self._drop('ImageError', f'cannot deserialize the image message: {exc}')
        stamp = msg.header.stamp
        verdict = self.stamps.check(stamp.sec, stamp.nanosec, self._now_ns())
        if verdict.action == 'drop':
            detail = f': {verdict.detail}' if verdict.detail else ''
            return self._drop(verdict.reason, f'stamp {stamp.sec}.{stamp.nanosec:09d}{detail}')
        if verdict.action == 'reset':
            self.log.warning(f'time jumped back to {stamp.sec}.{stamp.nanosec:09d}: tracker reset')
            self.pipeline.reset()
            self.outputs.reset()
        image = self._decode(msg)
        if image is not None:
            self._run(msg, image, received)

    def _run(self, msg: Any, image: Any, received: float) -> None:
        frame_ns = stamp_ns(msg.header.stamp)
        try:
            max_age = int(self.options.camera_info_max_age_s * NANOSECONDS)
            camera = self._camera(self.cameras.lookup(frame_ns, max_age), image.shape[:2])
            frame = self.pipeline.process(image, frame_ns, camera)
            self.outputs.publish(msg.header, image, frame)
        except ValueError as exc:
            return self._drop('ValueError', f'frame {image.shape}: {exc}')
        except (MemoryError, RuntimeError) as exc:  # allocator failures must not end the node
            if not rclpy.ok():  # shutting down (Ctrl-C): the publishers are gone, say nothing
                return None
            reason = 'out_of_memory' if _out_of_memory(exc) else 'internal_error'
            return self._drop(
                reason, f'frame {image.shape} failed: {type(exc).__name__}: {str(exc)[:200]}'
            )
        except Exception as exc:  # noqa: BLE001 - a bug must not take the robot's node down
            return self._drop('internal_error', f'frame failed: {type(exc).__name__}: {exc}')
        latency = (self._now_ns() - frame_ns) / NANOSECONDS
        self.stats.done(
            time.monotonic(), time.perf_counter() - received, latency, frame.network_ran
        )
        return None

    def _decode(self, msg: Any) -> Any:
        try:
            if isinstance(msg, CompressedImage):
                budget = 4 * self.options.pipeline.extractor.max_input_pixels
                return compressed_msg_to_array(msg, budget)
            return image_msg_to_array(msg)
        except ImageError as exc:
            encoding = msg.format if isinstance(msg, CompressedImage) else msg.encoding
            self._drop('ImageError', f'bad image ({quote(encoding)}): {exc}')
        except MemoryError as exc:
            self._drop('out_of_memory', f'decoding the image ran out of memory: {exc}')
        return None

    def _camera(self, camera: Any, image_hw: tuple[int, int]) -> Any:
        """The paired CameraInfo fitted to the frame's size, or None (refused, counted)."""
        camera, refusal = camera_for_image(camera, image_hw, self.options.camera_info_scale)
        if refusal:
            self.stats.note('camera_info_size_mismatch')
            self.refusals.refuse('CameraInfo not used for a frame', refusal)
        return camera

    def _now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    # ---------------------------------------------------------------- reporting
    def _drop(self, reason: str, text: str) -> None:
        self.stats.drop(reason)
        self.refusals.refuse(f'frame dropped ({reason})', text)

    def _report(self) -> None:
        trim()  # freed frame buffers go back to the system (docs/memory.md)
        now = time.monotonic()
        figures = self.stats.window(now)
        level, message = health(figures, self.options.health)
        status = DiagnosticStatus(name='kp2d: frames', level=bytes([level]), message=message)
        status.hardware_id = str(self.pipeline.extractor.device) if self.pipeline else ''
        summary = self.stats.summary(now)
        summary['rss_mib'] = f'{rss_mib():.0f}'
        summary['peak_rss_mib'] = f'{peak_rss_mib():.0f}'
        status.values = [KeyValue(key=k, value=v) for k, v in summary.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self.diagnostics.publish(array)
        self._status_line(figures, message, summary)

    def _status_line(self, figures: dict[str, float], message: str, summary: dict) -> None:
        """INFO while frames come in; one line when they stop, then quiet until they resume."""
        if figures['input_hz'] == 0:
            if not self.idle_reported:
                self.log.info(f'{message}: waiting for images on {self._image_topic()}')
                self.idle_reported = True
            return
        self.idle_reported = False
        self.log.info(f'{message}; ' + ', '.join(f'{k} {v}' for k, v in summary.items()))

    def _image_topic(self) -> str:
        suffix = '/compressed' if self.options.image_transport == 'compressed' else ''
        return self.node.resolve_topic_name('image') + suffix


def running(extractor: KeypointExtractor) -> str:
    """What runs, as the start-up line says it: the backend, the ONNX file it runs (which
    was checked against the weights on this CPU) or the weights themselves."""
    backend, weights = extractor.backend, extractor.weights
    where = f'{backend.name}:{backend.precision} on {extractor.device}'
    path = getattr(backend, 'path', None)
    if path is not None:
        return f'{where}, running {path} (checked against {weights})'
    return f'{where}, running {weights}'


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or 'alloc' in text or 'memory' in text
