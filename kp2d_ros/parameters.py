"""The node's parameters, in one place: the table of names, defaults, ranges and
descriptions, and the values checked and turned into :class:`NodeOptions` (the kp2d_core
pipeline configuration and the node-only settings). Their declaration on a node is
:mod:`kp2d_ros.parameter_declaration`; ROS 2 params files are read without ROS by
:mod:`kp2d_ros.params_file`.

Defaults of the pipeline come from the kp2d_core dataclasses (:class:`PipelineConfig`);
node-only settings are defined here. Each parameter has one ROS type (that of its default)
and, for numbers, a range that the node declares (``ros2 param describe`` shows it, and ROS
refuses values outside it); the rules between parameters (a resize within the pixel budget,
two different frame names, a known device) are checked in :func:`options_from_values`.
``config/kp2d.yaml`` is generated from the table (:mod:`kp2d_ros.parameter_docs`; a test
checks it) and the replay tool reads the same table, so node, file and replay cannot
disagree. Importing this module needs no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from pathlib import Path
import re
from typing import Any

from kp2d_core.config import (
    MAX_NETWORK_PIXELS,
    MAX_NMS_RADIUS,
    MIN_NETWORK_PIXELS,
    ExtractorConfig,
)
from kp2d_core.model.files import bundled_weights_path
from kp2d_core.vo.detection_policy import RECOVERY_MODELS, HybridConfig
from kp2d_core.vo.feature_tracks import TrackConfig
from kp2d_core.vo.frame_pipeline import PipelineConfig, recovery_weights
from kp2d_core.vo.keyframe_tracker import TrackerConfig
from kp2d_ros.frame_health import HealthThresholds

_EXTRACTOR = ExtractorConfig()
_TRACKER = TrackerConfig()
_TRACKS = TrackConfig()
_HYBRID = HybridConfig()
DEVICE = re.compile(r'^(auto|cpu|cuda(:\d{1,2})?)$')
MAX_RESIZE_SIDE = 8192


@dataclass(frozen=True)
class Param:
    """One parameter: its default fixes the ROS type; ``low``/``high`` bound numbers."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        return type_name(self.default)

    def describe_range(self) -> str:
        if self.choices:
            return ' | '.join(self.choices)
        if self.low is None:
            return ''
        return f'[{_number(self.low)}, {_number(self.high)}]'


def _number(value: float | None) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


PARAMETERS: tuple[Param, ...] = (
    Param(
        'model.variant',
        'default',
        "the bundled network: 'default' (the paper's) or 'light' (fast on CPUs)",
        True,
        choices=('default', 'light'),
    ),
    Param(
        'model.weights',
        '',
        'checkpoint path (overrides model.variant); empty = the bundled weights of model.variant',
        True,
    ),
    Param('model.device', 'auto', "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'", True),
    Param(
        'model.backend',
        _EXTRACTOR.backend,
        "'auto': the fastest that passed the accuracy gate",
        True,
        choices=('auto', 'torch', 'onnxruntime'),
    ),
    Param(
        'model.precision',
        _EXTRACTOR.precision,
        'network precision',
        True,
        choices=('auto', 'fp32', 'bf16', 'fp16', 'int8'),
    ),
    Param('detector.top_k', _EXTRACTOR.top_k, 'keep the k best keypoints', low=1, high=100_000),
    Param(
        'detector.score_threshold',
        _EXTRACTOR.score_threshold,
        'keep scores above this',
        low=0.0,
        high=0.999,
    ),
    Param(
        'detector.nms_radius',
        _EXTRACTOR.nms_radius,
        'NMS radius in px; 0 = off',
        low=0.0,
        high=MAX_NMS_RADIUS,
    ),
    Param(
        'detector.resize',
        [0, 0],
        'network input [height, width] (>= 24, within max_input_pixels); [0, 0] = native size',
    ),
    Param(
        'detector.max_input_pixels',
        _EXTRACTOR.max_input_pixels,
        'larger frames are shrunk to this many pixels (memory bound)',
        low=MIN_NETWORK_PIXELS,
        high=MAX_NETWORK_PIXELS,
    ),
    Param('matcher.ratio', 0.0, 'Lowe ratio gate; 0 = off', low=0.0, high=1.0),
    Param('matcher.max_distance', 0.0, 'descriptor distance gate; 0 = off', low=0.0, high=2.0),
    Param(
        'tracker.ransac_method',
        _TRACKER.ransac_method,
        'robust homography estimator',
        choices=('magsac', 'ransac', 'usac', 'lmeds'),
    ),
    Param(
        'tracker.ransac_threshold_px',
        _TRACKER.ransac_threshold_px,
        'inlier threshold, px',
        low=0.01,
        high=100.0,
    ),
    Param(
        'tracker.min_keyframe_inliers',
        _TRACKER.min_keyframe_inliers,
        'new keyframe when inliers drop below this',
        low=4,
        high=100_000,
    ),
    Param('tracker.align', _TRACKER.align, 'align matches photometrically (sub-pixel)'),
    Param(
        'tracker.align_corners',
        _TRACKER.align_corners,
        "with align: the keyframe's corners aligned into every frame as well, at most this "
        'many, refine its homography beside the matches; 0 = none',
        low=0,
        high=100_000,
    ),
    Param('tracker.subpixel', _TRACKER.subpixel, 'sub-pixel matches on KP2D descriptors'),
    Param(
        'tracker.mode',
        _HYBRID.mode,
        'every_frame: the network on every frame; hybrid: Lucas-Kanade carries the tracks and '
        'the network runs on keyframes, every detect_interval frames, when tracks run low or '
        'Lucas-Kanade fails',
        True,
        choices=('every_frame', 'hybrid'),
    ),
    Param(
        'tracker.detect_interval',
        _HYBRID.detect_interval,
        'hybrid: the network runs at least every this many frames',
        low=1,
        high=1000,
    ),
    Param(
        'tracker.min_tracks',
        _HYBRID.min_tracks,
        'hybrid: the network runs when fewer tracks are alive',
        low=0,
        high=100_000,
    ),
    Param(
        'tracker.reid_window_s',
        _HYBRID.reid_window_s,
        'hybrid: lost tracks are remembered this long for re-identification (s); 0 = off',
        low=0.0,
        high=3600.0,
    ),
    Param(
        'tracker.reid_max_lost',
        _HYBRID.reid_max_lost,
        'hybrid: lost tracks remembered at most (the newest); each costs every detection frame',
        low=0,
        high=100_000,
    ),
    Param(
        'tracker.recovery_scale',
        _HYBRID.recovery_scale,
        "hybrid: the network's input size, relative to the usual, on frames where "
        'Lucas-Kanade failed (blur, fast motion, dropped frames); 1 = the usual size',
        low=0.1,
        high=1.0,
    ),
    Param(
        'tracker.recovery_model',
        _HYBRID.recovery_model,
        'hybrid: the network on frames where Lucas-Kanade failed: same (the tracking one), '
        'light (the bundled light model; with the bundled default model only, whose '
        'descriptors it matches), auto (light beside the bundled default model, else same)',
        True,
        choices=RECOVERY_MODELS,
    ),
    Param(
        'tracker.keyframe_inlier_ratio',
        _HYBRID.keyframe_inlier_ratio,
        "hybrid: a new keyframe once its inliers fall below this share of its first frame's "
        f'(every frame, and hybrid in a scene with depth: {_TRACKER.keyframe_inlier_ratio})',
        low=0.0,
        high=1.0,
    ),
    Param(
        'tracker.keyframe_shift_px',
        _HYBRID.keyframe_shift_px,
        'hybrid, in a scene without depth: a new keyframe once its inliers moved further than '
        'this from it (median, px)',
        low=0.001,
        high=10_000.0,
    ),
    Param(
        'tracker.max_tracks',
        _HYBRID.max_tracks,
        'hybrid: live feature tracks at most (every frame: tracks.max_count)',
        low=1,
        high=100_000,
    ),
    Param(
        'tracker.min_distance_px',
        _HYBRID.min_distance_px,
        'hybrid: no two tracks closer than this (px; every frame: tracks.min_distance_px)',
        low=0.0,
        high=1000.0,
    ),
    Param(
        'tracks.max_count',
        _TRACKS.max_tracks,
        'every frame: live feature tracks at most; 0 = no tracking (hybrid: tracker.max_tracks)',
        low=0,
        high=100_000,
    ),
    Param(
        'tracks.min_distance_px',
        _TRACKS.min_distance_px,
        'every frame: no two tracks closer than this (px); 0 = off (hybrid: '
        'tracker.min_distance_px)',
        low=0.0,
        high=1000.0,
    ),
    Param(
        'tracks.max_descriptor_distance',
        _TRACKS.max_descriptor_distance,
        'descriptor gate of a track continuation',
        low=0.01,
        high=2.0,
    ),
    Param(
        'tracks.max_epipolar_px',
        _TRACKS.max_epipolar_px,
        'geometric check of a track continuation (px)',
        low=0.1,
        high=100.0,
    ),
    Param(
        'tracks.min_verified',
        _TRACKS.min_verified,
        'fewer geometrically verified matches: the motion is chance, every track ends',
        low=4,
        high=100000,
    ),
    Param('publish.keypoints', True, 'publish ~/keypoints'),
    Param('publish.homography', True, 'publish ~/homography'),
    Param('publish.odometry', True, 'publish ~/odometry (needs camera_info)'),
    Param('publish.tracks', True, 'publish ~/tracks (kp2d_msgs/FeatureTracks)'),
    Param(
        'publish.vins_features',
        False,
        'publish ~/feature_cloud, VINS-Fusion layout (needs camera_info)',
    ),
    Param('publish.tf', False, 'broadcast frames.odom -> frames.camera (or frames.base) on /tf'),
    Param('publish.debug_image', True, 'publish ~/debug_image when it has subscribers'),
    Param('frames.odom', 'kp2d_odom', 'frame_id of ~/odometry and parent frame of the TF'),
    Param(
        'frames.camera',
        'kp2d_camera_optical_frame',
        'child frame of ~/odometry and of the TF: the camera (optical axes; a new frame)',
    ),
    Param(
        'frames.base',
        '',
        'when set (e.g. base_link): ~/odometry and the TF give the pose of this frame in '
        'frames.odom (REP 105) through the camera extrinsic read from /tf, not the camera',
        read_only=True,
    ),
    Param(
        'camera_info_max_age_s',
        1.0,
        'use a CameraInfo at most this far from the image stamp',
        low=0.001,
        high=3600.0,
    ),
    Param(
        'camera_info_scale',
        False,
        'scale a CameraInfo of another size but the same aspect ratio to the frame (binning, '
        'a resized stream); off: such a CameraInfo is not used',
    ),
    Param(
        'image_transport',
        'raw',
        'sensor_msgs/Image or CompressedImage input',
        True,
        choices=('raw', 'compressed'),
    ),
    Param(
        'image_reliability',
        'best_effort',
        'image QoS: best_effort (cameras) or reliable (bags)',
        True,
        choices=('best_effort', 'reliable'),
    ),
    Param(
        'max_future_stamp_s',
        10.0,
        'drop frames stamped further ahead of the clock (s)',
        low=0.001,
        high=1e6,
    ),
    Param(
        'diagnostics_period_s',
        5.0,
        'period of /diagnostics and the status line (s)',
        True,
        low=0.1,
        high=3600.0,
    ),
    Param(
        'diagnostics.window_s',
        10.0,
        'time window of the rates and latencies (s)',
        True,
        low=0.5,
        high=3600.0,
    ),
    Param(
        'diagnostics.warn_output_ratio',
        0.5,
        'WARN below this share of frames processed',
        low=0.0,
        high=1.0,
    ),
    Param(
        'diagnostics.warn_latency_s',
        1.0,
        'WARN above this p95 latency (s)',
        low=0.001,
        high=3600.0,
    ),
    Param(
        'diagnostics.error_latency_s',
        5.0,
        'ERROR above this p95 latency (s)',
        low=0.001,
        high=3600.0,
    ),
)
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMETERS}
DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}
# Parameters every ROS 2 node has; never reported as unknown.
STANDARD = ('use_sim_time', 'start_type_description_service')


def type_name(value: Any) -> str:
    """The ROS parameter type of a Python value (bool, integer, double, string, ...)."""
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'double'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return 'integer array'
    return type(value).__name__


# ---------------------------------------------------------------- values -> options
def check_value(param: Param, value: Any) -> Any:
    """``value`` for ``param`` if its type and range are right.

    Raises:
        ValueError: one line naming the parameter, the expected type or range and the value.
    """
    if hasattr(value, 'tolist'):  # array.array / NumPy from a parameter message
        value = value.tolist()
    expected, got = param.type_name, type_name(value)
    if got != expected:
        hint = (
            ' (write it with a decimal point, e.g. 5.0)'
            if (expected, got)
            == (
                'double',
                'integer',
            )
            else ''
        )
        raise ValueError(f'{param.name} must be {expected}, got {got} {_short(value)}{hint}')
    if expected == 'double' and not math.isfinite(value):
        raise ValueError(f'{param.name} must be finite, got {value}')
    if param.low is not None and not param.low <= value <= param.high:
        raise ValueError(f'{param.name} must be in {param.describe_range()}, got {value}')
    if param.choices and value not in param.choices:
        raise ValueError(f'{param.name} must be one of {param.choices}, got {_short(value)}')
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + '...'


def unknown_names(names: Any) -> list[str]:
    """The names that are neither kp2d parameters nor standard ROS 2 node parameters."""
    return sorted(
        n for n in names if n not in DEFAULTS and n not in STANDARD and not n.startswith('qos_')
    )


@dataclass(frozen=True)
class NodeOptions:
    """Everything the node reads from its parameters, validated."""

    pipeline: PipelineConfig
    publish: dict[str, bool]
    frames: tuple[str, str]  # (frames.odom, frames.camera)
    base_frame: str  # '' for the camera's own odometry
    camera_info_max_age_s: float
    camera_info_scale: bool
    max_future_stamp_s: float
    diagnostics_period_s: float
    health: HealthThresholds
    image_transport: str
    image_reliability: str
    device: str


def model_weights(values: dict[str, Any]) -> Path:
    """The weights the node loads: ``model.weights``, or the bundled weights of
    ``model.variant``."""
    return Path(values['model.weights'] or bundled_weights_path(values['model.variant']))


def _check_recovery_model(values: dict[str, Any]) -> None:
    """The light model recovers beside the bundled default model only (its descriptors match
    that model's; :func:`~kp2d_core.vo.frame_pipeline.recovery_weights`)."""
    if values['tracker.mode'] != 'hybrid' or values['tracker.recovery_model'] != 'light':
        return
    try:
        recovery_weights('light', model_weights(values))
    except ValueError as exc:
        raise ValueError(f'tracker.recovery_model: {exc}') from exc


def options_from_values(values: dict[str, Any]) -> NodeOptions:
    """Validate parameter values (missing ones take their defaults) and build the options.

    Raises:
        ValueError: one line naming the offending parameter.
    """
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'unknown parameters {unknown}')
    values = {name: check_value(BY_NAME[name], v) for name, v in {**DEFAULTS, **values}.items()}
    device = values['model.device']
    if not DEVICE.match(device):
        raise ValueError(f"model.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    frames = (str(values['frames.odom']), str(values['frames.camera']))
    if not all(frames) or frames[0] == frames[1]:
        raise ValueError(f'frames.odom and frames.camera must be two different names: {frames}')
    base_frame = str(values['frames.base'])
    if base_frame == frames[0]:
        raise ValueError(f'frames.base must differ from frames.odom, got {base_frame!r} for both')
    try:
        pipeline = PipelineConfig(
            _extractor(values), _tracker(values), _tracks(values), _hybrid(values)
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f'invalid parameter: {exc}') from exc
    _check_recovery_model(values)
    publish = {k.split('.', 1)[1]: v for k, v in values.items() if k.startswith('publish.')}
    health = HealthThresholds(
        values['diagnostics.warn_output_ratio'],
        values['diagnostics.warn_latency_s'],
        values['diagnostics.error_latency_s'],
    )
    return NodeOptions(
        pipeline,
        publish,
        frames,
        base_frame,
        values['camera_info_max_age_s'],
        values['camera_info_scale'],
        values['max_future_stamp_s'],
        values['diagnostics_period_s'],
        health,
        values['image_transport'],
        values['image_reliability'],
        device,
    )


def _extractor(values: dict[str, Any]) -> ExtractorConfig:
    resize = list(values['detector.resize'])
    budget = values['detector.max_input_pixels']
    if resize != [0, 0]:
        if len(resize) != 2 or not all(24 <= v <= MAX_RESIZE_SIDE for v in resize):
            raise ValueError(
                f'detector.resize must be [0, 0] or [height, width] with sides in '
                f'[24, {MAX_RESIZE_SIDE}], got {resize}'
            )
        if resize[0] * resize[1] > budget:
            raise ValueError(
                f'detector.resize {resize} exceeds detector.max_input_pixels ({budget})'
            )
    return ExtractorConfig(
        top_k=values['detector.top_k'],
        score_threshold=values['detector.score_threshold'],
        nms_radius=values['detector.nms_radius'],
        resize=tuple(resize) if resize != [0, 0] else None,
        channel_order='bgr',
        backend=values['model.backend'],
        precision=values['model.precision'],
        max_input_pixels=budget,
    )


def _tracker(values: dict[str, Any]) -> TrackerConfig:
    return TrackerConfig(
        ratio=values['matcher.ratio'] or None,
        max_distance=values['matcher.max_distance'] or None,
        ransac_method=values['tracker.ransac_method'],
        ransac_threshold_px=values['tracker.ransac_threshold_px'],
        min_keyframe_inliers=values['tracker.min_keyframe_inliers'],
        subpixel=values['tracker.subpixel'],
        align=values['tracker.align'],
        align_corners=values['tracker.align_corners'],
    )


def _hybrid(values: dict[str, Any]) -> HybridConfig:
    return HybridConfig(
        mode=values['tracker.mode'],
        detect_interval=values['tracker.detect_interval'],
        min_tracks=values['tracker.min_tracks'],
        reid_window_s=values['tracker.reid_window_s'],
        reid_max_lost=values['tracker.reid_max_lost'],
        keyframe_inlier_ratio=values['tracker.keyframe_inlier_ratio'],
        keyframe_shift_px=values['tracker.keyframe_shift_px'],
        recovery_scale=values['tracker.recovery_scale'],
        recovery_model=values['tracker.recovery_model'],
        max_tracks=values['tracker.max_tracks'],
        min_distance_px=values['tracker.min_distance_px'],
    )


def _tracks(values: dict[str, Any]) -> TrackConfig:
    return TrackConfig(
        max_tracks=values['tracks.max_count'],
        min_distance_px=values['tracks.min_distance_px'],
        max_descriptor_distance=values['tracks.max_descriptor_distance'],
        max_epipolar_px=values['tracks.max_epipolar_px'],
        min_verified=values['tracks.min_verified'],
    )
