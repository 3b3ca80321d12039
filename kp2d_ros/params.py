"""The node's parameters: the one table of names, defaults, ranges and descriptions, and its
mapping onto the kp2d_core pipeline configuration.

Defaults of the pipeline come from the kp2d_core dataclasses (:class:`PipelineConfig`);
node-only settings are defined here. Each parameter has one ROS type (that of its default)
and, for numbers, a range that the node declares (``ros2 param describe`` shows it, and ROS
refuses values outside it). ``config/kp2d.yaml`` is generated from this table
(``python -m kp2d_ros.params > config/kp2d.yaml``; a test checks it) and the replay tool reads
the same table, so node, file and replay cannot disagree. Importing this module needs no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Any

from kp2d_core.config import (
    MAX_NETWORK_PIXELS,
    MAX_NMS_RADIUS,
    MIN_NETWORK_PIXELS,
    ExtractorConfig,
)
from kp2d_core.tracking import TrackerConfig
from kp2d_core.tracks import TrackConfig

_EXTRACTOR = ExtractorConfig()
_TRACKER = TrackerConfig()
_TRACKS = TrackConfig()
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
    Param('model.weights', '', 'checkpoint path; empty = the bundled default weights', True),
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
    Param('tracker.subpixel', _TRACKER.subpixel, 'sub-pixel matches on KP2D descriptors'),
    Param(
        'tracks.max_count',
        _TRACKS.max_tracks,
        'live feature tracks at most; 0 = no tracking',
        low=0,
        high=100_000,
    ),
    Param(
        'tracks.min_distance_px',
        _TRACKS.min_distance_px,
        'no two tracks closer than this (px); 0 = off',
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
    Param('publish.keypoints', True, 'publish ~/keypoints'),
    Param('publish.homography', True, 'publish ~/homography'),
    Param('publish.odometry', True, 'publish ~/odometry (needs camera_info)'),
    Param('publish.tracks', True, 'publish ~/tracks (kp2d_msgs/FeatureTracks)'),
    Param(
        'publish.vins_features',
        False,
        'publish ~/feature_cloud, VINS-Fusion layout (needs camera_info)',
    ),
    Param('publish.tf', False, 'broadcast odom_frame -> pose_frame on /tf'),
    Param('publish.debug_image', True, 'publish ~/debug_image when it has subscribers'),
    Param('odom_frame', 'kp2d_odom', 'frame_id of ~/odometry and parent frame of the TF'),
    Param('pose_frame', 'kp2d_camera', 'child frame of ~/odometry and of the TF (a new frame)'),
    Param(
        'camera_info_max_age_s',
        1.0,
        'use a CameraInfo at most this far from the image stamp',
        low=0.001,
        high=3600.0,
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


def yaml_text() -> str:
    """``config/kp2d.yaml``: every parameter with its default, range and description."""
    lines = [
        '# Parameters of the kp2d node, generated by `python -m kp2d_ros.params` from the table',
        '# in kp2d_ros/params.py (do not edit by hand). `/**`: under any namespace and name.',
        '/**:',
        '  ros__parameters:',
    ]
    for p in PARAMETERS:
        bounds = p.describe_range()
        note = (f'; {bounds}' if bounds else '') + (' (read-only)' if p.read_only else '')
        lines.append(f'    {p.name}: {_yaml_value(p.default)}  # {p.description}{note}')
    return '\n'.join(lines) + '\n'


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    return repr(value)


def markdown_table() -> str:
    """The README's parameter table (``python -m kp2d_ros.params --markdown``)."""
    lines = ['| parameter | type | default | range | |', '|---|---|---|---|---|']
    for p in PARAMETERS:
        note = ' Read-only.' if p.read_only else ''
        lines.append(
            f'| `{p.name}` | {p.type_name} | `{_yaml_value(p.default)}` | {p.describe_range()} '
            f'| {p.description}.{note} |'
        )
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    import sys

    sys.stdout.write(markdown_table() if '--markdown' in sys.argv else yaml_text())
